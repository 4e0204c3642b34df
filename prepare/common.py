"""
What every prepare script shares: read a text, split documents deterministically, and write a dataset dir:
    data/<name>/train.bin, val.bin   flat token streams, read back with np.memmap(path, dtype=meta['dtype'])
    data/<name>/tokenizer.json       Tokenizer.save, so training and sampling use the exact same tokenizer
    data/<name>/meta.json            vocab_size, dtype, token counts, source, ...
"""
import hashlib
import json
import os
import urllib.request

import numpy as np


def read_text(src):
    """Text of a local file or an http(s) URL, with one clear line when it can't be had."""
    if src.startswith(('http://', 'https://')):
        try:
            with urllib.request.urlopen(src, timeout=30) as f:
                return f.read().decode('utf-8')
        except OSError as e:  # URLError, timeouts, DNS failures offline are all OSErrors
            raise SystemExit(f"could not download {src} ({e}); offline, pass a local text file instead, "
                             f"e.g. ../shared/data/tinyshakespeare.txt") from None
    if not os.path.isfile(src):
        raise SystemExit(f"no such file: {src}; pass a text file or an http(s) URL, "
                         f"e.g. ../shared/data/tinyshakespeare.txt")
    with open(src, encoding='utf-8') as f:
        return f.read()


def hub_unreachable():
    """Why the Hugging Face hub can't be reached, or None. A DNS look-up answers at once offline, where the
    datasets library would retry for half a minute first. With HF_HUB_OFFLINE set, the local cache is used."""
    import socket
    if os.environ.get('HF_HUB_OFFLINE') or os.environ.get('HF_DATASETS_OFFLINE'):
        return None
    try:
        socket.getaddrinfo('huggingface.co', 443)
    except OSError as e:
        return f"the Hugging Face hub is unreachable ({e.strerror or e}; offline?)"
    return None


def is_val(key, val_frac):
    """Deterministic split: md5 is stable across runs and machines (Python's hash() of a str is salted)."""
    h = int.from_bytes(hashlib.md5(key.encode('utf-8')).digest()[:8], 'big')
    return h < val_frac * 2**64


def reuse_tokenizer(path):
    """The tokenizer of a prepared data dir (or a tokenizer.json), for a dataset that must share it: the
    datasets of a curriculum's mix, or a lineage's phases. One clear line if it isn't there."""
    from tokenizer import Tokenizer
    file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
    if not os.path.isfile(file):
        from common import make_hint  # the data dir is missing: say what makes it, not which flag names it
        raise SystemExit(f"no tokenizer at {file}: {make_hint(path, 'pass a prepared data dir, e.g. --tokenizer=data/chitchat')}")
    tok = Tokenizer.load(file)
    print(f"reusing the {tok.vocab_size:,}-token {tok.kind} tokenizer of {file}")
    return tok


def dtype_for(vocab_size):
    return 'uint16' if vocab_size < 65536 else 'uint32'  # uint16 halves the disk and RAM of a token stream


def write_dataset(out, tok, splits, source, masks=None, **extra):
    """splits: {'train': [ids, ...], 'val': [ids, ...]}, each a list of documents (lists or arrays of token ids),
    concatenated into <out>/<split>.bin. masks, if given, holds a uint8 array per document for some splits:
    <out>/<split>_mask.bin, 1 on the spans the model learns to write (see data.TokenStream). extra goes into
    meta.json as is."""
    os.makedirs(out, exist_ok=True)
    dtype = dtype_for(tok.vocab_size)
    meta = {'vocab_size': tok.vocab_size, 'dtype': dtype, 'tokenizer': tok.kind}
    for split, docs in splits.items():
        n = sum(len(d) for d in docs)
        if n == 0:
            raise SystemExit(f"the {split} split is empty; change --val_frac")
        # write through a memmap, document by document, so we never hold one giant concatenated copy
        arr = np.memmap(os.path.join(out, f'{split}.bin'), dtype=dtype, mode='w+', shape=(n,))
        i = 0
        for d in docs:
            arr[i:i + len(d)] = d
            i += len(d)
        arr.flush()
        del arr
        meta[f'{split}_tokens'] = n
        mask_path = os.path.join(out, f'{split}_mask.bin')
        if masks and split in masks:
            np.concatenate(masks[split]).astype(np.uint8).tofile(mask_path)
        elif os.path.exists(mask_path):
            os.remove(mask_path)  # a stale mask from an earlier prepare would mask the wrong tokens
    meta.update(source=source, **extra)
    tok.save(os.path.join(out, 'tokenizer.json'))
    with open(os.path.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {out}: vocab_size {tok.vocab_size:,} ({tok.kind}), dtype {dtype}")
    for split in splits:
        print(f"{split} has {meta[f'{split}_tokens']:,} tokens")
