r"""
vibejam's personal corpus (projects/vibejam/README.md): a person's own writing, for a GPT that writes in their style.
    python -m prepare.vibejam                                   # char-level -> data/vibejam_char
    python -m prepare.vibejam --tokenizer=bpe --vocab_size=2048 # -> data/vibejam_bpe
    python -m prepare.vibejam --folder=~/notes                  # your own .txt/.md files instead
With no folder of your own (data/raw/ missing), the corpus is a real person's: every message of the most prolific
sender of the chitchat conversations (1.1 MB of one person's casual writing, 25,272 messages in 777 conversations),
each conversation's messages one document; --sender= picks another (SENDERS: the three most prolific, each measured
in projects/vibejam/). A folder's documents are its .txt and .md files, read recursively.
Documents are joined with the document separator (the tokenizer's <|bos|>, in front of each) and split by document
with splits.split_of(name) (a chitchat document's name is its conversation id, so the test documents are exactly the
person's text in chitchat's test conversations): train and val are written, test documents are left out of every
file here (projects/vibejam/eval.py reads them once, for the table).
"""
import argparse
import json
import os
import random
import time

import numpy as np

from prepare.common import (NOISE, SENDER, add_overwrite, check_out, chitchat_documents, chunks, corrupt,
                            reuse_tokenizer, write_dataset)
from splits import split_keys
from tokenizer import SPECIAL_TOKENS, char_tokenizer, render_rewrite, train_bpe

def folder_documents(folder):
    """{relative path: text} of every .txt and .md file under folder; one clear line for what can't be read."""
    from common import read_text_file  # here: common imports torch, which the built-in corpus never waits for
    if not os.path.isdir(folder):
        raise SystemExit(f"no folder {folder}: put your .txt/.md files there, or leave --folder out for the built-in corpus")
    docs = {}
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if not name.lower().endswith(('.txt', '.md')):
                continue
            path = os.path.join(root, name)
            text = read_text_file(path, need_text=False)
            if text.strip():
                docs[os.path.relpath(path, folder)] = text
    if not docs:
        raise SystemExit(f"{folder} has no .txt or .md file with text in it: add your writing there")
    return docs


def split_documents(docs):
    """{'train', 'val', 'test': [text, ...]} by splits.split_of(each document's name); val gets one document at least
    (the last train name, for a folder too small to have a val document by hash), and train too."""
    names = split_keys(sorted(docs))
    if not names['val']:
        names['val'], names['train'] = names['train'][-1:], names['train'][:-1]
    if not names['train']:
        raise SystemExit(f"{len(docs)} document(s) can't be split into train and val: add more documents")
    return {split: [docs[n] for n in ns] for split, ns in names.items()}


# -----------------------------------------------------------------------------
# rewrite pairs: (draft, rewrite) where the draft is the person's own text with its style taken out and its content
# kept (prepare.common.corrupt), so that a model fine-tuned on them learns to put the style back (not to copy, not to
# continue). Each kind of noise is a knob; a pair's noise is drawn from a seeded generator, so the pairs are reproducible.

def render_pair(tok, draft, rewrite):
    """(ids, mask) of one pair as a document: <|bos|>Draft:\n{draft}\nRewrite:\n{rewrite}, the mask 1 on the rewrite
    (its tokens, and through dataloader.TokenStream the next document's <|bos|>, the end marker, are the targets)."""
    prompt, target = render_rewrite(tok, draft), tok.encode(rewrite)
    return prompt + target, [0] * len(prompt) + [1] * len(target)


def make_pairs(texts, seed=0, max_chars=100, **noise):
    """[(draft, rewrite)] of every chunk of texts whose draft is not empty; the same pairs for the same seed."""
    rng = random.Random(seed)
    pairs = [(corrupt(c, rng, **noise), c) for t in texts for c in chunks(t, max_chars)]
    return [(d, r) for d, r in pairs if d.strip()]


def read_edits(path):
    """[(draft, rewrite)] of a JSONL file of {"draft": ..., "rewrite": ...} (real edits: an LLM's draft, your edit)."""
    from common import read_text_file  # here, as in folder_documents
    pairs = []
    for n, line in enumerate(read_text_file(path, f"--edits={path}").split('\n'), 1):
        if line.strip():
            try:
                row = json.loads(line)
                pairs.append((str(row['draft']), str(row['rewrite'])))
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"{path}:{n}: not a JSON object with 'draft' and 'rewrite'") from None
    return pairs


def write_pairs(out, tok, splits, source, block_size=256):
    """data/<out>: each split's pairs rendered by render_pair, the rewrites masked in for the loss, every training
    window starting at a pair (meta "windows": "document"). A pair longer than block_size tokens (its end marker
    would fall outside the window) is left out, and counted."""
    docs, masks, dropped = {}, {}, {}
    for split, pairs in splits.items():
        rendered = []
        for draft, rewrite in pairs:
            try:
                rendered.append(render_pair(tok, draft, rewrite))
            except ValueError as e:  # a char tokenizer meets a character it lacks (an edit from elsewhere)
                raise SystemExit(f"a pair can't be encoded with the style model's tokenizer ({e}): prepare the style "
                                 f"data from text that has it, or use --tokenizer=bpe there") from None
        fits = [(ids, m) for ids, m in rendered if len(ids) <= block_size]
        if not fits:
            raise SystemExit(f"no {split} pair fits in block_size = {block_size} tokens: lower --max_chars")
        dropped[split] = len(rendered) - len(fits)
        docs[split], masks[split] = [ids for ids, _ in fits], [np.array(m) for _, m in fits]
    print(f"left out the pairs longer than {block_size} tokens: {dropped}")
    write_dataset(out, tok, docs, source=source, masks=masks, format='rewrite', windows='document',
                  pairs={k: len(v) for k, v in docs.items()})


