r"""
The BERT approximator's data (projects/approximator/README.md): a vocabulary of words, n-grams and skip-grams with the
teacher's vector of each, and the chitchat messages as bags of those entries with the teacher's vector of each
message, the target the student learns to match.
    python -m prepare.approximator                                  # -> data/approximator (30k entries)
    python -m prepare.approximator --vocab_size=10000 --out=data/approximator_10k
    python -m prepare.approximator --skipgrams=False --out=data/approximator_noskip
    python -m prepare.approximator --wordpieces=True --out=data/approximator_wp  # + the teacher's WordPiece vocabulary
    python -m prepare.approximator --more_text=True --out=data/approximator_more   # + ~30k docstring sentences in train
    python -m prepare.approximator --teacher=sentence-transformers/msmarco-distilbert-dot-v5 --out=data/approximator_msmarco
The teacher (teacher.py: '' is the packaged all-MiniLM-L6-v2, else a hub name or a path) embeds every message and
entry once: its outputs are cached in data/teacher_cache/<teacher>.h5 and reused by every later run, so only the
first prepare waits for it: ~250k texts, the 223k distinct messages and up to 30k entries, about 15 minutes on 2
CPU cores (measured: 164 texts a second on one thread of a busy machine, 26 minutes); a new vocabulary size then
takes seconds plus its new entries.
Messages are split by conversation, as every nanolab project splits chitchat (splits.py): test and val are
prepare.chitchat's test and val conversations, train the others. The vocabulary is counted on train only: words first
(up to --word_frac of the entries), then n-grams (n <= 3) and, with --skipgrams, skip-grams ('how _ you'), by
frequency; every character seen in train is an entry too, so an unknown word always backs off to pieces. With
--wordpieces, the teacher's own WordPiece vocabulary is added beyond --vocab_size: its words, and its continuations
('##ule', each the teacher's vector of that token alone), so an unknown word backs off to the pieces the teacher
itself would split it into, which carry meaning, rather than to letter runs.
Writes <out>/vocab.h5 (entries, kinds, frequencies, float16 teacher vectors), tokenizer.json, meta.json and,
per split, <split>_ids.npy + <split>_offsets.npy (the bags), <split>_teacher.npy (float16 targets) and
<split>_messages.json (texts, conversation and turn of each, for the retrieval task).
"""
import argparse
import json
import os
import time
from collections import Counter

import numpy as np
from tqdm import tqdm

import teacher as teachers
from prepare.common import add_overwrite, check_out, docstring_sentences_under, flag, write_meta, write_vocab
from splits import SPLITS, VAL_FRAC, chitchat_splits
from tokenizer import NgramTokenizer, words


def split_messages(val_frac=VAL_FRAC):
    """{split: [(text, conversation, turn)]}: every message of chitchat, split by conversation (splits.py)."""
    import chitchat_dataset
    splits, split = {s: [] for s in SPLITS}, chitchat_splits(val_frac)
    for c, (cid, conv) in enumerate(chitchat_dataset.Dataset().items()):
        splits[split[cid]] += [(m['text'], c, t) for t, turn in enumerate(conv['messages']) for m in turn]
    return splits


MORE_TEXT = ('torch', 'numpy', 'scipy', 'sklearn', 'sympy', 'networkx', 'transformers', 'huggingface_hub')


def more_text(packages=MORE_TEXT):
    """The distinct docstring sentences of installed packages (--more_text): English technical prose to distill on
    beside chat, from what the approximator's requirements install. Python's own standard library is left to the
    evaluation (projects/approximator/textsets.py), which never trains on it."""
    import importlib.util
    texts = []
    for name in packages:
        spec = importlib.util.find_spec(name)  # where it is, without importing it
        if spec is None or not spec.submodule_search_locations:
            print(f"(--more_text: {name} is not installed, left out)")
            continue
        texts += docstring_sentences_under(list(spec.submodule_search_locations)[0])
    return list(dict.fromkeys(texts))


