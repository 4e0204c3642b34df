"""
The quickstart: a small BPE GPT (4 layers, 4 heads, 128 wide, 1.3M parameters) on the chitchat conversations,
then chat with it. About 5 minutes on 2 CPU cores (seconds on a GPU); it reaches val loss ~4.3 and short,
casual replies ("Hi! How are you?"). A wider model (n_embd=192, 2.6M) in the same 5 minutes sees fewer
tokens and ends worse (val 4.39 at 1,000 iterations, against 4.29 for this one at 1,700).
Prepare: python -m prepare.chitchat
Train:   python train.py config/quickstart.py
Chat:    python chat.py --out_dir=out-quickstart
"""

out_dir = 'out-quickstart'
eval_interval = 500
eval_iters = 20
log_interval = 50

dataset = 'chitchat'
batch_size = 16
block_size = 128  # a few turns of context

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

learning_rate = 2e-3
max_iters = 1500
min_lr = 2e-4
warmup_iters = 100