def build(out, docs, tokenizer='char', vocab_size=2048, block_size=256, source=''):
    """Write data/<out>: each document after a <|bos|>, train and val by document (test documents left out). Dies if
    a split has fewer tokens than block_size + 1 (the style configs' windows)."""
    parts = split_documents(docs)
    train, val = parts['train'], parts['val']
    if tokenizer == 'char':
        # every document's characters, and the rewrite prompt's, so the rewrite pairs can be written with it
        tok = char_tokenizer(''.join(docs.values()) + 'Draft:\nRewrite:\n', specials=SPECIAL_TOKENS)
    else:
        tok = train_bpe(train, vocab_size)  # train documents only: val stays unseen
    splits = {name: [[tok.bos] + tok.encode(text) for text in texts] for name, texts in (('train', train), ('val', val))}
    for name, part in splits.items():
        n = sum(map(len, part))
        if n < block_size + 1:
            raise SystemExit(f"the {name} split has {n:,} tokens, fewer than block_size + 1 = {block_size + 1}: add "
                             f"more text, or lower --block_size (and the config's block_size)")
    write_dataset(out, tok, splits, source=source, documents={k: len(v) for k, v in parts.items()})
    return tok


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--folder', default=None, help="your .txt/.md files (default: data/raw/ if it exists, else the built-in corpus)")
    parser.add_argument('--tokenizer', default='char', choices=['char', 'bpe'])
    parser.add_argument('--vocab_size', type=int, default=2048, help="bpe only; counts the special tokens")
    parser.add_argument('--sender', default=SENDER, help="the built-in corpus's person: a chitchat sender id (SENDERS)")
    parser.add_argument('--block_size', type=int, default=256, help="the style config's: each split needs more tokens "
                        "than this; --pairs: a pair must fit in it")
    parser.add_argument('--out', default=None, help="default: data/vibejam_<tokenizer>, or data/vibejam_rewrite_<tokenizer> with --pairs")
    parser.add_argument('--pairs', default=None, metavar='STYLE_DATA', help="make (draft, rewrite) pairs instead, with the "
                        "tokenizer of this prepared style data dir (e.g. data/vibejam_char), for the rewrite fine-tuning")
    parser.add_argument('--edits', default=None, help="--pairs: a JSONL file of real {\"draft\": ..., \"rewrite\": ...} edits, added to train")
    parser.add_argument('--seed', type=int, default=0, help="--pairs: the noise's seed")
    parser.add_argument('--max_chars', type=int, default=100, help="--pairs: a pair's text, in consecutive lines (a few "
                        "messages; 100 fits a draft and its rewrite in the char model's 256 and the BPE model's 128 tokens)")
    for k, v in NOISE.items():
        parser.add_argument(f'--{k}', type=float, default=v, help="--pairs: the probability of this noise (corrupt())")
    add_overwrite(parser)
    args = parser.parse_args()
    tok = reuse_tokenizer(args.pairs) if args.pairs else None
    out = args.out or (f"data/vibejam_rewrite_{tok.kind}" if args.pairs else f'data/vibejam_{args.tokenizer}')
    out += '' if args.out or args.sender == SENDER else f'_{args.sender[:8]}'  # another person: their own dir
    check_out(out, args.overwrite)
    t0 = time.time()
    tok = reuse_tokenizer(args.pairs) if args.pairs else None  # before the corpus: a missing style data dir stops at once
    folder = args.folder or ('data/raw' if os.path.isdir('data/raw') else None)
    if folder:
        docs, source = folder_documents(os.path.expanduser(folder)), folder
    else:
        docs, source = chitchat_documents(args.sender), f'chitchat-dataset, every message of sender {args.sender}'
        if not docs:
            raise SystemExit(f"no chitchat message is by --sender={args.sender}: pass one of prepare.common.SENDERS")
        print(f"no data/raw/: using a real person's writing, {source}")
    print(f"{len(docs):,} documents, {sum(map(len, docs.values())):,} characters")
    if args.pairs:
        noise = {k: getattr(args, k) for k in NOISE}
        parts = split_documents(docs)  # the style data's split: no test document makes a pair
        splits = {'train': make_pairs(parts['train'], args.seed, args.max_chars, **noise),
                  'val': make_pairs(parts['val'], args.seed + 1, args.max_chars, **noise)}
        if args.edits:
            splits['train'] += read_edits(args.edits)
        print(f"{len(splits['train']):,} train / {len(splits['val']):,} val pairs, e.g. {splits['train'][0]}")
        write_pairs(out, tok, splits, f"{source}; rewrite pairs, noise {noise}", args.block_size)
    else:
        build(out, docs, args.tokenizer, args.vocab_size, args.block_size, source)
    print(f"done in {time.time() - t0:.1f}s")
