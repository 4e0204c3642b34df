"""
The RL task's recipe, phase mid (optional): the problems as conversations with chat tokens, the loss on every
token; continues a base run.
Prepare: python -m prepare.arith
         python -m prepare.arith --format=chat --out=data/arith_chat --tokenizer=data/arith
Train:   python train.py config/arith_mid.py --init_from=out-arith-base
"""

out_dir = 'out-arith-mid'
dataset = 'arith_chat'
eval_interval = 200
eval_iters = 20
log_interval = 50

batch_size = 32
block_size = 256

learning_rate = 1e-3
max_iters = 500
min_lr = 1e-4
warmup_iters = 20
