"""
Lineage, phase 3 of 3: sft. Continues a mid run on the same conversations with the loss on the assistant's
turns only (data/chitchat_sft's span mask: its replies and the token that ends each), as chat.py uses it.
About 1 minute on 2 CPU cores.
Prepare: python -m prepare.chitchat
         python -m prepare.chitchat --format=sft --out=data/chitchat_sft --tokenizer=data/chitchat
Train:   python train.py config/lineage_sft.py --init_from=out-lineage-mid    (alone; config/lineage_base.py: the lineage)
"""

out_dir = 'out-lineage-sft'
dataset = 'chitchat_sft'
eval_interval = 100
eval_iters = 20
log_interval = 50

batch_size = 16
block_size = 128

learning_rate = 5e-4
max_iters = 300
min_lr = 5e-5
warmup_iters = 10
