"""
The RL task's recipe (projects/backward/lineage.py --recipe=arith), phase sft: a small char GPT learns arithmetic word problems
(arith.py) as conversations, the loss on the worked solutions. From scratch it is the lineage's first phase; after
arith_base/arith_mid it fine-tunes. It stops while it still errs, so the rl phase has something to learn.
Prepare: python -m prepare.arith
Train:   python train.py config/arith_sft.py    (alone; any --direction)
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --direction=forward --name=arith-fw
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --direction=backward --name=arith-bw
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --direction=bidirectional --name=arith-bi
Measure: python -m projects.rl.eval --runs=experiments/arith-fw-rl,experiments/arith-bw-rl,experiments/arith-bi-rl
"""

out_dir = 'out-arith-sft'
dataset = 'arith'
eval_interval = 200
eval_iters = 20
log_interval = 50

batch_size = 32
block_size = 256  # a whole problem (question, solution, question) and more; windows start at a problem

n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 1000
min_lr = 2e-4
warmup_iters = 50
