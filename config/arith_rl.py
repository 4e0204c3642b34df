"""
The RL task's recipe, phase rl (CPU): GRPO-style RL from the sft parent (init_from, set by projects/backward/lineage.py), whose
architecture, tokenizer and direction it keeps. Each iteration samples 8 answers to each of 4 level-1/2 problems
(dataloader.Rollouts), rewards an answer 1 if its final line '#### N' is right, and takes a policy-gradient step with the
group-normalized rewards as advantages. val_pass1 is the greedy pass@1 on 200 VAL problems (levels 1-2) at each eval:
every setting here is chosen on val, never on the test problems (projects/rl/eval.py reads those once).
Shrunk for issue 22 (9 SFT parents, each followed by RL and a continued-SFT control, on one CPU core): 150
iterations, evals at 0, 75 and 150 (~90 s a run on one core). samples and temperature are the earlier runs' (8, 1.0),
not swept: only the learning rate fit the budget (projects/rl/experiment.py's sweep, projects/rl/rl_sweep.json).
Prepare: python -m prepare.arith
Train:   python train.py config/arith_rl.py --init_from=out-arith-sft
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --name=arith-fw      (then: python -m projects.rl.eval --runs=experiments/arith-fw-rl)
Every measured run (3 seeds x 3 directions, the lr sweep, the controls): python -m projects.rl.experiment
"""

out_dir = 'out-arith-rl'
dataset = 'arith'
data_source = 'rollouts'
data_args = {'samples': 8, 'temperature': 1.0, 'max_new_tokens': 48, 'levels': [1, 2], 'kl': 0.0, 'eval_problems': 200}
eval_interval = 75
eval_iters = 5
log_interval = 10

batch_size = 32  # 4 problems x 8 samples
block_size = 160  # as config/arith_sft.py's: a prompt of up to 112 characters and a 48-character answer
dropout = 0.0  # the policy that samples is the one that learns

# chosen on VAL per direction (projects/rl/rl_sweep.json, from the seed-1 parents, 1e-5 vs 1e-4): forward 1e-5
# (val_pass1 0.065 vs 0.050), bidirectional 1e-5 (0.102 vs 0.078), backward 1e-4 (0.100 vs 0.120; projects.rl.experiment
# passes it as --learning_rate). One val problem is 0.005: none of these is a clear gain over the parent.
learning_rate = 1e-5
max_iters = 150
decay_lr = False
warmup_iters = 0
grad_clip = 1.0
