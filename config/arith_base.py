"""
The RL task's recipe, phase base (optional): the problems as plain text (no chat tokens), for the whole lineage
(the second Train line). The measured runs skip base and mid: sft from scratch learns the format as well.
Prepare: python -m prepare.arith
         python -m prepare.arith --format=plain --out=data/arith_plain --tokenizer=data/arith
Train:   python train.py config/arith_base.py
         python -m projects.backward.lineage --recipe=arith --phases=base,mid,sft,rl --direction=backward --name=arith-bw4
"""

out_dir = 'out-arith-base'
dataset = 'arith_plain'
eval_interval = 200
eval_iters = 20
log_interval = 50

batch_size = 32
block_size = 256

n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 1000
min_lr = 2e-4
warmup_iters = 50
