"""semantic.py: the word lists keep their promises; word ids, semantic init and the analogy evaluation, on
data/chitchat's tokenizer where it is prepared and always on a small BPE trained here on the word lists."""
import math
import random
import re

import matplotlib.pyplot as plt
import pytest
import torch
from torch.nn import functional as F

from helpers import REPO
from semantic import (ANALOGIES, CATEGORIES, RELATIONS, analogy_eval, heatmap, heatmap_words, semantic_init,
                      word_ids)
from tokenizer import Tokenizer, char_tokenizer, train_bpe

CHITCHAT = REPO / 'data' / 'chitchat' / 'tokenizer.json'
WORDS = [w for ws in CATEGORIES.values() for w in ws]
ANALOGY_WORDS = sorted({w for q in ANALOGIES for w in q})


@pytest.fixture(scope='module')
def words_tok():
    """A BPE trained on the word lists: analogy words often and category words 1-8 times each, so with 1,000
    tokens some words are one token, some split and some split ones share a first piece (all paths of word_ids)."""
    rng = random.Random(0)
    words = [w for w in WORDS for _ in range(rng.randint(1, 8))] + [w for q in ANALOGIES for w in q] * 4
    rng.shuffle(words)
    return train_bpe([' '.join(words)], 1000)


@pytest.fixture(params=['words', 'chitchat'])
def tok(request, words_tok):
    if request.param == 'words':
        return words_tok
    if not CHITCHAT.is_file():
        pytest.skip('data/chitchat is not prepared (python -m prepare.chitchat)')
    return Tokenizer.load(CHITCHAT)


def test_word_lists_keep_their_promises():
    assert len(CATEGORIES) >= 10 and len(set(WORDS)) >= 500
    assert len(WORDS) == len(set(WORDS)), "categories overlap (or a category repeats a word)"
    assert all(re.fullmatch('[a-z]+', w) for w in WORDS + ANALOGY_WORDS)
    assert not set(ANALOGY_WORDS) & set(WORDS), "an analogy word in a category would make the analogy eval flattering"
    assert len(ANALOGIES) >= 40 and len(set(ANALOGIES)) == len(ANALOGIES) and len(RELATIONS) >= 5
    assert all(len(set(q)) == 4 for q in ANALOGIES)  # d among a, b, c would be excluded from its own answer
    pair_words = [w for pairs in RELATIONS.values() for pair in pairs for w in pair]
    assert len(pair_words) == len(set(pair_words))  # parallelogram_table below relies on it


def test_word_ids_counts_add_up(tok):
    for split in ('first', 'skip'):
        ids, stats = word_ids(tok, WORDS, split)
        assert sum(stats[k] for k in ('single', 'split_first', 'skipped', 'collided')) == stats['words'] == len(WORDS)
        assert len(ids) == stats['single'] + stats['split_first'] == len(set(ids.values()))
        assert stats['skipped' if split == 'first' else 'split_first'] == 0
    single = {w: i for w, i in ids.items() if tok.decode([i]) == ' ' + w}
    assert len(single) == stats['single']
    w = next(iter(single))
    assert word_ids(tok, [w, w], 'first')[1]['collided'] == 1
    assert word_ids(tok, [w], 'first', reserved=[single[w]])[0] == {}


def test_chitchat_coverage():
    """The numbers the word lists were chosen for (the docstring of semantic.py gives them)."""
    if not CHITCHAT.is_file():
        pytest.skip('data/chitchat is not prepared')
    tok = Tokenizer.load(CHITCHAT)
    stats = word_ids(tok, WORDS, 'skip')[1]
    assert stats['single'] >= 0.8 * stats['words']
    assert analogy_eval(torch.randn(tok.vocab_size, 8), tok)['n'] >= 30


