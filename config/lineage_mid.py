"""
Lineage, phase 2 of 3: mid. Continues a base run (init_from, set by projects/backward/lineage.py) on the same conversations
rendered with role tokens (<|user|>, <|assistant|>), so the model learns the chat format; the architecture and
direction are the parent's. About 1.5 minutes on 2 CPU cores.
Prepare: python -m prepare.chitchat
Train:   python train.py config/lineage_mid.py --init_from=out-lineage-base    (alone; config/lineage_base.py: the lineage)
"""

out_dir = 'out-lineage-mid'
dataset = 'chitchat'
eval_interval = 100
eval_iters = 20
log_interval = 50

batch_size = 16
block_size = 128

learning_rate = 1e-3
max_iters = 400
min_lr = 1e-4
warmup_iters = 20
