"""
vibejam's rewrite mode: the style model fine-tuned on (draft, rewrite) pairs, where the draft is the person's own
text with its style taken out (casual words made neutral, contractions expanded, case and punctuation normalized,
a few words dropped or swapped: prepare/common.py corrupt) and the rewrite is the text as they wrote it. The loss
is on the rewrite alone (and its end, the next <|bos|>). Pairs come from the person's train documents, val pairs
(best.pt) from their val documents; test documents make no pair (splits.py).
The char run fine-tunes out-vibejam-char (config/vibejam_char.py); the BPE run (the second Train line) out-vibejam-bpe.
Prepare: python -m prepare.vibejam --out=data/vibejam_char
         python -m prepare.vibejam --pairs=data/vibejam_char --out=data/vibejam_rewrite_char
         python -m prepare.vibejam --tokenizer=bpe --out=data/vibejam_bpe
         python -m prepare.vibejam --pairs=data/vibejam_bpe --block_size=128 --out=data/vibejam_rewrite_bpe
Train:   python train.py config/vibejam_rewrite.py
         python train.py config/vibejam_rewrite.py --init_from=out-vibejam-bpe --dataset=vibejam_rewrite_bpe --out_dir=out-vibejam-rewrite-bpe --block_size=128
The three people x three seeds that projects/vibejam/README.md measures (p = 1, 2, 3 with the style data and runs of
config/vibejam_bpe.py; --sender= as there; seeds 1337, 1338, 1339):
Prepare: python -m prepare.vibejam --pairs=data/vibejam_bpe_p1 --block_size=128 --out=data/vibejam_rewrite_bpe_p1
Train:   python train.py config/vibejam_rewrite.py --init_from=out-vibejam-bpe-p1 --dataset=vibejam_rewrite_bpe_p1 --out_dir=out-vibejam-rewrite-bpe-p1-1337 --block_size=128 --seed=1337
Shrunk for issue 22 (one CPU core, 3 people x 3 seeds): 400 iterations of batch 8 (the earlier single-person run
took 4,000 of batch 16), BPE only (about 3x faster than char). The seed seeds the fine-tune (batches, dropout); each
person has one style model (seed 1337). best.pt is the lowest val loss on val pairs, so the iteration a run reports
is chosen on val; the val losses are in projects/vibejam/vibejam_results.md's training table (from
the runs' logs), the test numbers above it.
"""

out_dir = 'out-vibejam-rewrite-char'
init_from = 'out-vibejam-char'  # the style model: its architecture, tokenizer and direction come with it
dataset = 'vibejam_rewrite_char'
eval_interval = 50
eval_iters = 20
log_interval = 50
keep_best = True

batch_size = 8
block_size = 256  # a pair: Draft, its up to 100 characters, Rewrite, the same again; windows start at a pair (BPE: 128)
dropout = 0.1

learning_rate = 2e-3  # the earlier single-person run's; not tuned here (no budget for a sweep)
max_iters = 400  # the one-core budget's (docstring); best.pt picks the iteration on val
min_lr = 2e-4
warmup_iters = 20