def test_semantic_init_groups_categories(tok):
    g = torch.Generator().manual_seed(0)
    table = 0.02 * torch.randn(tok.vocab_size, 32, generator=g)  # a model-like init scale
    before = table.clone()
    stats = semantic_init(table, tok, generator=torch.Generator().manual_seed(1))
    ids, _ = word_ids(tok, WORDS, 'skip')  # what the default split='skip' initialized
    assert stats['initialized'] == len(ids) > 50
    rows = torch.tensor(list(ids.values()))
    untouched = torch.ones(len(table), dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(table[untouched], before[untouched])
    assert 0.018 < table[rows].std() < 0.022, table[rows].std()  # the table's own scale: 0.02
    category = {w: k for k, ws in enumerate(CATEGORIES.values()) for w in ws}
    cat = torch.tensor([category[w] for w in ids])
    U = F.normalize(table[rows], dim=1)
    cos, same = U @ U.T, cat[:, None] == cat[None, :]
    within, between = cos[same & ~torch.eye(len(rows), dtype=torch.bool)].mean(), cos[~same].mean()
    assert within > 0.6 and abs(between) < 0.15, (within, between)  # ~0.75 = 1 - spread^2, and ~0
    again = before.clone()
    semantic_init(again, tok, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, table)


def test_semantic_init_spares_analogy_words_also_with_first_pieces(tok):
    table = torch.zeros(tok.vocab_size, 8)
    semantic_init(table, tok, generator=torch.Generator().manual_seed(0), split='first')
    analogy_ids = list(word_ids(tok, ANALOGY_WORDS, 'skip')[0].values())
    assert table[analogy_ids].abs().sum() == 0


def parallelogram_table(tok, E=128):
    """Random rows, except each relation's pairs x:y at (e_pair + f_rel)/√2 and (e_pair + g_rel)/√2 with e, f, g
    orthonormal: unit rows where b - a + c = d holds exactly for every analogy."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(tok.vocab_size, E, generator=g)
    ids, _ = word_ids(tok, ANALOGY_WORDS, 'skip')
    n_pairs = sum(map(len, RELATIONS.values()))
    basis = torch.linalg.qr(torch.randn(E, 2 * len(RELATIONS) + n_pairs, generator=g)).Q.T  # orthonormal rows
    pairs = [(r, pair) for r, rel in enumerate(RELATIONS.values()) for pair in rel]
    for k, (r, (x, y)) in enumerate(pairs):
        e = basis[2 * len(RELATIONS) + k]
        for w, f in ((x, basis[2 * r]), (y, basis[2 * r + 1])):
            if w in ids:
                table[ids[w]] = (e + f) / math.sqrt(2)
    return table


def test_analogy_eval_on_exact_and_random_tables(tok):
    exact = analogy_eval(parallelogram_table(tok), tok)
    assert exact['n'] > 0 and exact['n'] + exact['n_skipped'] == len(ANALOGIES)
    assert exact['top1_excl'] == 1.0 and exact['rank_mean'] == 1.0 and exact['distance_rel'] < 1e-5
    rand = analogy_eval(torch.randn(tok.vocab_size, 256, generator=torch.Generator().manual_seed(0)), tok)
    assert rand['top1_excl'] < 0.1 and rand['rank_mean'] > rand['candidates'] / 4
    assert 1.8 < rand['distance_rel'] < 2.2  # ||b - a + c - d|| of 4 random rows: 2 row norms
    # with a, b, c left in, a random table answers b or c every time: top1_incl alone says little
    assert all(p in q[1:3] for p, q in zip(rand['pred_incl'], rand['used']))


def brute_force(table, tok, analogies):
    """3CosAdd one candidate at a time in plain python: (predictions excl, predictions incl, ranks)."""
    rows = table.tolist()
    unit = [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in rows]
    cands = [i for i in range(tok.vocab_size) if re.fullmatch(' [a-z]+', tok.decode([i]))]
    excl, incl, ranks = [], [], []
    for q in analogies:
        pieces = [tok.encode(' ' + w) for w in q]
        if any(len(p) != 1 or p[0] not in cands for p in pieces):
            continue
        a, b, c, d = (p[0] for p in pieces)
        t = [ub - ua + uc for ua, ub, uc in zip(unit[a], unit[b], unit[c])]
        cos = {i: sum(x * y for x, y in zip(t, unit[i])) / math.sqrt(sum(x * x for x in t)) for i in cands}
        others = [i for i in cands if i not in (a, b, c)]
        incl.append(tok.decode([max(cands, key=cos.get)]).strip())
        excl.append(tok.decode([max(others, key=cos.get)]).strip())
        ranks.append(1 + sum(cos[i] > cos[d] for i in others))
    return excl, incl, ranks


def test_analogy_eval_matches_brute_force(tok):
    table = torch.randn(tok.vocab_size, 8, generator=torch.Generator().manual_seed(0))
    result = analogy_eval(table, tok)
    excl, incl, ranks = brute_force(table, tok, ANALOGIES)
    assert result['n'] == len(excl) > 0
    assert result['pred_excl'] == excl and result['pred_incl'] == incl
    assert result['rank_mean'] == pytest.approx(sum(ranks) / len(ranks))
    assert result['top1_excl'] == pytest.approx(sum(p == q[3] for p, q in zip(excl, result['used'])) / len(excl))


def test_heatmap_writes_a_png(words_tok, tmp_path):
    table = torch.randn(words_tok.vocab_size, 16)
    semantic_init(table, words_tok)
    heatmap(table, words_tok, heatmap_words(), tmp_path / 'h.png', title='test')
    image = plt.imread(tmp_path / 'h.png')
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_word_ids_skip_words_a_char_vocabulary_cannot_spell():
    tok = char_tokenizer('the cat sat on a mat')  # no 'd', no 'g'
    ids, stats = word_ids(tok, ['a', 'dog', 'cat'], split='first')
    # ' a' and ' cat' share their first piece, the space: one keeps it; 'dog' can't be spelled and is skipped
    assert 'dog' not in ids and stats['skipped'] == 1 and sum(stats[k] for k in stats if k != 'words') == 3