def count_entries(texts, skipgrams=True):
    """Counters of words, n-grams (2, 3) and skip-grams ('w1 _ w3') in texts, and of single characters."""
    counts = {k: Counter() for k in ('word', 'ngram', 'skipgram', 'char')}
    for text in tqdm(texts, desc='counting n-grams', mininterval=1):
        ws = words(text)
        counts['word'].update(ws)
        counts['ngram'].update(' '.join(ws[i:i + 2]) for i in range(len(ws) - 1))
        # a trigram with a literal '_' in the middle would read as a skip-gram: left out
        counts['ngram'].update(' '.join(ws[i:i + 3]) for i in range(len(ws) - 2) if ws[i + 1] != '_')
        if skipgrams:
            counts['skipgram'].update(f'{ws[i]} _ {ws[i + 2]}' for i in range(len(ws) - 2))
    for w, n in counts['word'].items():
        for ch in w:
            counts['char'][ch] += n
    return counts


def choose_entries(counts, vocab_size, word_frac=0.5, min_count=2):
    """[(entry, kind, count)]: every character, the most frequent words (up to word_frac of vocab_size), then
    n-grams and skip-grams by frequency, all seen min_count times or more, vocab_size in all (fewer if the corpus
    has fewer)."""
    chosen = {ch: ('char', n) for ch, n in counts['char'].items()}
    for w, n in counts['word'].most_common():
        if len(chosen) >= word_frac * vocab_size or n < min_count:
            break
        kind = 'char' if w in chosen else 'word'
        chosen[w] = (kind, n)
    rest = sorted([(n, e, k) for k in ('ngram', 'skipgram') for e, n in counts[k].items() if n >= min_count], reverse=True)
    for n, e, k in rest[:max(0, vocab_size - len(chosen))]:
        chosen[e] = (k, n)
    return [(e, k, n) for e, (k, n) in chosen.items()]


def teacher_text(entry):
    """What the teacher reads for an entry: a skip-gram's two words without the gap."""
    return entry.replace(' _ ', ' ')


def write_bags(out, split, tok, messages, targets):
    bags = [tok.encode(text) for text, _, _ in tqdm(messages, desc=f'{split} bags', mininterval=1)]
    offsets = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    np.save(os.path.join(out, f'{split}_ids.npy'), np.fromiter((i for b in bags for i in b), dtype=np.int32, count=offsets[-1]))
    np.save(os.path.join(out, f'{split}_offsets.npy'), offsets)
    np.save(os.path.join(out, f'{split}_teacher.npy'), targets.astype(np.float16))
    with open(os.path.join(out, f'{split}_messages.json'), 'w') as f:
        json.dump([list(m) for m in messages], f)
    unk = sum(b.count(0) for b in bags)
    return {f'{split}_messages': len(messages), f'{split}_elements': int(offsets[-1]), f'{split}_unk': unk}


