"""
TurnGPT, the source's "simple" recipe: the same model (turn vectors, semantic init, speakers, per-group lrs) in
one phase on whole conversations, at the same token budget as config/turngpt.py's curriculum (6.78M tokens:
6,625 iterations of 4 x 256), with the same warmup-stable-decay schedule at its middle lr.
About 6 minutes on 2 CPU cores at full budget. The README's TurnGPT A/B compares it with the curriculum (and dense
embeddings with its turn vectors) at 0.08 of both recipes' iterations, 3 seeds each: the full budget isn't affordable
on one core.
Prepare: python -m prepare.chitchat
Train:   python train.py config/turngpt_simple.py
"""

import os
exec(open(os.path.join(os.path.dirname(__file__), 'turngpt.py')).read())  # the full recipe's model; its curriculum replaced below

out_dir = 'out-turngpt-simple'
phases = {}
data_mix = {}
advance_when = {}
block_size = 256
batch_size = 4
learning_rate = 2e-3
max_iters = 6625  # 3000 x 6 x 64 + 5000 x 4 x 128 + 4000 x 3 x 256 = 6,784,000 tokens, / 1,024 per iteration
