"""
vibejam's rewrite mode: the style model fine-tuned on (draft, rewrite) pairs, where the draft is the person's own
text with its style taken out (casual words made neutral, contractions expanded, case and punctuation normalized,
a few words dropped or swapped: prepare/vibejam.py corrupt) and the rewrite is the text as they wrote it. The loss
is on the rewrite alone (and its end, the next <|bos|>).
The char run fine-tunes out-vibejam-char (config/vibejam_char.py); the BPE run (the second Train line) out-vibejam-bpe.
Prepare: python -m prepare.vibejam --out=data/vibejam_char
         python -m prepare.vibejam --pairs=data/vibejam_char --out=data/vibejam_rewrite_char
         python -m prepare.vibejam --tokenizer=bpe --out=data/vibejam_bpe
         python -m prepare.vibejam --pairs=data/vibejam_bpe --block_size=128 --out=data/vibejam_rewrite_bpe
Train:   python train.py config/vibejam_rewrite.py
         python train.py config/vibejam_rewrite.py --init_from=out-vibejam-bpe --dataset=vibejam_rewrite_bpe --out_dir=out-vibejam-rewrite-bpe --block_size=128
Measured (one CPU thread each; seeds 1337 and 1338): the rewrite tokens' val loss falls from 1.385 to 0.229 and
0.237 nats a character (char, ~30 min), and from 4.45 to 0.836 and 0.822 a token (BPE, ~14 min). At 1,500
iterations (0.288/0.303 and 0.977/0.946) the rewrites kept less of the content than the drafts themselves did;
python -m projects.vibejam.eval measures it. Greedy, the char and BPE runs (1337) both turn "Yes, I am going to the store. Do you want anything? I do
not know what to get." into "Yeah, I am going to the store. Do you want anything? I don't know what to get".
"""

out_dir = 'out-vibejam-rewrite-char'
init_from = 'out-vibejam-char'  # the style model: its architecture, tokenizer and direction come with it
dataset = 'vibejam_rewrite_char'
eval_interval = 100
eval_iters = 50
log_interval = 25
keep_best = True

batch_size = 16
block_size = 256  # a pair: Draft, its up to 100 characters, Rewrite, the same again; windows start at a pair
dropout = 0.1

learning_rate = 2e-3  # 5e-4 barely moved in 800 iterations (BPE val 4.355 -> 4.125); 2e-3 learns to copy and restyle
max_iters = 4000  # 1,500 already copies and restyles, but loses content (chrF below the draft's): projects/vibejam/eval.py
min_lr = 2e-4
warmup_iters = 50
