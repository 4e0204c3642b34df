"""
vibejam's style model, BPE (2,048 tokens): a small GPT of one person's casual writing (projects/vibejam/README.md). The built-in
corpus is chitchat's most prolific sender (1.1 MB); put your own .txt/.md files in data/raw/ to make it yours.
Prepare: python -m prepare.vibejam --tokenizer=bpe --out=data/vibejam_bpe
Train:   python train.py config/vibejam_bpe.py
Sample:  python sample.py --out_dir=out-vibejam-bpe --start="hey"
Measured (one CPU thread, 2,000 iterations, ~4 minutes): val loss 4.298 per BPE token, about 1.28 nats a character
(3.37 characters a token), on the built-in corpus; the source reports char-level 2.32-2.45 on its own.
"""

out_dir = 'out-vibejam-bpe'
dataset = 'vibejam_bpe'
eval_interval = 250
eval_iters = 50
log_interval = 50
keep_best = True

batch_size = 8
block_size = 128  # a rewrite pair (draft and rewrite of up to 100 characters each) fits in one block
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.2

learning_rate = 2e-3
max_iters = 2000
min_lr = 2e-4
warmup_iters = 100
