"""
TurnGPT, the full recipe: turn vectors (each token 32 numbers, mapped to the width and tied to the output head
through the same map), semantic init of 500+ listed words, user/assistant speaker embeddings, per-group learning
rates, and the source's 3-phase curriculum with its step counts, batch sizes and block sizes, on data mixes:
  Foundation   iters     0-3000, block  64, batch 6, lr 3e-3: single turns as plain text (chitchat_turns)
  Conversation iters 3000-8000, block 128, batch 4, lr 2e-3: whole conversations, with 30% foundation replay
  Refinement   iters 8000-12000, block 256, batch 3, lr 1e-3: the most engaged tenth of the conversations
The lrs keep the source's 3:2:1 steps, scaled up 10x for a 4-layer, 128-wide model. The schedule is warmup-stable-
decay: flat within each phase, then one linear cooldown to min_lr over the last 20% of the run, inside Refinement, so
the best data gets the annealing (a cosine per phase would spend each phase's data at a decayed lr).
Evaluation is always on whole held-out conversations (dataset='chitchat'), so val loss compares across phases.
At its full 12,000 iterations (6.78M tokens) it takes ~7 minutes on 2 cores; what it reaches there is not measured
on a committed file. The A/B (projects/turngpt/README.md) trains it and config/turngpt_simple.py at 0.08 of their
iterations, 3 seeds each, on one core: the full budget for 3 seeds and several arms is not affordable there.
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=turns --out=data/chitchat_turns --tokenizer=data/chitchat
         python -m prepare.chitchat --engaged=0.1 --out=data/chitchat_engaged --tokenizer=data/chitchat
Train:   python train.py config/turngpt.py
Chat:    python chat.py --out_dir=out-turngpt
Measure: python -m projects.turngpt.eval --out_dir=out-turngpt   (conversation metrics, analogies, dashboard PNG)
"""

out_dir = 'out-turngpt'
eval_interval = 500
eval_iters = 20
log_interval = 100
keep_best = True
sample_prompts = ['hi, how are you?', "what's your favorite color?", 'what do you do for fun?']

dataset = 'chitchat'  # evaluation: whole held-out conversations
data_source = 'speakers'  # batches carry each token's speaker
data_args = {'semantic_init': True, 'eval_analogies': True}  # listed words start by category; analogies at each eval

n_layer = 4
n_head = 4
n_embd = 128
turn_dim = 32
n_speakers = 2
# per-group lrs (the source's lower lr for the turn table, which here gets gradients): 0.5 measured slightly worse
# than 1.0 (val 6.33 vs 6.26 after 400 iterations of turngpt_simple, under ALBERT's init), so every group keeps 1
lr_scales = {'transformer.turn': 1.0, 'transformer.turn_map': 1.0, 'transformer.wse': 1.0}

max_iters = 12000
lr_schedule = 'wsd'
cooldown_frac = 0.2
warmup_iters = 100
learning_rate = 3e-3
min_lr = 1e-4
phases = {
    0: {'block_size': 64, 'batch_size': 6, 'learning_rate': 3e-3, 'data_mix': {'chitchat_turns': 1.0},
        # the source's phase-1 exit, perplexity < 50 on its text, here measured on held-out conversations
        'advance_when': {'val_ppl': 50.0}},
    3000: {'block_size': 128, 'batch_size': 4, 'learning_rate': 2e-3, 'data_mix': {'chitchat': 0.7, 'chitchat_turns': 0.3},
           'advance_when': {}},
    8000: {'block_size': 256, 'batch_size': 3, 'learning_rate': 1e-3, 'data_mix': {'chitchat_engaged': 1.0}},
}
