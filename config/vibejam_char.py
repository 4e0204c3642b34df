"""
vibejam's style model, characters: a small GPT of one person's casual writing (projects/vibejam/README.md). The built-in
corpus is chitchat's most prolific sender (1.1 MB); put your own .txt/.md files in data/raw/ to make it yours.
Prepare: python -m prepare.vibejam --out=data/vibejam_char
Train:   python train.py config/vibejam_char.py
Sample:  python sample.py --out_dir=out-vibejam-char --start="hey"
Not measured in issue 22: the one-core budget went to BPE (about 3x faster a character), three people and three
seeds (config/vibejam_bpe.py); the earlier char figures had no committed file behind them and are removed.
"""

out_dir = 'out-vibejam-char'
dataset = 'vibejam_char'
eval_interval = 250
eval_iters = 50
log_interval = 50
keep_best = True

batch_size = 8
block_size = 256  # a rewrite pair (draft and rewrite of up to 100 characters each) fits in one block
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1

learning_rate = 2e-3
max_iters = 3000
min_lr = 2e-4
warmup_iters = 100
