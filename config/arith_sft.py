"""
The RL task's recipe (projects/backward/lineage.py --recipe=arith), phase sft: a small char GPT learns arithmetic word problems
(arith.py) as conversations, the loss on the worked solutions. From scratch it is the lineage's first phase; after
arith_base/arith_mid it fine-tunes. It stops while it still errs, so the rl phase has something to learn.
Shrunk for issue 22 (3 seeds x 3 directions, each followed by RL and a continued-SFT control, on ONE CPU core in
about an hour): 2 layers, 64 wide (0.1M parameters), 16 x 160-token windows, 800 iterations (~100 s on one core).
val.bin is the VAL problems (prepare.arith): the printed val loss never reads test.
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
eval_iters = 10
log_interval = 50

batch_size = 16
block_size = 160  # a whole question and solution (level 4: ~100 + ~45 characters); windows start at a problem

n_layer = 2
n_head = 2
n_embd = 64

learning_rate = 2e-3
max_iters = 800
min_lr = 2e-4
warmup_iters = 50
