r"""
vibejam's personal corpus (README "vibejam"): a person's own writing, for a GPT that writes in their style.
    python -m prepare.vibejam                                   # char-level -> data/vibejam_char
    python -m prepare.vibejam --tokenizer=bpe --vocab_size=2048 # -> data/vibejam_bpe
    python -m prepare.vibejam --folder=~/notes                  # your own .txt/.md files instead
With no folder of your own (data/raw/ missing), the corpus is a real person's: every message of the most prolific
sender of the chitchat conversations (1.1 MB of one person's casual writing, 25,272 messages in 777 conversations),
each conversation's messages one document. A folder's documents are its .txt and .md files, read recursively.
Documents are joined with the document separator (the tokenizer's <|bos|>, in front of each) and split by document,
deterministically (an md5 of the document's name), so a document is all train or all val.
"""
import argparse
import os
import time

from prepare.common import is_val, write_dataset
from tokenizer import SPECIAL_TOKENS, char_tokenizer, train_bpe

SENDER = '31267496-e50f-4f91-a197-c5b1bfde803b'  # chitchat's most prolific sender, by characters written


def chitchat_documents(sender=SENDER):
    """{name: text}: one sender's messages of each conversation they took part in, a line each."""
    import chitchat_dataset
    docs = {}
    for cid, conv in chitchat_dataset.Dataset().items():
        lines = [m['text'] for turn in conv['messages'] for m in turn if m['sender'] == sender]
        if lines:
            docs[cid] = '\n'.join(lines)
    return docs


def folder_documents(folder):
    """{relative path: text} of every .txt and .md file under folder; one clear line for what can't be read."""
    if not os.path.isdir(folder):
        raise SystemExit(f"no folder {folder}: put your .txt/.md files there, or leave --folder out for the built-in corpus")
    docs = {}
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if not name.lower().endswith(('.txt', '.md')):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, encoding='utf-8') as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise SystemExit(f"can't read {path} ({type(e).__name__}: {e}); fix or remove it and run again") from None
            if text.strip():
                docs[os.path.relpath(path, folder)] = text
    if not docs:
        raise SystemExit(f"{folder} has no .txt or .md file with text in it: add your writing there")
    return docs


def split_documents(docs, val_frac):
    """(train, val) lists of texts, by the md5 of each document's name; val gets one document at least."""
    names = sorted(docs)
    val = [n for n in names if is_val(n, val_frac)] or names[-1:]
    train = [n for n in names if n not in val]
    if not train:
        raise SystemExit(f"{len(docs)} document(s) can't be split into train and val: add more documents")
    return [docs[n] for n in train], [docs[n] for n in val]


def build(out, docs, tokenizer='char', vocab_size=2048, val_frac=0.1, block_size=256, source=''):
    """Write data/<out>: each document after a <|bos|>, train and val by document. Dies if a split has fewer
    tokens than block_size + 1 (the style configs' windows)."""
    train, val = split_documents(docs, val_frac)
    if tokenizer == 'char':
        tok = char_tokenizer(''.join(docs.values()), specials=SPECIAL_TOKENS)  # every document's characters
    else:
        tok = train_bpe(train, vocab_size)  # train documents only: val stays unseen
    splits = {name: [[tok.bos] + tok.encode(text) for text in texts] for name, texts in (('train', train), ('val', val))}
    for name, part in splits.items():
        n = sum(map(len, part))
        if n < block_size + 1:
            raise SystemExit(f"the {name} split has {n:,} tokens, fewer than block_size + 1 = {block_size + 1}: add "
                             f"more text, or lower --block_size (and the config's block_size)")
    write_dataset(out, tok, splits, source=source, documents={'train': len(train), 'val': len(val)})
    return tok


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--folder', default=None, help="your .txt/.md files (default: data/raw/ if it exists, else the built-in corpus)")
    parser.add_argument('--tokenizer', default='char', choices=['char', 'bpe'])
    parser.add_argument('--vocab_size', type=int, default=2048, help="bpe only; counts the special tokens")
    parser.add_argument('--val_frac', type=float, default=0.1, help="the share of documents held out")
    parser.add_argument('--block_size', type=int, default=256, help="each split needs more tokens than this")
    parser.add_argument('--out', default=None, help="default: data/vibejam_<tokenizer>")
    args = parser.parse_args()
    if not 0 < args.val_frac < 1:
        raise SystemExit(f"--val_frac must be between 0 and 1, got {args.val_frac}")
    t0 = time.time()
    folder = args.folder or ('data/raw' if os.path.isdir('data/raw') else None)
    if folder:
        docs, source = folder_documents(os.path.expanduser(folder)), folder
    else:
        docs, source = chitchat_documents(), f'chitchat-dataset, every message of sender {SENDER}'
        print(f"no data/raw/: using a real person's writing, {source}")
    print(f"{len(docs):,} documents, {sum(map(len, docs.values())):,} characters")
    build(args.out or f'data/vibejam_{args.tokenizer}', docs, args.tokenizer, args.vocab_size, args.val_frac,
          args.block_size, source)
    print(f"done in {time.time() - t0:.1f}s")
