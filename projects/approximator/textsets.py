"""
The approximator's test texts. In domain: chitchat test messages with every text that also occurs in train left out.
Out of domain, text the student never trained on and no choice was made on, each read from a file this machine has
(offline):
- shakespeare: lines of tiny shakespeare (../shared/data), speakers' names and lines of fewer than 4 words left out;
- python_docs: sentences of the docstrings of Python's own standard library, technical English prose, read from its
  source files with ast (nothing is imported).
Each set is a seeded sample, so every evaluation reads the same texts.
"""
import ast
import os
import re
import sysconfig

import numpy as np

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


def shakespeare(path, n, seed=0):
    """n lines of a tiny-shakespeare-style play text: speakers' names ('ROMEO:') and short lines left out."""
    with open(path, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    return sample([line for line in lines if len(line.split()) >= 4 and not line.endswith(':')], n, seed)


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


def python_docs(n, seed=0, root=None):
    """n sentences of the docstrings of the standard library's modules (this Python's), files in sorted order."""
    root = root or sysconfig.get_paths()['stdlib']
    texts = []
    for folder, dirs, files in os.walk(root):  # top-down: pruning dirs keeps site-packages and the tests out
        dirs[:] = sorted(d for d in dirs if d not in ('test', 'tests', 'idle_test', 'site-packages', '__pycache__'))
        for name in sorted(f for f in files if f.endswith('.py')):
            with open(os.path.join(folder, name), encoding='utf-8', errors='replace') as f:
                texts += docstring_sentences(f.read())
    return sample(texts, n, seed)
