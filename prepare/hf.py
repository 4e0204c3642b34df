"""
Prepare any Hugging Face dataset's text field (needs the internet), e.g.
    python -m prepare.hf roneneldan/TinyStories --split='train[:100000]'
    python -m prepare.hf HuggingFaceFW/fineweb-edu --config=sample-10BT --split='train[:1%]' --tokenizer=gpt2
--split takes the datasets slicing syntax, so you can prepare a slice of a big dataset. Documents are split
into train/val/test by splits.split_of, the md5 of their text (deterministic; exact duplicates land on the same side), and each
document starts with bos. Offline, the default corpus is `python -m prepare.chitchat`.
"""
import argparse
import time

import numpy as np
from tqdm import tqdm

from prepare.common import add_overwrite, check_out, dtype_for, hub_unreachable, reuse_tokenizer, write_dataset
from splits import SPLITS, split_of
from tokenizer import gpt2_tokenizer, train_bpe

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('name', help="a dataset on the Hugging Face hub, e.g. roneneldan/TinyStories")
parser.add_argument('--config', default=None, help="the dataset's config (subset), if it has several")
parser.add_argument('--split', default='train', help="e.g. train, or a slice: 'train[:100000]'")
parser.add_argument('--field', default='text', help="the column holding the documents' text")
parser.add_argument('--tokenizer', default='bpe', help="bpe (train one) | gpt2 | a prepared data dir whose tokenizer "
                    "to reuse, e.g. data/chitchat (so the dataset can join its curriculum mix)")
parser.add_argument('--vocab_size', type=int, default=4096, help="bpe only; counts the special tokens")
parser.add_argument('--val_frac', type=float, default=0.01, help="the share of documents for every choice (best.pt, early stopping)")
parser.add_argument('--test_frac', type=float, default=0.01, help="the share held out for reported numbers only (test.bin)")
parser.add_argument('--out', default=None, help="default: data/<NAME without its owner>")
add_overwrite(parser)
args = parser.parse_args()
out = args.out or f"data/{args.name.rstrip('/').split('/')[-1]}"
check_out(out, args.overwrite)
reused = reuse_tokenizer(args.tokenizer) if args.tokenizer not in ('bpe', 'gpt2') else None  # checked before downloading

try:
    import datasets  # imported here: it's optional, and only this script needs it
except ImportError:
    raise SystemExit("prepare.hf needs the datasets library: pip install datasets") from None

if hub_unreachable():
    raise SystemExit(f"{hub_unreachable()}; offline, the default corpus is `python -m prepare.chitchat`")
t0 = time.time()
try:
    ds = datasets.load_dataset(args.name, args.config, split=args.split)
except (ConnectionError, TimeoutError) as e:  # what datasets raises offline
    raise SystemExit(f"the Hugging Face dataset hub is unreachable ({e}); "
                     f"offline, the default corpus is `python -m prepare.chitchat`") from None
except Exception as e:  # a wrong name, config or split, or a network failure datasets didn't recognize as such
    msg = (str(e).strip().splitlines() or [''])[0][:300]
    raise SystemExit(f"could not load {args.name} ({type(e).__name__}: {msg}); "
                     f"if the hub is unreachable, the offline default is `python -m prepare.chitchat`") from None
if args.field not in ds.column_names:
    raise SystemExit(f"{args.name} has no field {args.field!r}; pass --field, one of {ds.column_names}")
docs = [d for d in ds[args.field] if d]  # the whole column as a list of str; skip empty documents
parts = {s: [] for s in SPLITS}
for d in docs:
    parts[split_of(d, args.val_frac, args.test_frac)].append(d)
train_docs = parts['train']
print(f"{len(docs):,} documents: " + ' / '.join(f"{len(parts[s]):,} {s}" for s in SPLITS) + f", loaded in {time.time() - t0:.1f}s")

if args.tokenizer == 'bpe':
    t1 = time.time()
    tok = train_bpe(train_docs, args.vocab_size)  # train documents only: val stays unseen
    print(f"trained a {tok.vocab_size:,}-token BPE in {time.time() - t1:.1f}s")
elif args.tokenizer == 'gpt2':
    tok = gpt2_tokenizer()  # its bos is <|endoftext|>, which GPT-2 was trained with between documents
else:
    tok = reused

# each document as a compact array right away: a Python list of ints costs ~36 bytes a token, uint16 costs 2
dtype = dtype_for(tok.vocab_size)
splits = {split: [np.array([tok.bos] + tok.encode(d), dtype=dtype) for d in tqdm(split_docs, desc=split)]
          for split, split_docs in parts.items() if split_docs or split != 'test'}
source = f"hf:{args.name}" + (f"/{args.config}" if args.config else '') + f" split={args.split} field={args.field}"
write_dataset(out, tok, splits, source=source, **{f'{s}_docs': len(parts[s]) for s in SPLITS})
print(f"done in {time.time() - t0:.1f}s")
