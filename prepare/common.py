"""
What every prepare script shares: read a text (or the sentences of Python docstrings), split documents
deterministically, and write a dataset dir:
    data/<name>/train.bin, val.bin   flat token streams, read back with np.memmap(path, dtype=meta['dtype'])
    data/<name>/tokenizer.json       Tokenizer.save, so training and sampling use the exact same tokenizer
    data/<name>/meta.json            vocab_size, dtype, token counts, source, ...
and what a dataset's readers share with its prepare script: vibejam's person and drafts, the approximator's vocab.h5.
Every split is splits.py's (train, val, test), so every project holds out the same conversations.
"""
import ast
import json
import os
import re
import sys
import urllib.request

import numpy as np


def read_text(src):
    """Text of a local file or an http(s) URL, with one clear line when it can't be had or isn't text."""
    from common import read_text_file, text_of  # here: common imports torch, which most prepare scripts never need
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


# -----------------------------------------------------------------------------
# vibejam's people: prepare.vibejam's built-in corpus (--sender=), and projects/vibejam/eval.py's held-out writing.
# The three most prolific chitchat senders by the characters of their documents (chitchat_documents: 1,147,343,
# 1,146,533 and 528,260; prolific_senders computes it). By message characters alone, without the newlines that join
# a document's messages, the first two swap places (1,122,848 against 1,124,400).
SENDERS = ['31267496-e50f-4f91-a197-c5b1bfde803b', '549cc1d1-270e-4a53-b561-133a8d0086b4',
           '720840be-e522-47ba-9e9f-143f66372673']
SENDER = SENDERS[0]  # the default person


def prolific_senders(n=3):
    """The n chitchat senders who wrote the most characters, as their documents count them."""
    import chitchat_dataset
    chars = {}
    for conv in chitchat_dataset.Dataset().values():
        by = {}
        for turn in conv['messages']:
            for m in turn:
                by.setdefault(m['sender'], []).append(m['text'])
        for sender, lines in by.items():
            chars[sender] = chars.get(sender, 0) + len('\n'.join(lines))
    return sorted(chars, key=chars.get, reverse=True)[:n]


def chitchat_documents(sender=SENDER):
    """{name: text}: one sender's messages of each conversation they took part in, a line each."""
    import chitchat_dataset
    docs = {}
    for cid, conv in chitchat_dataset.Dataset().items():
        lines = [m['text'] for turn in conv['messages'] for m in turn if m['sender'] == sender]
        if lines:
            docs[cid] = '\n'.join(lines)
    return docs


# -----------------------------------------------------------------------------
# vibejam's drafts: a person's text with its style taken out and its content kept (prepare.vibejam's rewrite pairs,
# and the held-out drafts projects/vibejam/eval.py rewrites)

# the person's casual forms -> the neutral ones a draft (an LLM's, a stranger's) would use
NEUTRAL = {'lol': '', 'haha': '', 'hahaha': '', 'lmao': '', 'omg': 'oh my god', 'idk': "I don't know", 'tbh': 'to be honest',
           'u': 'you', 'ur': 'your', 'ya': 'you', 'yeah': 'yes', 'yep': 'yes', 'nope': 'no', 'gonna': 'going to',
           'wanna': 'want to', 'gotta': 'have to', 'kinda': 'kind of', 'sorta': 'sort of', 'cuz': 'because',
           'cause': 'because', 'thx': 'thanks', 'pls': 'please', 'plz': 'please', 'im': "I'm", 'dont': "don't",
           'cant': "can't", 'wont': "won't", 'didnt': "didn't", 'isnt': "isn't", 'thats': "that's", 'whats': "what's",
           'ok': 'okay', 'k': 'okay', 'btw': 'by the way', 'rn': 'right now', 'awesome': 'great', 'super': 'very'}
EXPAND = {"i'm": 'I am', "don't": 'do not', "can't": 'cannot', "won't": 'will not', "it's": 'it is',
          "that's": 'that is', "didn't": 'did not', "isn't": 'is not', "you're": 'you are', "i've": 'I have',
          "what's": 'what is', "i'll": 'I will', "doesn't": 'does not', "there's": 'there is', "i'd": 'I would'}
NOISE = {'neutral': 1.0, 'expand': 1.0, 'normalize': 1.0, 'word_drop': 0.05, 'shuffle': 0.05}  # the defaults


