"""
How much of semantic.py's categories and analogies a prepared dataset's tokenizer can use:
$ python -m projects.turngpt.semantic_coverage data/chitchat
"""
import sys

import torch

from semantic import ANALOGIES, analogy_eval, describe_init, semantic_init
from tokenizer import Tokenizer

tok = Tokenizer.load(f"{sys.argv[1] if len(sys.argv) > 1 else 'data/chitchat'}/tokenizer.json")
for split in ('first', 'skip'):
    print(f"split={split!r}: " + describe_init(semantic_init(torch.zeros(tok.vocab_size, 8), tok, split=split)))
result = analogy_eval(torch.randn(tok.vocab_size, 16), tok)
print(f"analogies: {result['n']} usable of {len(ANALOGIES)}, among {result['candidates']} candidate words; "
      f"unusable: {[q for q in ANALOGIES if q not in result['used']]}")
