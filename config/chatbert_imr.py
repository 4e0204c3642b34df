"""
ChatBERT-IMR: iterative masked refinement (masked diffusion, MDLM/LLaDA) on (context, response) pairs. A 4-layer,
128-wide bidirectional transformer reads [96 context tokens; 32 response tokens]; training masks each response token
with probability t ~ U(0.001, 1) and weights the loss on masked tokens by 1/t, so val loss is an upper bound on the
response NLL per token (its end token and padding included). This config's schedule is ~15 minutes on one CPU
thread (4,000 iterations).
The measured runs (python -m projects.chatbert.experiment; projects/chatbert/chatbert_runs.json) train 90 s each
on one shared CPU thread, 1/10 of this config's 15-minute schedule, shrunk to afford 3 seeds per kind: max_iters from a
back-to-back calibration of ms/iter (874 ms: 103 iterations), warmup and decay scaled to it.
Best val loss 4.18 ± 0.63 over 3 seeds; on the test pairs see projects/chatbert/README.md.
Prepare: python -m prepare.chitchat
         python -m prepare.chatbert --tokenizer=data/chitchat
Train:   python train.py config/chatbert_imr.py
Chat:    python chat.py --out_dir=out-chatbert-imr   (/steps N: refinement steps; /template I think ___ is ___: FIB)
Measure: python -m projects.chatbert.eval   (the results table of every approach)
"""

out_dir = 'out-chatbert-imr'
eval_interval = 500
eval_iters = 20
log_interval = 50
keep_best = True

model_kind = 'chatbert_imr'
dataset = 'chatbert'
data_source = 'masked_pairs'
batch_size = 16
block_size = 128  # 96 context + 32 response tokens

causal = False
n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 4000
min_lr = 2e-4
warmup_iters = 200
