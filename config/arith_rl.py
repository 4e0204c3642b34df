"""
The RL task's recipe, phase rl (CPU): GRPO-style RL from the sft parent (init_from, set by projects/backward/lineage.py), whose
architecture, tokenizer and direction it keeps. Each iteration samples 8 answers to each of 4 level-1/2 problems
(dataloader.Rollouts), rewards an answer 1 if its final line '#### N' is right, and takes a policy-gradient step with the
group-normalized rewards as advantages. val_pass1 is the greedy pass@1 on 200 test problems at each eval.
Prepare: python -m prepare.arith
Train:   python train.py config/arith_rl.py --init_from=out-arith-sft
         python -m projects.backward.lineage --recipe=arith --phases=sft,rl --name=arith-fw      (then: python -m projects.rl.eval --runs=experiments/arith-fw-rl)
"""

out_dir = 'out-arith-rl'
dataset = 'arith'
data_source = 'rollouts'
data_args = {'samples': 8, 'temperature': 1.0, 'max_new_tokens': 64, 'levels': [1, 2], 'kl': 0.0, 'eval_problems': 200}
eval_interval = 50
eval_iters = 10
log_interval = 10

batch_size = 32  # 4 problems x 8 samples
block_size = 256
dropout = 0.0  # the policy that samples is the one that learns

learning_rate = 1e-5  # the forward sft run (greedy pass@1 0.50): 1e-4 drove it to 0.07 in 250 iterations, 3e-5 rose
max_iters = 400       # to 0.60, then fell to 0.48 by 150; 1e-5 rose to 0.69 by 150 (Adam's steps are lr-sized, however noisy)
decay_lr = False
warmup_iters = 0
grad_clip = 1.0
