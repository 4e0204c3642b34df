"""
The arrow of time, CPU, medium: a 4-layer, 128-wide BPE GPT (1.3M parameters) on the chitchat conversations as
plain text, the same 800 iterations of 16 x 128 tokens as config/arrow_small.py: does the forward/backward gap
move with size? (~3.5 minutes on one CPU core)
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=plain --out=data/chitchat_plain --tokenizer=data/chitchat
Train:   python train.py config/arrow_medium.py --direction=backward
"""

out_dir = 'out-arrow-medium'
dataset = 'chitchat_plain'
eval_interval = 200
eval_iters = 10
log_interval = 50

batch_size = 16
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 800
min_lr = 2e-4
warmup_iters = 50