def corrupt(text, rng, neutral=1.0, expand=1.0, normalize=1.0, word_drop=0.0, shuffle=0.0):
    """The draft of a text: each casual word swapped for its neutral form (NEUTRAL) with probability neutral,
    contractions expanded with probability expand, each line's case and end punctuation normalized with probability
    normalize (a capital first letter, one final period, ! and ? runs to one), then each word dropped with probability
    word_drop and each word swapped with its right neighbour with probability shuffle. rng: a random.Random."""
    lines = []
    for line in text.split('\n'):
        out = []
        for w in line.split():
            core, tail = w.rstrip('.,!?'), w[len(w.rstrip('.,!?')):]
            low = core.lower()
            if low in NEUTRAL and rng.random() < neutral:
                core = NEUTRAL[low]
            elif low in EXPAND and rng.random() < expand:
                core = EXPAND[low]
            if core and rng.random() >= word_drop:
                out.append(core + tail)
        for i in range(len(out) - 1):
            if rng.random() < shuffle:
                out[i], out[i + 1] = out[i + 1], out[i]
        line = ' '.join(out)
        if line and rng.random() < normalize:
            line = re.sub(r'([!?])\1+', r'\1', line)
            line = line[0].upper() + line[1:]
            line = line if line[-1] in '.!?' else line + '.'
        if line:
            lines.append(line)
    return '\n'.join(lines)


def chunks(text, max_chars=100):
    """A document's consecutive lines grouped into pieces of at most max_chars (a longer line is a piece alone)."""
    out, cur = [], ''
    for line in text.split('\n'):
        if cur and len(cur) + 1 + len(line) > max_chars:
            out.append(cur)
            cur = line
        else:
            cur = f"{cur}\n{line}" if cur else line
    return out + ([cur] if cur.strip() else [])


# -----------------------------------------------------------------------------
# the approximator's vocabulary: prepare.approximator writes it, dataloader.ApproximatorSource starts a model from its
# teacher vectors


def write_vocab(path, entries, vectors, teacher_name):
    import h5py
    with h5py.File(path + '.tmp', 'w') as f:
        f.create_dataset('entry', data=[e for e, _, _ in entries], dtype=h5py.string_dtype())
        f.create_dataset('kind', data=[k for _, k, _ in entries], dtype=h5py.string_dtype())
        f.create_dataset('count', data=np.array([n for _, _, n in entries], dtype=np.int64))
        f.create_dataset('vector', data=vectors.astype(np.float16))
        f.attrs['teacher'] = teacher_name or ''
    os.replace(path + '.tmp', path)


def read_vocab(path):
    """(entries, kinds, counts, vectors float16) of a vocab.h5; one line naming it and the command that makes it if
    it is missing, truncated or not one (h5py says OSError for all three; a KeyError for a file without the tables)."""
    import h5py
    try:
        with h5py.File(path, 'r') as f:
            return list(f['entry'].asstr()[:]), list(f['kind'].asstr()[:]), f['count'][:], f['vector'][:]
    except (OSError, KeyError) as e:
        why = 'missing' if not os.path.exists(path) else f"unreadable ({' '.join(str(e).split())[:120]})"
        raise SystemExit(f"{path} is {why}: prepare the approximator data again with python -m prepare.approximator "
                         f"--out={os.path.dirname(path) or '.'} --overwrite=True") from None


SENTENCE = re.compile(r'(?<=[.!?])\s+(?=[A-Z])')


def docstring_sentences(source):
    """The prose sentences of a Python source's docstrings: paragraphs with code, doctests or markup left out,
    sentences of 6-40 words that start with a capital and end with a full stop."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for para in re.split(r'\n\s*\n', ast.get_docstring(node) or ''):
                if re.search(r'>>>|::|[{}=\[\]_`*|\\]|^\s{2,}|\w\(', para, re.M):
                    continue
                out += [s for s in SENTENCE.split(' '.join(para.split()))
                        if 6 <= len(s.split()) <= 40 and s[0].isupper() and s.endswith('.')]
    return out


def docstring_sentences_under(root):
    """The docstring sentences of every .py file under root, files in sorted order; tests, and a standard library's
    own site-packages, left out. English prose any machine with Python has, offline."""
    from tqdm import tqdm
    paths = []
    for folder, dirs, files in os.walk(root):  # top-down: pruning dirs keeps them out
        dirs[:] = sorted(d for d in dirs if d not in ('test', 'tests', 'idle_test', 'site-packages', '__pycache__'))
        paths += [os.path.join(folder, f) for f in sorted(files) if f.endswith('.py')]
    texts = []
    for path in tqdm(paths, desc=f'docstrings under {os.path.basename(root)}', mininterval=2, leave=False):
        with open(path, encoding='utf-8', errors='replace') as f:
            texts += docstring_sentences(f.read())
    return texts
