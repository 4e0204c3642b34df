"""
Lineage, phase 1 of 3: base. A 4-layer, 128-wide BPE GPT on the chitchat conversations as plain text (no role
tokens), the "pretraining" of a base -> mid -> sft lineage; projects/backward/lineage.py runs the three in order, in any
direction (the projects/backward/lineage.py lines below, as projects/backward/README.md runs them).
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=plain --out=data/chitchat_plain --tokenizer=data/chitchat
Train:   python train.py config/lineage_base.py    (alone, in any --direction)
         python -m projects.backward.lineage --phases=base,mid,sft --direction=forward --name=fw
         python -m projects.backward.lineage --phases=base,mid,sft --direction=backward --name=bw
         python -m projects.backward.lineage --phases=base,mid,sft --direction=bidirectional --name=bi
About 3 minutes on 2 CPU cores; see README (Backward LMs) for the losses it reaches.
"""

out_dir = 'out-lineage-base'
dataset = 'chitchat_plain'
eval_interval = 200
eval_iters = 20
log_interval = 50

batch_size = 16
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128

learning_rate = 2e-3
max_iters = 800
min_lr = 2e-4
warmup_iters = 50