def build(out, splits, embed, teacher_name='', vocab_size=30000, skipgrams=True, word_frac=0.5, min_count=2, max_words=512,
          wordpieces=None, source='chitchat-dataset messages'):
    """Write the data dir from splits {'train'|'val'|'test': [(text, conversation, turn)]}; embed(texts) gives the
    teacher's (N, D) vectors, one call for the messages and the entries together. wordpieces: (the teacher's
    word-start pieces, its continuations, their (N, D) vectors) to add to the vocabulary, or None."""
    entries = choose_entries(count_entries([t for t, _, _ in splits['train']], skipgrams), vocab_size, word_frac, min_count)
    pieces = np.zeros((0, 0), np.float32)
    if wordpieces:  # beyond vocab_size: what an unknown word backs off to, each with the meaning the teacher gives it
        plain, cont, pieces = wordpieces
        chosen = {e for e, _, _ in entries}
        entries += [(w, 'teacher_word', 0) for w in plain if w not in chosen] + [('##' + c, 'piece', 0) for c in cont]
    kinds = Counter(k for _, k, _ in entries)
    print(f"{len(entries):,} entries: " + ', '.join(f"{n:,} {k}s" for k, n in kinds.most_common()))
    embedded = entries[:len(entries) - len(pieces)]
    texts = [t for m in splits.values() for t, _, _ in m] + [teacher_text(e) for e, _, _ in embedded]
    vectors = embed(texts)
    if len(pieces):
        vectors = np.concatenate([vectors, pieces.astype(vectors.dtype)])
    os.makedirs(out, exist_ok=True)
    write_vocab(os.path.join(out, 'vocab.h5'), entries, vectors[-len(entries):], teacher_name)
    tok = NgramTokenizer({'kind': 'ngram', 'entries': [e for e, _, _ in entries], 'max_words': max_words})
    meta = {'source': source, 'teacher': teacher_name, 'teacher_dim': int(vectors.shape[1]),
            'vocab_size': tok.vocab_size, 'entry_kinds': dict(kinds), 'skipgrams': skipgrams, 'wordpieces': bool(wordpieces)}
    i = 0
    for split, messages in splits.items():
        meta.update(write_bags(out, split, tok, messages, vectors[i:i + len(messages)]))
        i += len(messages)
        print(f"{split}: {meta[f'{split}_elements'] / max(1, len(messages)):.1f} entries per message, "
              f"{meta[f'{split}_unk']:,} <|unk|>")
    tok.save(os.path.join(out, 'tokenizer.json'))
    write_meta(out, meta)
    return meta


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--vocab_size', type=int, default=30000, help="entries in all: characters, words, n-grams, skip-grams")
    parser.add_argument('--skipgrams', type=flag, default=True, help="include skip-grams 'w1 _ w3' (True/False)")
    parser.add_argument('--word_frac', type=float, default=0.5, help="the share of the vocabulary words may take at most")
    parser.add_argument('--min_count', type=int, default=2, help="entries seen fewer times in train are left out")
    parser.add_argument('--wordpieces', type=flag, default=False,
                        help="add the teacher's WordPiece vocabulary, words and '##' continuations, beyond --vocab_size (True/False)")
    parser.add_argument('--more_text', type=flag, default=False,
                        help="add the docstring sentences of installed packages (torch, numpy, ...) to train (True/False)")
    parser.add_argument('--max_words', type=int, default=512, help="words of a text that count; the rest is cut, as the teacher cuts")
    parser.add_argument('--teacher', default='', help="'' for the packaged all-MiniLM-L6-v2 (offline), else a hub name or a local path")
    parser.add_argument('--val_frac', type=float, default=0.05, help="share of the conversations held out for val (splits.py)")
    parser.add_argument('--out', default='data/approximator')
    add_overwrite(parser)
    args = parser.parse_args()
    if args.vocab_size < 1000:
        raise SystemExit(f"--vocab_size={args.vocab_size} is too small to hold the characters and common words; use 1000 or more")
    if not 0 < args.word_frac <= 1 or not 0 < args.val_frac < 1:
        raise SystemExit("--word_frac must be in (0, 1] and --val_frac in (0, 1)")
    check_out(args.out, args.overwrite)
    t0 = time.time()
    splits = split_messages(args.val_frac)
    if args.more_text:  # train only: val and test stay chitchat's, the split every choice and table reads
        extra = more_text()
        splits['train'] += [(t, -1, 0) for t in extra]
        print(f"--more_text: {len(extra):,} docstring sentences of {', '.join(MORE_TEXT)} added to train")
    print(', '.join(f"{s}: {len(m):,} messages" for s, m in splits.items()))
    wordpieces = None
    if args.wordpieces:
        model = teachers.load(args.teacher)
        plain, cont = teachers.wordpieces(model)
        if not cont:
            raise SystemExit(f"--wordpieces=True: teacher {args.teacher or 'all-MiniLM-L6-v2'!r} has no WordPiece vocabulary; use --wordpieces=False")
        wordpieces = plain, cont, teachers.embed_tokens(model, ['##' + c for c in cont])
    build(args.out, splits, lambda texts: teachers.cached_embed(args.teacher, texts), args.teacher, args.vocab_size,
          args.skipgrams, args.word_frac, args.min_count, args.max_words, wordpieces,
          'chitchat-dataset messages' + (f" + docstrings of {', '.join(MORE_TEXT)} (train)" if args.more_text else ''))
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
