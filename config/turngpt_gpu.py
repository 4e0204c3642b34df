"""
TurnGPT at the source's own scale, for a GPU: its step counts, batch sizes, block sizes and learning rates
(3e-4, 2e-4, 1e-4), its width H=256 and its E=8 turn vectors, on the same three-phase data mix as
config/turngpt.py, with dropout for the longer run. Untested here (no GPU in this project's sessions); on CPU
it would take hours. Online users can point a phase at any corpus with the same tokenizer, e.g.
    python -m prepare.hf roneneldan/TinyStories --split='train[:100000]' --tokenizer=data/chitchat
and set phases[0]['data_mix'] = {'TinyStories': 0.6, 'chitchat_turns': 0.4}.
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=turns --out=data/chitchat_turns --tokenizer=data/chitchat
         python -m prepare.chitchat --engaged=0.1 --out=data/chitchat_engaged --tokenizer=data/chitchat
Train:   python train.py config/turngpt_gpu.py
"""

import os
exec(open(os.path.join(os.path.dirname(__file__), 'turngpt.py')).read())  # the recipe; sizes and lrs below

out_dir = 'out-turngpt-gpu'
n_layer = 8
n_head = 8
n_embd = 256
turn_dim = 8
dropout = 0.1
learning_rate = 3e-4
min_lr = 3e-5
for _start, _lr in zip(sorted(phases), (3e-4, 2e-4, 1e-4)):
    phases[_start]['learning_rate'] = _lr
