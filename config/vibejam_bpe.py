"""
vibejam's style model, BPE (2,048 tokens): a small GPT of one person's casual writing (projects/vibejam/README.md). The built-in
corpus is chitchat's most prolific sender (1.1 MB); --sender= picks another; put your own .txt/.md files in data/raw/
to make it yours.
Prepare: python -m prepare.vibejam --tokenizer=bpe --out=data/vibejam_bpe
Train:   python train.py config/vibejam_bpe.py
Sample:  python sample.py --out_dir=out-vibejam-bpe --start="hey"
The three people of projects/vibejam/README.md (p = 1, 2, 3: prepare.common.SENDERS[p - 1]):
Prepare: python -m prepare.vibejam --tokenizer=bpe --out=data/vibejam_bpe_p1
         python -m prepare.vibejam --tokenizer=bpe --sender=549cc1d1-270e-4a53-b561-133a8d0086b4 --out=data/vibejam_bpe_p2
         python -m prepare.vibejam --tokenizer=bpe --sender=720840be-e522-47ba-9e9f-143f66372673 --out=data/vibejam_bpe_p3
Train:   python train.py config/vibejam_bpe.py --dataset=vibejam_bpe_p1 --out_dir=out-vibejam-bpe-p1
         python train.py config/vibejam_bpe.py --dataset=vibejam_bpe_p2 --out_dir=out-vibejam-bpe-p2
         python train.py config/vibejam_bpe.py --dataset=vibejam_bpe_p3 --out_dir=out-vibejam-bpe-p3
Shrunk for issue 22 (one CPU core for three people, each a style model and three rewrite seeds): 300 iterations of
batch 8 (the earlier single-person run took 2,000), one seed (1337) per person: the style model is only the rewrite
model's starting point here. best.pt is the lowest val loss; the val losses each run reaches, and that they are
still falling at 300, are in projects/vibejam/vibejam_results.md's training table,
written from the runs' logs.
"""

out_dir = 'out-vibejam-bpe'
dataset = 'vibejam_bpe'
eval_interval = 50
eval_iters = 20
log_interval = 50
keep_best = True

batch_size = 8
block_size = 128  # a rewrite pair (draft and rewrite of up to 100 characters each) fits in one block
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.2

learning_rate = 2e-3
max_iters = 300  # the one-core budget's (docstring); val loss still falling
min_lr = 2e-4
warmup_iters = 30
