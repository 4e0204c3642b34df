"""
The RL phase at GPU scale: every level, 16 samples a problem, 16 problems a step, a KL leash to the SFT parent
available (data_args kl, off by default as in nanochat). Start it from a bigger sft run (the second Train line; to
run this file as its rl phase, cp config/arith_rl_gpu.py config/arith_rl.py first), or alone (the first):
Prepare: python -m prepare.arith
Train:   python train.py config/arith_rl_gpu.py --init_from=experiments/arith-gpu-sft
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --name=arith-gpu --n_layer=8 --n_head=8 --n_embd=512 --block_size=256
"""

out_dir = 'out-arith-rl-gpu'
dataset = 'arith'
data_source = 'rollouts'
data_args = {'samples': 16, 'temperature': 1.0, 'max_new_tokens': 96, 'levels': [1, 2, 3, 4], 'kl': 0.0, 'eval_problems': 400}
eval_interval = 100
eval_iters = 20
log_interval = 10

batch_size = 256  # 16 problems x 16 samples
block_size = 256
dropout = 0.0

learning_rate = 1e-5  # not chosen for this scale: sweep it on val first (projects/rl/experiment.py --lrs=...)
max_iters = 2000
decay_lr = False
warmup_iters = 0
