"""
Prepare one plain-text file (or URL) as a dataset, nanoGPT style, split by position (the text is one document):
train is the start, test the next test_frac, val the last val_frac. val stays nanoGPT's last tenth, so its val
losses compare with nanoGPT's; test is the stretch just before it, which no run trains or selects on. The classic,
offline:
    python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char
    -> vocab_size 67 (nanoGPT's 65 characters + <|forward|> <|backward|>), train has 948,084 tokens, test 55,770,
       val 111,540 (nanoGPT's val)
Online, INPUT may be https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
"""
import argparse
import os
import time

from prepare.common import add_overwrite, check_out, read_text, reuse_tokenizer, write_dataset
from tokenizer import char_tokenizer, gpt2_tokenizer, train_bpe

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('input', help="a text file or an http(s) URL")
parser.add_argument('--tokenizer', default='char', help="char | bpe | gpt2 | a prepared data dir whose tokenizer to reuse")
parser.add_argument('--vocab_size', type=int, default=4096, help="bpe only; counts the special tokens")
parser.add_argument('--val_frac', type=float, default=0.1, help="the last share of the text: every choice (best.pt, early stopping)")
parser.add_argument('--test_frac', type=float, default=0.05, help="the share before val, for reported numbers only (test.bin)")
parser.add_argument('--out', default=None, help="default: data/<input file stem>_<tokenizer>")
add_overwrite(parser)
args = parser.parse_args()
if not (0 < args.val_frac < 1 and 0 <= args.test_frac < 1 and args.val_frac + args.test_frac < 1):
    raise SystemExit(f"--val_frac (> 0) and --test_frac (>= 0) must leave some train text, got {args.val_frac} and {args.test_frac}")
stem = os.path.splitext(os.path.basename(args.input.rstrip('/')))[0]
reused = reuse_tokenizer(args.tokenizer) if args.tokenizer not in ('char', 'bpe', 'gpt2') else None
out = args.out or os.path.join('data', f"{stem}_{os.path.basename(args.tokenizer.rstrip('/')) if reused else args.tokenizer}")
check_out(out, args.overwrite)

t0 = time.time()
text = read_text(args.input)
n = len(text)
cut_test, cut_val = int(n * (1 - args.val_frac - args.test_frac)), int(n * (1 - args.val_frac))
parts = {'train': text[:cut_test], 'val': text[cut_val:], 'test': text[cut_test:cut_val]}
empty = [s for s in ('train', 'val') if not parts[s]] + (['test'] if args.test_frac and not parts['test'] else [])
if empty:
    raise SystemExit(f"{args.input}: {n:,} characters are too few to split: --val_frac={args.val_frac} and "
                     f"--test_frac={args.test_frac} leave {empty[0]} empty; use more text")
if not args.test_frac:
    del parts['test']
train = parts['train']
print(f"{n:,} characters: " + ' / '.join(f"{len(t):,} {s}" for s, t in parts.items()))

if args.tokenizer == 'char':
    # vocab from the whole text, like nanoGPT, so val has no unknown characters; after the characters, the two
    # direction tokens a bidirectional model needs (backward LMs), never produced by encoding text
    tok = char_tokenizer(text, specials=('<|forward|>', '<|backward|>'))
elif args.tokenizer == 'bpe':
    tok = train_bpe([train], args.vocab_size)  # train part only: the val text stays unseen
elif args.tokenizer == 'gpt2':
    tok = gpt2_tokenizer()
else:
    tok = reused

# the text is one document: bos marks its start (char has no bos); val and test continue it, so no bos there
bos = [tok.bos] if tok.bos is not None else []
try:
    splits = {s: [(bos if s == 'train' else []) + tok.encode(t)] for s, t in parts.items()}
except ValueError as e:  # a reused char tokenizer meets a character it lacks
    raise SystemExit(f"{args.input}: {e}; prepare it with its own tokenizer (--tokenizer=char or bpe)") from None
write_dataset(out, tok, splits, source=args.input, n_chars=n)
print(f"done in {time.time() - t0:.1f}s")
