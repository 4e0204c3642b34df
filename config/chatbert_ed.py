"""
ChatBERT-ED: a bidirectional encoder over the context (96 tokens) and a causal decoder that writes the response
(up to 32 tokens), attending to the encoder through cross-attention; 2 + 2 layers, 128 wide, so that its parameter
count is near the GPT baseline's (config/chatbert_gpt.py). Val loss is the response's NLL per token, its end token
included: the GPT baseline's response perplexity measures the same thing. This config's schedule is ~15 minutes on
one CPU thread (4,800 iterations).
The measured runs (python -m projects.chatbert.experiment; projects/chatbert/chatbert_runs.json) train 90 s each
on one shared CPU thread, 1/10 of this config's 15-minute schedule, shrunk to afford 3 seeds per kind: max_iters from a
back-to-back calibration of ms/iter (673 ms: 134 iterations), warmup and decay scaled to it.
Best val loss 6.01 ± 0.03 over 3 seeds; on the test pairs see projects/chatbert/README.md.
Prepare: python -m prepare.chitchat
         python -m prepare.chatbert --tokenizer=data/chitchat
Train:   python train.py config/chatbert_ed.py
Chat:    python chat.py --out_dir=out-chatbert-ed
"""

out_dir = 'out-chatbert-ed'
eval_interval = 500
eval_iters = 20
log_interval = 50
keep_best = True

model_kind = 'chatbert_ed'
dataset = 'chatbert'
data_source = 'pairs'
batch_size = 32
block_size = 128  # 96 context + 32 response tokens

causal = False  # the encoder's; the decoder is causal
n_layer = 2  # encoder blocks, and as many decoder blocks
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 4800
min_lr = 2e-4
warmup_iters = 200
