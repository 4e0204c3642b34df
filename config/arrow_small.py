"""
The arrow of time, CPU, small: a 2-layer, 64-wide BPE GPT (0.3M parameters) on the chitchat conversations as
plain text, 800 iterations of 16 x 128 tokens (1.6M tokens). projects/backward/arrow.py trains it forward, backward and
bidirectional with 3 seeds (config/arrow_medium.py too, with --sizes=small,medium) and compares them on the same held-out tokens.
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=plain --out=data/chitchat_plain --tokenizer=data/chitchat
Train:   python train.py config/arrow_small.py --direction=backward   (~1.5 minutes on one CPU core)
See README (Backward LMs) for what it reaches.
"""

out_dir = 'out-arrow-small'
dataset = 'chitchat_plain'
eval_interval = 200
eval_iters = 10
log_interval = 50

batch_size = 16
block_size = 128
n_layer = 2
n_head = 2
n_embd = 64

learning_rate = 3e-3
max_iters = 800
min_lr = 3e-4
warmup_iters = 50
