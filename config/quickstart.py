"""
The quickstart: a small BPE GPT (4 layers, 4 heads, 256 wide, 4.8M parameters) on the chitchat conversations,
then chat with it. About 5 minutes on 2 CPU cores (well under a minute on a GPU); it reaches val loss ~3.9.
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
n_embd = 256
dropout = 0.0

learning_rate = 2e-3
max_iters = 2500
lr_decay_iters = 2500
min_lr = 2e-4
warmup_iters = 100
