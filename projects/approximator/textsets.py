"""
The approximator's test texts. In domain: chitchat test messages with every text that also occurs in train left out.
Out of domain, text the student never trained on and no choice was made on, each read from a file this machine has
(offline):
- shakespeare: lines of tiny shakespeare (../shared/data), speakers' names and lines of fewer than 4 words left out;
- python_docs: sentences of the docstrings of Python's own standard library, technical English prose, read from its
  source files with ast (nothing is imported).
eval.py draws a seeded sample of each, so every evaluation reads the same texts.
"""
import sysconfig

import numpy as np

from prepare.common import docstring_sentences_under
from tokenizer import words


def sample(texts, n, seed=0):
    """n of texts (all if fewer), a seeded choice, in their first order."""
    texts = list(dict.fromkeys(texts))
    if len(texts) <= n:
        return texts
    return [texts[i] for i in sorted(np.random.default_rng(seed).choice(len(texts), n, replace=False))]


def deduplicated(texts, train_texts):
    """texts with those whose words (what the student reads: lowercased words and symbols) also make a train text
    left out, and each left once: 'lol' and 'Hi!' in test are memorised, not approximated."""
    seen = {tuple(words(t)) for t in train_texts}
    out = []
    for t in texts:
        key = tuple(words(t))
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def shakespeare(path):
    """The lines of a tiny-shakespeare-style play text, speakers' names ('ROMEO:') and short lines left out."""
    with open(path, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if len(line.split()) >= 4 and not line.endswith(':')]


def python_docs():
    """The sentences of the docstrings of the standard library's modules (this Python's): never trained on, even by
    prepare.approximator --more_text, which reads installed packages' docstrings."""
    return docstring_sentences_under(sysconfig.get_paths()['stdlib'])
