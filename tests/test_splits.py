"""splits.py: one deterministic train/val/test split, and no test conversation leaks into what runs train or select on."""
import collections
import subprocess
import sys

import pytest

from helpers import ENV, REPO
from splits import SPLITS, split_conversations, split_keys, split_of

KEYS = [f'conversation-{i}' for i in range(20000)]


def test_split_is_deterministic_across_processes():
    """md5, not Python's salted hash(): another interpreter (another PYTHONHASHSEED) puts every key in the same split."""
    code = "import sys; from splits import split_of; print(''.join(split_of(f'conversation-{i}')[1] for i in range(500)))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env={**ENV, 'PYTHONHASHSEED': '123'}, cwd=REPO).stdout.strip()
    assert out == ''.join(split_of(f'conversation-{i}')[1] for i in range(500))


@pytest.mark.parametrize('val_frac,test_frac', [(0.05, 0.05), (0.1, 0.2), (0.3, 0.0)])
def test_split_shares_match_the_fractions(val_frac, test_frac):
    counts = collections.Counter(split_of(k, val_frac, test_frac) for k in KEYS)
    assert abs(counts['test'] / len(KEYS) - test_frac) < 0.01 and abs(counts['val'] / len(KEYS) - val_frac) < 0.01
    assert sum(counts.values()) == len(KEYS) and set(counts) <= set(SPLITS)


def test_growing_val_never_moves_a_test_key():
    """test takes the lowest hashes: a bigger val_frac takes keys from train only."""
    small, big = split_keys(KEYS, 0.05, 0.05), split_keys(KEYS, 0.2, 0.05)
    assert small['test'] == big['test'] and set(small['val']) < set(big['val'])


def test_no_test_conversation_occurs_in_train_or_val():
    """The split is by conversation: every test conversation's text is absent from train and val, message by
    message, for every message long enough to be its own (short ones, 'lol', 'hi', recur everywhere)."""
    convs = split_conversations()
    n = {s: len(c) for s, c in convs.items()}
    assert n['test'] > 300 and n['val'] > 300 and n['train'] > 6000
    messages = {s: {line for turns in c for _, t in turns for line in t.split('\n')} for s, c in convs.items()}
    long_test = {m for m in messages['test'] if len(m) >= 60}
    assert len(long_test) > 1000
    leaked = long_test & (messages['train'] | messages['val'])
    assert len(leaked) / len(long_test) < 0.005, sorted(leaked)[:5]  # chitchat repeats a few stock lines verbatim
    whole = lambda c: {tuple(t for _, t in turns) for turns in c}
    assert not whole(convs['test']) & (whole(convs['train']) | whole(convs['val']))
