"""
What every prepare script shares: read a text, split documents deterministically, and write a dataset dir:
    data/<name>/train.bin, val.bin   flat token streams, read back with np.memmap(path, dtype=meta['dtype'])
    data/<name>/tokenizer.json       Tokenizer.save, so training and sampling use the exact same tokenizer
    data/<name>/meta.json            vocab_size, dtype, token counts, source, ...
"""
import codecs
import hashlib
import json
import os
import sys
import urllib.request

import numpy as np


def read_text(src):
    """Text of a local file or an http(s) URL, with one clear line when it can't be had or isn't text."""
    if src.startswith(('http://', 'https://')):
        try:
            with urllib.request.urlopen(src, timeout=30) as f:
                return text_of(f.read(), src)
        except OSError as e:  # URLError, timeouts, DNS failures offline are all OSErrors
            raise SystemExit(f"could not download {src} ({e}); offline, pass a local text file instead, "
                             f"e.g. ../shared/data/tinyshakespeare.txt") from None
    if not os.path.exists(src):
        raise SystemExit(f"no such file: {src}; pass a text file or an http(s) URL, "
                         f"e.g. ../shared/data/tinyshakespeare.txt")
    return read_text_file(src)


# -----------------------------------------------------------------------------
# text files: every text a user hands a script (prepare.text, projects/approximator/embed.py file/index, sample.py's FILE:) is read
# and checked here, once, the same way


def read_text_file(path, name=None, need_text=True):
    """The text of a local file; name (default: path) is how messages call it. A missing or unreadable file, one
    that isn't a regular file (a directory, /dev/zero, a pipe: never read, so never hung on), a binary file (a NUL
    byte), bytes that aren't UTF-8 and, with need_text, a file with no text in it each stop with one line that
    names the file and, for a bad byte, where it is."""
    name = name or path
    if not os.path.exists(path):
        raise SystemExit(f"{name}: no such file")
    if not os.path.isfile(path):
        raise SystemExit(f"{name}: not a regular file (a directory, a device or a pipe); pass a text file")
    try:
        with open(path, 'rb') as f:
            head = f.read(1 << 16)
            if b'\0' in head:  # a binary file stops here, however large (a 100 GB disk image is not read whole):
                text_of(head, name)  # says where its first NUL byte is
            return text_of(head + f.read(), name, need_text)
    except OSError as e:
        raise SystemExit(f"{name}: can't read it ({e.strerror or e})") from None


def text_of(data, name, need_text=True):
    """bytes as text, or one line: a NUL byte (a binary file) or bytes that aren't UTF-8, by line and byte; with
    need_text, no text at all. A UTF-8 byte-order mark is dropped and line ends become '\n', as open() does."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # what Windows calls "Unicode"
        raise SystemExit(f"{name}: UTF-16 text, not UTF-8; save it as UTF-8")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows' mark of UTF-8: not text
    if (nul := data.find(b'\0')) >= 0:
        raise SystemExit(f"{name}: a binary file, not text (a NUL byte at {where(data, nul)}); pass a UTF-8 text file")
    try:
        text = data[bom:].decode('utf-8')
    except UnicodeDecodeError as e:
        raise SystemExit(f"{name}: not UTF-8 text ({where(data, bom + e.start)}: 0x{data[bom + e.start]:02x}); "
                         f"save it as UTF-8") from None
    if need_text and not text.strip():
        raise SystemExit(f"{name}: {'empty' if not text else 'only whitespace'}, no text in it; pass a file with text")
    return text.replace('\r\n', '\n').replace('\r', '\n')


def where(data, i):
    """'line 3, byte 17' of position i in data, both counted from 1, the byte within its line (as an editor's column)."""
    line, line_start = data.count(b'\n', 0, i) + 1, data.rfind(b'\n', 0, i) + 1
    return f"line {line:,}, byte {i - line_start + 1:,}"


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


def flag(s):
    """An argparse type for True/False (a ValueError is what argparse turns into its one-line usage error)."""
    if s.lower() not in ('true', 'false'):
        raise ValueError(s)
    return s.lower() == 'true'


def add_overwrite(parser):
    """--overwrite, for check_out; bare, as a switch, it is --overwrite=True."""
    parser.add_argument('--overwrite', type=flag, nargs='?', const=True, default=False,
                        help="replace the prepared data already at --out (True/False)")


def prepared_with():
    """The command that prepares a dataset, as its meta.json records it: the script and its arguments, --overwrite aside."""
    return [os.path.basename(sys.argv[0])] + [a for a in sys.argv[1:] if not a.startswith('--overwrite')]


def check_out(out, overwrite):
    """Stop with one line, before any work, if out is a file or already holds prepared data (its meta.json) and
    overwrite isn't set: a prepare never replaces a dataset, which runs may have been trained on, silently. The
    same command run again has nothing to do (README sections each start with the prepare they need)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out={out} is a file, not a folder; pass another --out")
    if os.path.isfile(os.path.join(out, 'meta.json')) and not overwrite:
        try:
            with open(os.path.join(out, 'meta.json'), encoding='utf-8') as f:
                same = json.load(f).get('prepared_with') == prepared_with()
        except (OSError, ValueError, AttributeError):
            same = False
        if same:
            print(f"{out} is already prepared by this same command: nothing to do (--overwrite=True makes it again)")
            raise SystemExit(0)
        raise SystemExit(f"{out} already holds prepared data (made by another command); pass --overwrite=True to "
                         f"replace it, or another --out")


def write_meta(out, meta):
    """<out>/meta.json, last and atomically: a dataset is whole once it has one. It records the command that made it."""
    with open(os.path.join(out, 'meta.json.tmp'), 'w') as f:
        json.dump({**meta, 'prepared_with': prepared_with()}, f, indent=2)
    os.replace(os.path.join(out, 'meta.json.tmp'), os.path.join(out, 'meta.json'))


def dtype_for(vocab_size):
    return 'uint16' if vocab_size < 65536 else 'uint32'  # uint16 halves the disk and RAM of a token stream


def write_dataset(out, tok, splits, source, masks=None, **extra):
    """splits: {'train': [ids, ...], 'val': [ids, ...]}, each a list of documents (lists or arrays of token ids),
    concatenated into <out>/<split>.bin. masks, if given, holds a uint8 array per document for some splits:
    <out>/<split>_mask.bin, 1 on the spans the model learns to write (see dataloader.TokenStream). extra goes into
    meta.json as is."""
    for split, docs in splits.items():  # before anything is written: a failed prepare leaves no half dataset
        if not any(len(d) for d in docs):
            raise SystemExit(f"the {split} split is empty; change --val_frac")
    os.makedirs(out, exist_ok=True)
    dtype = dtype_for(tok.vocab_size)
    meta = {'vocab_size': tok.vocab_size, 'dtype': dtype, 'tokenizer': tok.kind}
    for split, docs in splits.items():
        n = sum(len(d) for d in docs)
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
    write_meta(out, meta)
    print(f"wrote {out}: vocab_size {tok.vocab_size:,} ({tok.kind}), dtype {dtype}")
    for split in splits:
        print(f"{split} has {meta[f'{split}_tokens']:,} tokens")
