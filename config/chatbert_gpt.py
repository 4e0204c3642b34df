"""
ChatBERT's autoregressive baseline: the core's GPT (4 layers, 128 wide, as the ChatBERT models) on the same
chitchat conversations and tokenizer. This config's schedule is ~15 minutes on one CPU thread (4,500 iterations).
It learns every turn of whole conversations left to right; projects/chatbert/eval.py scores it on the same held-out test pairs.
The measured runs (python -m projects.chatbert.experiment; projects/chatbert/chatbert_runs.json) train 90 s each
on one shared CPU thread, 1/10 of this config's 15-minute schedule, shrunk to afford 3 seeds per kind: max_iters from a
back-to-back calibration of ms/iter (811 ms: 111 iterations), warmup and decay scaled to it.
Best val loss (whole conversations) 5.77 ± 0.06 over 3 seeds; on the test pairs see projects/chatbert/README.md.
Prepare: python -m prepare.chitchat
Train:   python train.py config/chatbert_gpt.py
"""

out_dir = 'out-chatbert-gpt'
eval_interval = 500
eval_iters = 20
log_interval = 50
keep_best = True

dataset = 'chitchat'
batch_size = 16
block_size = 128  # the ChatBERT models' context + response

n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 4500
min_lr = 2e-4
warmup_iters = 200
