"""The BERT approximator: its n-gram tokenizer (tokenizer.NgramTokenizer), the DeepSets student (model_approximator.Approximator),
its data (prepare/approximator.py, dataloader.BagSource), the teacher's cache (teacher.cached_embed), its training through
train.py, and what a user does with it (projects/approximator/embed.py, projects/approximator/eval.py, retrieval.ResponsePool). The teacher is a toy
(conftest.toy_embed) everywhere but in one test of the real one."""
import json
import shutil
import struct
from dataclasses import fields

import numpy as np
import pytest
import torch

import teacher
from projects.approximator import textsets
from projects.approximator.eval import (neighbour_items, pair_spearman, quality, recall, resampled_spearman, retrieval_task,
                                         spearman_ci, unit)
from common import MODELS, load_checkpoint
from conftest import TOY_DIM, build_toy_approximator_data, toy_embed, toy_splits
from dataloader import SOURCES, BagSource
from projects.approximator.embedder import Embedder, entry_mean_encoder, export
from helpers import REPO, read_log, run, train, train_losses
from stats import spearman
from model_approximator import Approximator, ApproximatorConfig
from prepare.approximator import choose_entries, count_entries, teacher_text
from prepare.common import docstring_sentences, read_vocab, write_vocab
from retrieval import ResponsePool
from tokenizer import NgramTokenizer, words

CONFIG = REPO / 'config' / 'approximator.py'
# config/approximator.py made tiny and short: 60 iterations, an eval every 20, a checkpoint at each
RUN_ARGS = ['--max_iters=60', '--eval_interval=20', '--learning_rate=1e-2', '--warmup_iters=0', '--lr_decay_iters=60',
            '--patience=0', '--batch_size=16', '--eval_iters=4', '--always_save_checkpoint=True']
TEXTS = list(dict.fromkeys(t for t, _, _ in toy_splits()['test']))  # held-out toy messages, distinct


def train_approx(workdir, out, *args, check=True):
    return train(workdir, out, *RUN_ARGS, *args, dataset='approximator', config=[CONFIG], check=check)


@pytest.fixture(scope='module')
def approx_data(approx_workdir):
    return approx_workdir / 'data' / 'approximator'


@pytest.fixture(scope='module')
def approx_run(approx_workdir):
    """The student distilled from the toy teacher for 60 iterations by train.py (config/approximator.py, tiny)."""
    out = approx_workdir / 'out-approx'
    train_approx(approx_workdir, out)
    return out


@pytest.fixture(scope='module')
def ckpt(approx_run):
    return load_checkpoint(str(approx_run))


# -----------------------------------------------------------------------------
# the tokenizer: a text becomes a bag of words, n-grams and skip-grams

ENTRIES = ['how', 'are', 'you', 'how are', 'how are you', 'see you', 'see you later', 'later', 'how _ you',
           'are _ are', 'you _ you', 'h', 'o', 'w', 'd', 'y', 'ho', '?']


def ngram_tok(entries=ENTRIES, max_words=512):
    return NgramTokenizer({'kind': 'ngram', 'entries': list(entries), 'max_words': max_words})


def bag(tok, text):
    """The entries of a text's bag, for reading."""
    return [tok.entries[i] for i in tok.encode(text)]


def test_words_are_lowercased_words_and_symbols():
    assert words("Don't STOP, ok?!") == ["don't", 'stop', ',', 'ok', '?', '!']
    assert words('a b c d', 2) == ['a', 'b']


def test_ngram_tokenizer_ids_and_round_trip(tmp_path):
    tok = ngram_tok()
    assert tok.vocab_size == len(ENTRIES) + 1 and tok.special('<|unk|>') == 0
    assert [tok.entries[i + 1] for i in range(len(ENTRIES))] == ENTRIES  # entry i has id i + 1
    assert tok.decode(tok.encode('How are you?')) == 'how are you | ?'
    tok.save(tmp_path / 'tok.json')
    again = NgramTokenizer.load(tmp_path / 'tok.json')
    assert again.entries == tok.entries and again.encode('see you later, how are you') == tok.encode('see you later, how are you')


@pytest.mark.parametrize('text, want', [
    ('how are you', ['how are you']),  # the trigram, not its bigram or words
    ('how are', ['how are']),
    ('how', ['how']),
    ('see you later how are you', ['see you later', 'how are you']),
    ('see you how', ['see you', 'how']),  # the trie walks past 'see you' looking for 'later', and comes back
    ('you are how', ['you', 'are', 'how']),
], ids=['trigram', 'bigram', 'word', 'two-trigrams', 'back-to-the-last-entry', 'words'])
def test_longest_match_prefers_the_longest_ngram(text, want):
    assert bag(ngram_tok(), text) == want


def test_longest_match_falls_back_when_the_trie_path_has_no_entry():
    # 'how are' is not an entry here: the trie walks how -> are, finds no entry there, and keeps 'how' alone
    tok = ngram_tok([e for e in ENTRIES if e != 'how are'])
    assert bag(tok, 'how are') == ['how', 'are']
    assert bag(tok, 'how are how are you') == ['how', 'are', 'how are you', 'are _ are']


@pytest.mark.parametrize('text, want', [
    ('how d you', ['how', 'd', 'you', 'how _ you']),  # w1 ? w3 with the skip-gram in the vocabulary
    ('how you you you', ['how', 'you', 'you', 'you', 'how _ you', 'you _ you']),  # every position k
    ('how are you', ['how are you']),  # inside the matched trigram: not added
    ('how are you how are you', ['how are you', 'how are you']),
    ('are how are you', ['are', 'how are you', 'are _ are']),  # straddles the trigram, isn't inside it: added
    ('how how you', ['how', 'how', 'you', 'how _ you']),
], ids=['gap', 'each-position', 'inside-trigram', 'inside-two-trigrams', 'straddling', 'after-a-word'])
def test_skipgrams_are_found_but_not_inside_a_matched_trigram(text, want):
    assert bag(ngram_tok(), text) == want


def test_skipgram_is_added_over_a_bigram_and_a_word():
    # without the trigram entry, 'how are' + 'you' tiles the text and 'how _ you' adds what the tiling misses
    tok = ngram_tok([e for e in ENTRIES if e != 'how are you'])
    assert bag(tok, 'how are you') == ['how are', 'you', 'how _ you']


@pytest.mark.parametrize('word, pieces', [
    ('howdy', ['how', 'd', 'y']),  # the longest entries that spell it, left to right
    ('hod', ['ho', 'd']),
    ('hzw', ['h', '<|unk|>', 'w']),  # a character no entry spells: <|unk|>
    ('😀', ['<|unk|>']),
    ('zz', ['<|unk|>', '<|unk|>']),
])
def test_unknown_word_backs_off_to_pieces_that_spell_it(word, pieces):
    assert bag(ngram_tok(), word) == pieces


@pytest.mark.parametrize('word, pieces', [
    ('module', ['mod', '##ule']),  # after the first piece, the teacher's continuations, longest first
    ('modules', ['mod', '##ules']),
    ('moduled', ['mod', '##ule', '##d']),
    ('ule', ['u', '##le']),  # a word never starts with a continuation ('##ule'), its second piece may
    ('modxle', ['mod', 'x', '##le']),  # no continuation fits 'xle': the other entries do, then continuations again
])
def test_unknown_word_backs_off_to_the_teachers_wordpieces(word, pieces):
    tok = NgramTokenizer({'kind': 'ngram', 'entries': ['mo', 'du', 'le', 'mod', 'u', 'l', 'e', 'x', 'd',
                                                        '##ule', '##ules', '##le', '##d']})
    assert bag(tok, word) == pieces
    assert bag(ngram_tok(['mo', 'du', 'le', 'u', 'l', 'e', 'x', 'd', 'mod']), 'module') == ['mod', 'u', 'le']  # none: spelled


def test_no_word_is_ever_dropped():
    # random texts of known, unknown and unspellable words: the bag's tiling (its entries but the skip-grams) spells
    # the text character for character, <|unk|> standing for one character that no single-character entry spells
    rng = np.random.default_rng(0)
    pool = ['how', 'are', 'you', 'see', 'later', 'howdy', 'hzw', 'dowdy', 'qq', '?', '😀', 'oh', 'sea']
    tok = ngram_tok()
    chars = {e for e in ENTRIES if len(e) == 1}
    unks = 0
    for _ in range(300):
        ws = [str(w) for w in rng.choice(pool, size=rng.integers(0, 12))]
        pieces = [tok.entries[i] for i in tok.encode(' '.join(ws)) if ' _ ' not in tok.entries[i]]
        spelled, text = ''.join('\0' if p == '<|unk|>' else p.replace(' ', '') for p in pieces), ''.join(ws)
        assert len(spelled) == len(text) and all(s == t or s == '\0' and t not in chars for s, t in zip(spelled, text)), ws
        unks += spelled.count('\0')
    assert unks > 0


def test_only_the_first_max_words_count():
    tok = ngram_tok(max_words=3)
    assert bag(tok, 'how are you how are you') == ['how are you']
    assert bag(tok, 'later how d you') == ['later', 'how', 'd']  # 'you' is past the cut: no 'how _ you' either
    assert bag(ngram_tok(max_words=3), 'a b c ' * 1000) == bag(ngram_tok(), 'a b c')


# -----------------------------------------------------------------------------
# the student: DeepSets over the bag, attention-pooled

POOLINGS = ['mean', 'attention', 'self_attention']
# four bags, -1-padded: unk (0), a repeated entry, a full row, an empty bag
BAGS = torch.tensor([[3, 5, 0, 7, -1, -1], [1, 2, -1, -1, -1, -1], [9, 9, 4, 11, 12, 13], [-1, -1, -1, -1, -1, -1]])


def student(pooling, vocab_size=40, dim=8, seed=0, **kw):
    """A small random student in eval mode, its entries' vectors and its unk and sink random too."""
    torch.manual_seed(seed)
    m = Approximator(ApproximatorConfig(vocab_size=vocab_size, block_size=32, teacher_dim=dim, n_embd=16, n_layer=2,
                                        n_head=2, pooling=pooling, **kw))
    with torch.no_grad():
        m.vectors.copy_(torch.randn(vocab_size, dim).half())
        m.unk.normal_()
        m.sink.normal_()
    return m.eval()


@pytest.mark.parametrize('pooling', POOLINGS)
def test_student_is_permutation_invariant_and_ignores_padding(pooling):
    m = student(pooling)
    with torch.no_grad():
        base = m.embed(BAGS)
        assert base.shape == (4, 8) and torch.isfinite(base).all()
        assert (base[0] - base[1]).abs().max() > 1e-3  # not a constant
        g = torch.Generator().manual_seed(0)
        for _ in range(5):  # each row its own order, padding moved into the middle and to the front
            perm = torch.stack([torch.randperm(BAGS.size(1), generator=g) for _ in range(len(BAGS))])
            assert torch.allclose(m.embed(BAGS.gather(1, perm)), base, atol=1e-5)
        padded = torch.cat([torch.full((4, 3), -1), BAGS, torch.full((4, 5), -1)], dim=1)
        assert torch.allclose(m.embed(padded), base, atol=1e-5)
        assert torch.allclose(m.embed(BAGS[:2, :4]), base[:2], atol=1e-5)  # no padding at all
        twice, once = m.embed(torch.tensor([[9, 9, 4], [9, 4, -1]]))
        assert (twice - once).abs().max() > 1e-4  # a bag is a multiset: a repeated entry counts twice
        changed = BAGS.clone()
        changed[1, 0] = 30
        assert (m.embed(changed)[1] - base[1]).abs().max() > 1e-4  # a real element counts


@pytest.mark.parametrize('pooling', POOLINGS)
def test_unk_is_learned_and_the_empty_bag_is_the_sink(pooling):
    m = student(pooling)
    with torch.no_grad():
        base = m.embed(BAGS)
        m.unk.add_(1.0)
        after = m.embed(BAGS)
        assert (after[0] - base[0]).abs().max() > 1e-4  # row 0 holds <|unk|> (id 0)
        assert torch.allclose(after[1:], base[1:], atol=1e-6)  # id 0 under padding is not <|unk|>
        m.sink.add_(1.0)
        assert (m.embed(BAGS)[3] - base[3]).abs().max() > 1e-4  # what an empty bag gets


@pytest.mark.parametrize('pooling', ['mean', 'attention'])
def test_tables_give_the_full_path_output(pooling):
    m = student(pooling)
    with torch.no_grad():
        full = m.embed(BAGS)
        assert m.tables() is not None
        assert torch.allclose(m.embed(BAGS), full, atol=1e-6)
        m.phi[0].weight.mul_(2)  # the tables are looked up: phi is not run again ...
        assert torch.allclose(m.embed(BAGS), full, atol=1e-6)
    m.train()  # ... until train() drops them
    assert m._tables is None
    with torch.no_grad():
        assert (m.eval().embed(BAGS) - full).abs().max() > 1e-4


@pytest.mark.parametrize('pooling', ['mean', 'attention'])
def test_flat_sums_equal_the_padded_path(pooling):
    # embed_flat pools by embedding_bag sums of e^(logit - top)-weighted rows, no padding: the same vectors as embed
    m = student(pooling)
    with torch.no_grad():
        m.query.weight.mul_(5) if m.query is not None else None  # sharper attention, far from uniform
        m.tables()
        want = m.embed(BAGS)
        rows = [r[r >= 0] for r in BAGS]
        offsets = torch.tensor([0] + [len(r) for r in rows[:-1]]).cumsum(0)
        assert torch.allclose(m.embed_flat(torch.cat(rows), offsets), want, atol=1e-5)


def test_flat_sums_refuse_logits_that_would_underflow():
    m = student('attention')
    with torch.no_grad():
        m.tables()
        h, logits, sink_h, sink_logits = m._tables
        logits[0, 0] = sink_logits[0] - 100.0  # e^-100 rounds to zero in float32: that weight would be lost
        assert m.sum_tables(h, logits, sink_h, sink_logits) is None


def test_learned_entry_vectors_are_bagged_and_folded_into_the_tables():
    if 'entry_dim' not in {f.name for f in fields(ApproximatorConfig)}:
        pytest.skip('this version has no learned entry vectors (entry_dim)')
    m = student('attention', entry_dim=4)
    assert not m.entry.weight.any()  # zero at the start: the student begins from the teacher's vectors alone
    assert m.get_num_params() == sum(p.numel() for p in m.parameters()) - m.entry.weight.numel()
    with torch.no_grad():
        m.entry.weight.normal_()
        base = m.embed(BAGS)
        perm = torch.stack([torch.randperm(BAGS.size(1), generator=torch.Generator().manual_seed(r)) for r in range(4)])
        assert torch.allclose(m.embed(BAGS.gather(1, perm)), base, atol=1e-5)
        m.entry.weight[3] += 1  # entry 3 is in row 0 only
        moved = m.embed(BAGS)
        assert (moved[0] - base[0]).abs().max() > 1e-4 and torch.allclose(moved[1:], base[1:], atol=1e-6)
        m.tables()
        assert torch.allclose(m.embed(BAGS), moved, atol=1e-6)


def test_the_context_layer_starts_as_a_bag_then_reads_neighbours_and_is_tabled():
    m = student('attention', context=4, context_window=1)
    with torch.no_grad():
        reversed_ = torch.tensor([[7, 0, 5, 3, -1, -1], [2, 1, -1, -1, -1, -1], [13, 12, 11, 4, 9, 9], [-1] * 6])
        assert torch.allclose(m.embed(reversed_), m.embed(BAGS), atol=1e-5)  # zero at the start: order doesn't count
        m.from_context.weight.normal_()
        base = m.embed(BAGS)
        assert (m.embed(reversed_)[:3] - base[:3]).abs().max() > 1e-4  # now it does: neighbours differ
        swap_far = BAGS.clone()
        swap_far[2, [0, 5]] = swap_far[2, [5, 0]]  # 9 and 13 trade places: the neighbours of both change
        assert (m.embed(swap_far)[2] - base[2]).abs().max() > 1e-4
        padded = torch.cat([BAGS, torch.full((4, 3), -1)], dim=1)
        assert torch.allclose(m.embed(padded), base, atol=1e-5)  # padding past the end reads as nothing
        # brute force for row 1 (entries 1, 2): GELU(conv of the context vectors), zeros beyond the bag
        c = m.to_context(m.features(BAGS[1:2, :2])[0])[0]
        w, b = m.context.weight, m.context.bias  # (context, context, 3): taps for the left neighbour, self, right
        want = torch.stack([torch.nn.functional.gelu(b + w[:, :, 1] @ c[0] + w[:, :, 2] @ c[1]),
                            torch.nn.functional.gelu(b + w[:, :, 0] @ c[0] + w[:, :, 1] @ c[1])])
        assert torch.allclose(m.neighbours(c[None], torch.ones(1, 2, dtype=torch.bool))[0], want, atol=1e-5)
        m.tables()
        assert torch.allclose(m.embed(BAGS), base, atol=1e-5)
        m.phi[0].weight.mul_(2)  # looked up, not run again
        assert torch.allclose(m.embed(BAGS), base, atol=1e-5)


def test_context_logits_make_weights_depend_on_neighbours_and_are_tabled():
    m = student('attention', context=3, context_window=1, context_logits=True)
    with torch.no_grad():
        base = m.embed(BAGS)
        m.context_logit.weight.normal_()  # from_context stays zero: only the weights can move
        moved = m.embed(BAGS)
        assert (moved[[0, 2]] - base[[0, 2]]).abs().max() > 1e-4
        assert torch.allclose(moved[3], base[3], atol=1e-6)  # the empty bag: the sink alone, no neighbours
        m.tables()
        assert m._sums is None and m.can_embed_flat()  # no per-entry sums, but per-element weights serve
        assert torch.allclose(m.embed(BAGS), moved, atol=1e-5)
    with pytest.raises(ValueError, match='context_logits'):
        student('mean', context=3, context_logits=True)


@pytest.mark.parametrize('pooling,logits', [('mean', False), ('attention', False), ('attention', True)])
def test_flat_sums_with_context_equal_the_padded_path(pooling, logits):
    # each element's neighbours in the flat layout are those of its own bag: bags of 1, an empty one, a long one
    m = student(pooling, context=3, context_window=2, context_logits=logits)
    bags = torch.tensor([[3, 5, 0, 7, -1, -1, -1], [8, -1, -1, -1, -1, -1, -1], [-1] * 7, [9, 9, 4, 11, 12, 13, 2]])
    with torch.no_grad():
        m.from_context.weight.normal_()
        if logits:  # shifts far beyond float32's e^88: the per-bag steadying must hold
            m.context_logit.weight.normal_(std=40.0)
        m.query.weight.mul_(5) if m.query is not None else None
        m.tables()
        want = m.embed(bags)
        rows = [r[r >= 0] for r in bags]
        offsets = torch.tensor([0] + [len(r) for r in rows[:-1]]).cumsum(0)
        assert torch.allclose(m.embed_flat(torch.cat(rows), offsets), want, atol=1e-5)


def test_eval_mode_keeps_the_tables():
    # model.eval() is train(False): the weights are not about to change, so the tables should stay. export() puts
    # its graph in eval mode (and torch.onnx.export does too), so without this the exported graph runs phi, not lookups
    m = student('attention')
    m.tables()
    m.eval()
    assert m._tables is not None


def test_self_attention_has_no_tables():
    with pytest.raises(ValueError, match='self_attention'):
        student('self_attention').tables()


def test_config_rejects_an_unknown_pooling_and_a_width_not_split_by_heads():
    with pytest.raises(ValueError, match='pooling'):
        ApproximatorConfig(pooling='max')
    with pytest.raises(ValueError, match='multiple of n_head'):
        ApproximatorConfig(n_embd=30, n_head=4)


def test_vectors_are_a_frozen_buffer_and_the_loss_is_the_weighted_sum():
    m = student('attention', mse_weight=0.5, cos_weight=2.0, sim_weight=3.0)
    assert MODELS['approximator'] == (ApproximatorConfig, Approximator)
    assert 'vectors' in dict(m.named_buffers()) and 'vectors' not in dict(m.named_parameters())
    assert m.vectors.dtype == torch.float16 and 'vectors' in m.state_dict()
    assert m.get_num_params() == sum(p.numel() for p in m.parameters())
    target = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    pred, none = m(BAGS)
    assert none is None and pred.shape == (4, 8)
    pred, loss = m(BAGS, target)
    s, t = torch.nn.functional.normalize(pred, dim=-1), torch.nn.functional.normalize(target, dim=-1)
    off = ~torch.eye(4, dtype=torch.bool)
    want = (0.5 * (pred - target).pow(2).sum(-1).mean() + 2.0 * (1 - (s * t).sum(-1)).mean()
            + 3.0 * (s @ s.T - t @ t.T)[off].pow(2).mean())
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    vectors = m.vectors.clone()
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert torch.equal(m.vectors, vectors) and m.unk.grad is not None and m.unk.grad.abs().sum() > 0


def test_eval_metrics_are_cosine_and_spearman_of_pairwise_cosines():
    m = student('attention')
    ids = torch.cat([BAGS[:3], torch.where(BAGS >= 0, (BAGS + 13) % 40, BAGS)[:3], torch.tensor([[5] + [-1] * 5, [-1] * 6])])
    with torch.no_grad():
        pred = m.embed(ids)
    perfect = BagSource.eval_metrics(pred, ids, 3 * pred)  # the same direction, another norm
    assert perfect['cosine'] == pytest.approx(1.0, abs=1e-5) and perfect['spearman'] == pytest.approx(1.0, abs=1e-9)
    other = BagSource.eval_metrics(pred, ids, torch.randn(len(ids), 8, generator=torch.Generator().manual_seed(0)))
    assert other['cosine'] < 0.9 and other['spearman'] < 0.9


def ranks(x):
    return np.argsort(np.argsort(x)).astype(float)


def test_spearman_is_pearson_of_ranks():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    want = np.corrcoef(ranks(a), ranks(b))[0, 1]
    assert spearman(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(want, abs=1e-9)
    assert spearman(torch.from_numpy(a), torch.from_numpy(np.exp(a))) == pytest.approx(1.0)  # monotone
    assert spearman(torch.from_numpy(a), torch.from_numpy(-a ** 3)) == pytest.approx(-1.0)


# -----------------------------------------------------------------------------
# the data: prepare/approximator.py and dataloader.BagSource

def test_vocab_round_trips_through_hdf5(tmp_path):
    entries = [('héllo', 'word', 5), ('how are you', 'ngram', 3), ('how _ you', 'skipgram', 2), ('😀', 'char', 1)]
    vectors = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    path = str(tmp_path / 'vocab.h5')
    write_vocab(path, entries, vectors, 'some/teacher')
    got_entries, kinds, counts, got = read_vocab(path)
    assert got_entries == [e for e, _, _ in entries] and kinds == [k for _, k, _ in entries]
    assert counts.tolist() == [5, 3, 2, 1]
    assert got.dtype == np.float16 and np.array_equal(got, vectors.astype(np.float16))
    assert [p.name for p in tmp_path.iterdir()] == ['vocab.h5']  # no .tmp left behind


def test_count_and_choose_entries():
    texts = ['how are you', 'how are you', 'how is it', 'zebra']
    counts = count_entries(texts)
    assert counts['word']['how'] == 3 and counts['ngram']['how are'] == 2 and counts['ngram']['how are you'] == 2
    assert counts['skipgram']['how _ you'] == 2 and counts['skipgram']['how _ it'] == 1 and counts['char']['z'] == 1
    assert not count_entries(texts, skipgrams=False)['skipgram']
    chosen = choose_entries(counts, vocab_size=30, word_frac=0.5, min_count=2)
    kinds = {e: k for e, k, _ in chosen}
    assert {ch for t in texts for ch in t if ch != ' '} <= {e for e, k in kinds.items() if k == 'char'}  # every char
    assert all(n >= 2 for e, k, n in chosen if k != 'char')  # min_count
    assert kinds['how'] == 'word' and kinds['how _ you'] == 'skipgram' and 'zebra' not in kinds and 'how _ it' not in kinds
    assert len(chosen) <= 30
    assert teacher_text('how _ you') == 'how you' and teacher_text('see you later') == 'see you later'


def test_build_adds_the_teachers_wordpieces_with_their_own_vectors(tmp_path):
    cont_vectors = np.eye(TOY_DIM, dtype=np.float32)[:2]
    meta = build_toy_approximator_data(tmp_path / 'wp', wordpieces=(['how', 'zebra'], ['ing', 'zz'], cont_vectors))
    entries, kinds, _, vectors = read_vocab(str(tmp_path / 'wp' / 'vocab.h5'))
    where = {e: i for i, e in enumerate(entries)}
    assert kinds[where['zebra']] == 'teacher_word' and kinds[where['how']] != 'teacher_word'  # chat's 'how' stays
    assert entries[-2:] == ['##ing', '##zz'] and np.allclose(vectors[-2:], cont_vectors, atol=1e-3)
    assert np.allclose(vectors[where['zebra']], toy_embed(['zebra'])[0], atol=2e-3)  # a word: the teacher embeds its text
    assert meta['wordpieces'] and meta['entry_kinds']['piece'] == 2 and meta['vocab_size'] == len(entries) + 1
    tok = NgramTokenizer(json.loads((tmp_path / 'wp' / 'tokenizer.json').read_text()))
    assert bag(tok, 'zebrazz') == ['zebra', '##zz']


def test_more_text_reads_installed_packages_and_never_the_test_sets_stdlib(capsys):
    import sys
    from prepare.approximator import MORE_TEXT, more_text
    assert not set(MORE_TEXT) & sys.stdlib_module_names  # the stdlib's docstrings are an out-of-domain test set
    got = more_text(('json', 'no_such_package_xyz'))
    assert got and len(got) == len(set(got)) and all(t.endswith('.') and len(t.split()) >= 6 for t in got)
    assert 'no_such_package_xyz is not installed' in capsys.readouterr().out


def test_choose_entries_fills_the_vocabulary_by_frequency():
    counts = count_entries([t for t, _, _ in toy_splits()['train']])
    chosen = choose_entries(counts, vocab_size=100, word_frac=0.4, min_count=2)
    assert len(chosen) == 100 and len({e for e, _, _ in chosen}) == 100  # vocab_size entries, the corpus has more
    chars = {e for e, k, _ in chosen if k == 'char'}
    assert chars == set(counts['char'])
    chosen_words = [e for e, k, _ in chosen if k == 'word']
    assert 0 < len(chars) + len(chosen_words) <= max(len(chars), 0.4 * 100)  # words take word_frac of it at most
    assert chosen_words == [w for w, _ in counts['word'].most_common() if w not in chars][:len(chosen_words)]
    grams = {e: n for e, k, n in chosen if k in ('ngram', 'skipgram')}
    left = [n for k in ('ngram', 'skipgram') for e, n in counts[k].items() if e not in grams]
    assert grams and min(grams.values()) >= max(left)  # the most frequent n-grams and skip-grams
    assert all(counts['ngram' if ' _ ' not in e else 'skipgram'][e] == n for e, n in grams.items())


def test_build_writes_bags_targets_and_vectors_that_agree(approx_data):
    meta = json.loads((approx_data / 'meta.json').read_text())
    tok = NgramTokenizer.load(approx_data / 'tokenizer.json')
    entries, kinds, counts, vectors = read_vocab(str(approx_data / 'vocab.h5'))
    assert tok.entries[1:] == entries and meta['vocab_size'] == tok.vocab_size == len(entries) + 1
    assert meta['teacher_dim'] == TOY_DIM and vectors.shape == (len(entries), TOY_DIM)
    assert np.allclose(vectors, toy_embed([teacher_text(e) for e in entries]), atol=2e-3)  # each entry's own vector
    assert {'char', 'word', 'ngram', 'skipgram'} <= set(kinds)
    for split, messages in toy_splits().items():
        ids, offsets = np.load(approx_data / f'{split}_ids.npy'), np.load(approx_data / f'{split}_offsets.npy')
        targets = np.load(approx_data / f'{split}_teacher.npy')
        assert json.loads((approx_data / f'{split}_messages.json').read_text()) == [list(m) for m in messages]
        assert len(offsets) == len(messages) + 1 and offsets[-1] == len(ids) == meta[f'{split}_elements']
        assert all(ids[offsets[i]:offsets[i + 1]].tolist() == tok.encode(t) for i, (t, _, _) in enumerate(messages))
        assert targets.dtype == np.float16 and np.allclose(targets, toy_embed([t for t, _, _ in messages]), atol=2e-3)


def rows(ids):
    """The bags of a batch, padding stripped."""
    return [r[r >= 0].tolist() for r in ids]


def test_bag_source_pads_and_cuts_each_bag(approx_data):
    src = SOURCES['bags'](str(approx_data), 4, 32, 'cpu', seed=0)
    ids, offsets, teach = (np.load(approx_data / f'train_{n}.npy') for n in ('ids', 'offsets', 'teacher'))
    bags = [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    x, y = src.get_batch('train')
    assert x.dtype == torch.int64 and y.dtype == torch.float32 and x.shape[0] == 32 and y.shape == (32, TOY_DIM)
    assert x.shape[1] == max(len(r) for r in rows(x)) <= 4  # padded to the batch's longest bag, block_size at most
    cut = 0
    for row, target, kept in zip(x, y, rows(x)):
        assert (row[len(kept):] == -1).all()  # padding after the bag
        same = [i for i in range(len(bags)) if np.array_equal(teach[i].astype(np.float32), target.numpy())]
        assert any(bags[i][:4] == kept for i in same)  # the message's bag, its first block_size entries
        cut += all(len(bags[i]) > 4 for i in same)
    assert cut > 0  # some bags were longer than block_size


def test_two_ranks_together_draw_the_one_process_batch(approx_data):
    one = BagSource(str(approx_data), 16, 8, 'cpu', seed=5)
    ranks_ = [BagSource(str(approx_data), 16, 4, 'cpu', seed=5, rank=r, world_size=2) for r in (0, 1)]
    for split in ('train', 'val', 'train'):
        x, y = one.get_batch(split)
        parts = [s.get_batch(split) for s in ranks_]
        assert rows(x) == rows(parts[0][0]) + rows(parts[1][0])
        assert torch.equal(y, torch.cat([parts[0][1], parts[1][1]]))
    assert len({tuple(r) for r in rows(x)}) > 1


def test_bag_source_state_and_model_init(approx_data):
    src = BagSource(str(approx_data), 16, 8, 'cpu')
    state = src.state_dict()
    a = src.get_batch('train')
    src.load_state_dict(state)
    b = src.get_batch('train')
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert src.model_args == {'teacher_dim': TOY_DIM, 'teacher': ''}
    m = Approximator(ApproximatorConfig(vocab_size=src.tokenizer.vocab_size, teacher_dim=TOY_DIM, n_embd=16, n_head=2))
    src.init_model(m)
    vectors = read_vocab(str(approx_data / 'vocab.h5'))[3]
    assert torch.equal(m.vectors[1:], torch.from_numpy(vectors)) and not m.vectors[0].any()


def test_bag_source_refuses_what_it_cannot_read(approx_data, tmp_path):
    with pytest.raises(SystemExit, match='prepare them first'):
        BagSource(str(tmp_path), 16, 8, 'cpu')
    with pytest.raises(SystemExit, match='no order to read backward'):
        BagSource(str(approx_data), 16, 8, 'cpu', direction='backward')


# -----------------------------------------------------------------------------
# the teacher's cache

def test_cached_embed_reuses_its_cache_and_keeps_the_order(tmp_path, monkeypatch):
    calls = {'load': 0, 'embedded': [], 'normalize': set()}

    class Model:
        def get_embedding_dimension(self):
            return TOY_DIM

    def load(name='', device='cpu'):
        calls['load'] += 1
        return Model()

    def embed(model, texts, batch_size=64, normalize=True):
        calls['embedded'] += list(texts)
        calls['normalize'].add(normalize)
        return 3 * toy_embed(texts)  # raw: not unit length
    monkeypatch.setattr(teacher, 'load', load)
    monkeypatch.setattr(teacher, 'embed', embed)
    path = str(tmp_path / 'cache' / 'toy.h5')
    texts = ['b', 'a', 'b', 'c', 'see you later']
    v = teacher.cached_embed('toy', texts, path=path, chunk=2)
    assert calls['embedded'] == ['b', 'a', 'c', 'see you later'] and calls['load'] == 1  # each new text once
    assert calls['normalize'] == {False}  # the raw vectors are cached
    assert v.dtype == np.float32 and np.allclose(v, 3 * toy_embed(texts), atol=3e-3)  # in the texts' order
    again = teacher.cached_embed('toy', ['c', 'a', 'see you later', 'a'], path=path, chunk=2)
    assert calls['load'] == 1 and len(calls['embedded']) == 4  # nothing new: no teacher at all
    assert np.array_equal(again, v[[3, 1, 4, 1]])
    more = teacher.cached_embed('toy', ['d', 'a'], path=path, chunk=2)
    assert calls['embedded'][4:] == ['d'] and np.allclose(more, 3 * toy_embed(['d', 'a']), atol=3e-3)
    assert teacher.cached_embed('toy', [], path=path).shape == (0, TOY_DIM)
    import h5py
    with h5py.File(path) as f:
        assert list(f['text'].asstr()[:]) == ['b', 'a', 'c', 'see you later', 'd'] and f['vec'].dtype == np.float16


def test_cache_path_is_one_file_per_teacher():
    assert teacher.cache_path('').endswith('all-MiniLM-L6-v2.h5')
    a, b = teacher.cache_path('sentence-transformers/msmarco-distilbert-dot-v5'), teacher.cache_path(teacher.CLS)
    assert a != b and a.startswith('data/teacher_cache/') and '/' not in a.removeprefix('data/teacher_cache/')


def test_real_teacher_cache_and_cls_teacher(tmp_path):
    # the packaged all-MiniLM-L6-v2 (a few seconds to load): the cache holds its raw vectors, the CLS teacher differs
    texts = ['any plans for the weekend?', 'good night', 'i like tea']
    v = teacher.cached_embed('', texts, path=str(tmp_path / 'c.h5'))
    raw = teacher.embed(teacher.load(''), texts, normalize=False)
    assert v.shape == (3, 384) and np.allclose(v, raw, atol=1e-3)
    assert teacher.CLS == 'minilm-cls'
    cls = teacher.embed(teacher.load(teacher.CLS), texts)
    assert cls.shape == (3, 384) and np.allclose(np.linalg.norm(cls, axis=1), 1, atol=1e-5)
    assert ((cls * unit(raw)).sum(1) < 0.999).all()  # another pooling, another vector


def test_real_teachers_own_tokens_alone_are_its_vectors_of_their_text():
    m = teacher.load('')
    plain, cont = teacher.wordpieces(m)
    assert 'module' in plain and 'ule' in cont and all(c.isalnum() for c in cont)
    got = teacher.embed_tokens(m, ['module', 'good', '##ule'])
    assert np.allclose(got[:2], teacher.embed(m, ['module', 'good'], normalize=False), atol=1e-5)  # [CLS] t [SEP], as a text
    assert float(unit(got[2:])[0] @ unit(teacher.embed(m, ['ule'], normalize=False))[0]) < 0.99  # '##ule' is not 'ule'


# -----------------------------------------------------------------------------
# training: train.py distills the toy teacher

def evals(out):
    return [r for r in read_log(out) if 'val_loss' in r]


def test_distillation_lowers_the_loss_and_logs_quality(approx_run, ckpt, approx_data):
    rows_ = evals(approx_run)
    assert [r['iter'] for r in rows_] == [0, 20, 40, 60]
    assert all(-1 <= r['val_cosine'] <= 1 and -1 <= r['val_spearman'] <= 1 for r in rows_)
    first, last = rows_[0], rows_[-1]
    assert last['val_loss'] < 0.5 * first['val_loss'] and last['train_loss'] < 0.5 * first['train_loss']
    assert last['val_cosine'] > first['val_cosine'] + 0.3 and last['val_cosine'] > 0.5
    assert last['val_spearman'] > first['val_spearman']
    assert ckpt['model_kind'] == 'approximator' and ckpt['model_args']['teacher_dim'] == TOY_DIM
    assert ckpt['model_args']['teacher'] == '' and ckpt['model_args']['pooling'] == 'attention'
    vectors = torch.from_numpy(read_vocab(str(approx_data / 'vocab.h5'))[3])
    assert torch.equal(ckpt['model']['vectors'][1:], vectors)  # the teacher's entry vectors, never trained


def test_resume_continues_exactly(approx_workdir, approx_run, tmp_path):
    train_approx(approx_workdir, tmp_path, '--max_iters=20')
    train_approx(approx_workdir, tmp_path, '--init_from=resume')
    resumed, straight = train_losses(tmp_path), train_losses(approx_run)
    assert sorted(resumed) == list(range(1, 61))
    assert np.allclose([resumed[i] for i in range(21, 61)], [straight[i] for i in range(21, 61)], rtol=1e-5, atol=0)
    a, b = evals(tmp_path)[-1], evals(approx_run)[-1]
    assert a['val_loss'] == pytest.approx(b['val_loss'], rel=1e-5) and a['val_spearman'] == pytest.approx(b['val_spearman'], abs=1e-5)


@pytest.mark.parametrize('args, message', [
    (["--model_args={'pooling': 'attention', 'entry_dim': '64'}"], "model_args['entry_dim'] expects int, got str '64'"),
    (["--model_args={'pooling': 'mean'}", '--init_from={run}'], "conflicts with {run}'s pooling='attention'"),
    (["--model_args={'pooling': 'attention', 'sim_weight': -1.0}"], "sim_weight must be >= 0, got -1.0"),
], ids=['wrong-type', 'finetune-other-pooling', 'negative-weight'])
def test_model_args_are_checked_in_one_line(approx_workdir, approx_run, tmp_path, args, message):
    # the approximator's own fields come through model_args, checked as the config keys are
    args = [a.replace('{run}', str(approx_run)) for a in args]
    proc = train_approx(approx_workdir, tmp_path / 'out', *args, check=False)
    assert proc.returncode == 1 and message.replace('{run}', str(approx_run)) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'out').exists()


def expected_stop(rows_, patience):
    """The iteration the log's val losses should have stopped the run at: the first eval `patience` evals after the
    best one."""
    best, stale = float('inf'), 0
    for r in rows_:
        stale = 0 if r['val_loss'] < best else stale + 1
        best = min(best, r['val_loss'])
        if stale >= patience:
            return r['iter']
    return None


def test_patience_stops_the_run_and_survives_a_resume(approx_workdir, tmp_path):
    # a learning rate too small to move a float32 weight: the val loss never improves after iter 0
    args = ['--max_iters=100', '--eval_interval=2', '--learning_rate=1e-12', '--decay_lr=False', '--patience=3']
    proc = train_approx(approx_workdir, tmp_path / 'a', *args)
    log = read_log(tmp_path / 'a')
    stop = expected_stop(evals(tmp_path / 'a'), 3)
    assert stop == 6 and log[-1] == {'iter': stop, 'early_stop': 3} and 'early stop at iter 6' in proc.stdout
    assert max(r['iter'] for r in log if 'loss' in r) == stop  # no training after it
    # stopped at 4 (2 stale evals) and resumed: the count goes on, so the run stops at 6 again, not at 10
    train_approx(approx_workdir, tmp_path / 'b', *args, '--max_iters=4')
    assert load_checkpoint(str(tmp_path / 'b'))['stale_evals'] == 2
    train_approx(approx_workdir, tmp_path / 'b', *args, '--init_from=resume')
    assert read_log(tmp_path / 'b')[-1] == {'iter': 6, 'early_stop': 3}


def png_width(path):
    with open(path, 'rb') as f:
        return struct.unpack('>I', f.read(24)[16:20])[0]


def test_plot_draws_a_quality_panel_for_val_metrics(approx_run, tmp_path):
    plain = tmp_path / 'plain'
    plain.mkdir()
    with open(plain / 'log.jsonl', 'w') as f:
        for row in read_log(approx_run):  # the same run without its quality metrics
            f.write(json.dumps({k: v for k, v in row.items() if k not in ('val_cosine', 'val_spearman')}) + '\n')
    for out, name in ((approx_run, 'quality.png'), (plain, 'plain.png')):
        proc = run('plot.py', out, f'--out={tmp_path / name}')
        assert proc.returncode == 0, proc.stderr
    assert png_width(tmp_path / 'quality.png') == 1.5 * png_width(tmp_path / 'plain.png')  # three panels, not two


# -----------------------------------------------------------------------------
# projects/approximator/embed.py: what a user does with the student

@pytest.fixture
def emb(ckpt):
    return Embedder(ckpt)


def test_embedder_refuses_another_kind():
    with pytest.raises(SystemExit, match='embeds with an approximator'):
        Embedder({'model_kind': 'gpt', 'path': 'some/ckpt.pt'})


@pytest.mark.parametrize('text', ['xylophone quizzically jazz', '🦜🦜 ¿¿', '', '   ', 'how are you ' * 3334],
                         ids=['unknown-words', 'unknown-characters', 'empty', 'blank', '10000-words'])
def test_any_text_gets_a_finite_unit_vector(emb, text):
    v = emb.embed([text])
    assert v.shape == (1, TOY_DIM) and np.isfinite(v).all() and np.linalg.norm(v) == pytest.approx(1, abs=1e-5)
    raw = emb.embed([text], normalize=False)
    assert np.isfinite(raw).all() and np.linalg.norm(raw) > 0
    if text.strip():
        assert len(emb.tok.encode(text)) > 0  # never an empty bag for a text with characters
    if len(text) > 1000:  # only the first max_words words count
        first = ' '.join(words(text)[:emb.tok.max_words])
        assert np.allclose(emb.embed([first]), v, atol=1e-6)


def test_unknown_words_still_move_the_vector(emb):
    a, b = emb.embed(['i like tea xylophone', 'i like tea quizzical'])
    assert not np.allclose(a, b, atol=1e-4)  # their backed-off pieces count


def test_embedder_matches_the_model_and_batches_do_not_matter(emb, ckpt):
    v = emb.embed(TEXTS, batch_size=7, normalize=False)
    m = Approximator(ApproximatorConfig(**ckpt['model_args']))
    m.load_state_dict(ckpt['model'])
    with torch.no_grad():
        want = m.eval().embed(emb.bags(TEXTS)).numpy()
    assert np.allclose(v, want, atol=1e-5)
    assert np.allclose(Embedder(ckpt, cache_size=0).embed(TEXTS[::-1], batch_size=64), unit(v)[::-1], atol=1e-5)


def test_lru_cache_is_bounded_and_repeated_texts_hit_it(ckpt, monkeypatch):
    emb = Embedder(ckpt, cache_size=3)
    computed = []
    real = emb.vectors
    monkeypatch.setattr(emb, 'vectors', lambda texts: computed.append(len(texts)) or real(texts))
    first = emb.embed(TEXTS[:5])
    assert sum(computed) == 5 and len(emb.cache) == 3 and list(emb.cache) == TEXTS[2:5]  # the last used stay
    again = emb.embed([TEXTS[3], TEXTS[4], TEXTS[3]])
    assert sum(computed) == 5 and np.array_equal(again, first[[3, 4, 3]])  # all hits: nothing computed
    emb.embed([TEXTS[2]])  # least recently used first: 4, 3, 2
    emb.embed([TEXTS[6]])
    assert list(emb.cache) == [TEXTS[3], TEXTS[2], TEXTS[6]] and sum(computed) == 6
    for i in range(7, 20):
        emb.embed(TEXTS[i:i + 2])
        assert len(emb.cache) <= 3
    none = Embedder(ckpt, cache_size=0)
    none.embed(TEXTS[:4])
    assert len(none.cache) == 0


def test_lru_cache_keeps_a_text_hit_in_the_same_call(ckpt):
    # a hit is a use: with [a, b, c] cached (a the oldest), embed([a, d]) should evict b, the least recently used
    emb = Embedder(ckpt, cache_size=3)
    emb.embed(TEXTS[:3])
    emb.embed([TEXTS[0], TEXTS[3]])
    assert list(emb.cache) == [TEXTS[2], TEXTS[0], TEXTS[3]]


def test_quantized_student_stays_close(ckpt):
    fp32, int8 = Embedder(ckpt, cache_size=0), Embedder(ckpt, quantize=True, cache_size=0)
    assert 'quantized' in type(int8.model.rho[1]).__module__
    a, b = fp32.embed(TEXTS), int8.embed(TEXTS)
    assert not np.array_equal(a, b) and (a * b).sum(1).min() > 0.99


def random_ckpt(pooling, tok):
    """A checkpoint dict of a random student over tok's entries (as build_model reads it); 'context' and
    'context_logits': attention pooling with a (random) context layer, shifting the logits too in the second."""
    context = {'context': 4, 'context_logits': pooling == 'context_logits'} if pooling.startswith('context') else {}
    m = student('attention' if context else pooling, vocab_size=tok.vocab_size, dim=TOY_DIM, **context)
    if context:
        torch.nn.init.normal_(m.from_context.weight)
        if context['context_logits']:
            torch.nn.init.normal_(m.context_logit.weight)
    return {'model_kind': 'approximator', 'model_args': dict(m.config.__dict__), 'model': m.state_dict(),
            'tokenizer': tok.info, 'path': f'random-{pooling}'}


def run_exported(fmt, path, ids):
    if fmt == 'torchscript':
        with torch.no_grad():
            return torch.jit.load(path)(ids).numpy()
    import onnxruntime
    return onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'ids': ids.numpy()})[0]


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
@pytest.mark.parametrize('which', ['trained', 'mean', 'self_attention', 'context', 'context_logits'])
def test_export_matches_pytorch(which, fmt, ckpt, approx_data, tmp_path):
    source = ckpt if which == 'trained' else random_ckpt(which, NgramTokenizer.load(approx_data / 'tokenizer.json'))
    path, emb = str(tmp_path / f'student.{fmt}'), Embedder(source)
    err = export(emb, fmt, path)
    assert err < 1e-5
    assert (emb.model._tables is not None) == (which != 'self_attention')  # the Embedder still looks phi up after
    # the file alone, on batches of other shapes than the one export traced, against a fresh Embedder
    fresh = Embedder(source, cache_size=0)
    for texts in (['see you later'], TEXTS[:7], ['', 'how are you ' * 30, 'lol']):
        got = run_exported(fmt, path, fresh.bags(texts))
        assert got.shape == (len(texts), TOY_DIM) and np.allclose(got, fresh.embed(texts), atol=1e-5), texts


# -----------------------------------------------------------------------------
# retrieval: Faiss against brute force, and the next-message task

def brute_force_top(queries, cands, k):
    scores = queries @ cands.T
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(scores, order, 1), order


def test_response_pool_search_equals_brute_force_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    cands, queries = unit(rng.standard_normal((200, 12))).astype(np.float32), unit(rng.standard_normal((15, 12))).astype(np.float32)
    pool = ResponsePool.of(cands, [f'text {i}' for i in range(200)])
    scores, ids = pool.search(torch.from_numpy(queries), 10)
    want_scores, want_ids = brute_force_top(queries, cands, 10)
    assert np.array_equal(ids.numpy(), want_ids) and np.allclose(scores.numpy(), want_scores, atol=1e-5)
    pool.save(str(tmp_path / 'pool'), {'iter': 7})
    again, stamp = ResponsePool.load(str(tmp_path / 'pool'))
    assert stamp == {'iter': 7} and again.texts == pool.texts
    assert np.array_equal(again.search(torch.from_numpy(queries), 10)[1].numpy(), want_ids)


def test_recall_equals_brute_force():
    rng = np.random.default_rng(1)
    cands = unit(rng.standard_normal((300, 8))).astype(np.float32)
    answers = rng.permutation(300)[:40]
    queries = unit(cands[answers] + 0.35 * rng.standard_normal((40, 8))).astype(np.float32)  # near their answers
    got = recall(queries, cands, answers)
    _, top = brute_force_top(queries, cands, 10)
    hit = top == answers[:, None]
    rank = [list(row).index(True) + 1 if row.any() else None for row in hit]
    want = {'recall@1': hit[:, 0].mean(), 'recall@10': hit.any(1).mean(),
            'mrr@10': np.mean([1 / r if r else 0.0 for r in rank])}
    assert 0 < want['recall@1'] < want['recall@10'] < 1  # a case where the three differ
    assert got == pytest.approx(want, abs=1e-12)


def test_pair_spearman_and_quality_of_the_teacher_itself():
    rng = np.random.default_rng(2)
    a, b = unit(rng.standard_normal((20, 6))), unit(rng.standard_normal((20, 5)))
    i, j = np.triu_indices(20, 1)
    want = np.corrcoef(ranks((a[i] * a[j]).sum(1)), ranks((b[i] * b[j]).sum(1)))[0, 1]
    assert pair_spearman(a, b) == pytest.approx(want, abs=1e-9) and pair_spearman(a, a) == pytest.approx(1.0)
    messages = [m for split in toy_splits().values() for m in split]
    task = retrieval_task(messages, 10, 100, seed=0)
    encode = lambda texts, batch=64: toy_embed(texts)
    q = quality(encode, TEXTS, toy_embed(TEXTS), task)
    assert q['spearman'] == pytest.approx(1.0) and q['cosine'] == pytest.approx(1.0, abs=1e-6)
    assert {'recall@1', 'recall@10', 'mrr@10'} <= q.keys()


def chat(n_convs, seed, prefix):
    """[(text, conv, turn)]: unique texts (prefix, conversation, turn, message), turns of one or two messages, and
    turns of just 'ok', a reply many conversations share."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_convs):
        for t in range(int(rng.integers(2, 5))):
            if t > 0 and rng.random() < 0.2:
                out.append(('ok', c, t))
                continue
            out += [(f'{prefix}{c} t{t} m{k}', c, t) for k in range(int(rng.integers(1, 3)))]
    return out


def turn_texts(messages):
    """{(conversation, turn): the turn's messages, one per line}: what the task retrieves."""
    out = {}
    for text, c, t in messages:
        out[c, t] = out[c, t] + '\n' + text if (c, t) in out else text
    return out


def test_neighbour_agreement_equals_brute_force():
    rng = np.random.default_rng(3)
    t = unit(rng.standard_normal((40, 8)))
    v = unit(t + 0.7 * rng.standard_normal((40, 8)))
    got = neighbour_items(v, t, k=5)
    st, tt = v @ v.T, t @ t.T
    for q in range(40):
        others = [i for i in range(40) if i != q]
        near_s = sorted(others, key=lambda i: -st[q, i])[:5]
        near_t = sorted(others, key=lambda i: -tt[q, i])[:5]
        dcg = lambda near: sum(max(tt[q, i], 0) / np.log2(r + 2) for r, i in enumerate(near))
        assert got['overlap@5'][q] == pytest.approx(len(set(near_s) & set(near_t)) / 5)
        assert got['ndcg@5'][q] == pytest.approx(dcg(near_s) / dcg(near_t), abs=1e-5)
        assert got['cosine'][q] == pytest.approx(float(v[q] @ t[q]), abs=1e-6)
    assert 0 < got['overlap@5'].mean() < 1 and 0 < got['ndcg@5'].mean() < 1
    same = neighbour_items(t, t, k=5)
    assert np.allclose(same['overlap@5'], 1) and np.allclose(same['ndcg@5'], 1, atol=1e-6)
    assert 'cosine' not in neighbour_items(v[:, :6], t, k=5)  # another space: no cosine


def test_resampled_spearman_is_the_weighted_correlation_of_the_pairs_it_draws():
    """A resample's Spearman by six quadratic forms equals Pearson's of the global ranks over the pairs the draw
    makes, listed one by one; and it stays within 0.01 of re-ranking those pairs, which is what it stands in for."""
    rng = np.random.default_rng(4)
    a = unit(rng.standard_normal((60, 6)))
    b = unit(a + 0.5 * rng.standard_normal((60, 6)))
    i, j = np.triu_indices(60, 1)
    ca, cb = (a[i] * a[j]).sum(1), (b[i] * b[j]).sum(1)
    draw = rng.integers(0, 60, 60)
    counts = np.bincount(draw, minlength=60)
    got = resampled_spearman(a, b, counts[None])[0]
    pairs = [(p, q) for x, p in enumerate(draw) for q in draw[x + 1:] if p != q]  # each pair of draws, self-pairs left out
    row = {(p, q): r for r, (p, q) in enumerate(zip(i, j))}
    rows = [row[min(p, q), max(p, q)] for p, q in pairs]
    ra, rb = ranks(ca), ranks(cb)  # no ties in random floats
    assert got == pytest.approx(np.corrcoef(ra[rows], rb[rows])[0, 1], abs=1e-9)
    assert got == pytest.approx(spearman(torch.tensor(ca[rows]), torch.tensor(cb[rows])), abs=0.01)
    rho, lo, hi = spearman_ci(a, b, n_boot=200)
    assert lo < rho < hi and rho == pytest.approx(pair_spearman(a, b))
    assert spearman_ci(a, a, n_boot=50)[1:] == pytest.approx((1.0, 1.0))


def test_test_texts_leave_out_train_texts_names_and_code():
    kept = textsets.deduplicated(['HI', 'lol!!', 'a new one', 'A new one', 'A new one!', 'hi there friend', ''], ['hi', 'LOL!!'])
    assert kept == ['a new one', 'A new one!', 'hi there friend']  # what the student reads: case goes, '!' stays
    doc = 'def f():\n    """Return the thing. It is a fine and useful thing to return here.\n\n    >>> f()\n    1\n    """\n'
    assert docstring_sentences(doc) == ['It is a fine and useful thing to return here.']
    assert docstring_sentences('def (:') == []
    assert textsets.sample(['a', 'b', 'a', 'c'], 5) == ['a', 'b', 'c']
    picked = textsets.sample([str(i) for i in range(100)], 10, seed=1)
    assert len(picked) == 10 and picked == sorted(picked, key=int) and picked == textsets.sample([str(i) for i in range(100)], 10, seed=1)


def test_shakespeare_lines_leave_out_speakers_and_short_lines(tmp_path):
    play = tmp_path / 'play.txt'
    play.write_text('ROMEO:\nBut soft, what light through yonder window breaks?\nAy me.\n\nJULIET:\nO Romeo, Romeo, wherefore art thou?\n')
    assert textsets.shakespeare(play) == ['But soft, what light through yonder window breaks?', 'O Romeo, Romeo, wherefore art thou?']


def test_entry_mean_floor_is_the_mean_of_the_teachers_entry_vectors(ckpt, approx_run):
    encode, tok = entry_mean_encoder(str(approx_run)), NgramTokenizer(ckpt['tokenizer'])
    vectors = ckpt['model']['vectors'].float().numpy()
    got = encode(TEXTS[:5] + [''])
    for text, v in zip(TEXTS[:5], got):
        assert np.allclose(v, unit(vectors[tok.encode(text)].mean(0, keepdims=True))[0], atol=1e-5)
    assert np.allclose(got[-1], 0)  # an empty text: no entries, a zero vector, not NaN


@pytest.fixture
def toy_eval(approx_workdir, tmp_path, monkeypatch):
    """projects.approximator.eval with the toy teacher standing in for the real one (and for its int8 ONNX and
    model2vec), small text sets (a toy play, a toy module's docstring), run in the toy workdir."""
    import projects.approximator.eval as ev
    toy = lambda texts, batch=64: toy_embed(texts)
    monkeypatch.setattr(ev, 'teacher_encoder', lambda name, cached=False: toy)
    monkeypatch.setattr(ev, 'teacher_onnx_int8', lambda name: toy)
    monkeypatch.setattr(ev, 'model2vec_encoder', lambda name: lambda texts, batch=64: unit(toy_embed(texts)[:, ::-1] ** 2))
    docs = tmp_path / 'lib'
    docs.mkdir()
    (docs / 'm.py').write_text('"""' + ' '.join(f'This is {TEXTS[i].replace("!", "")} and then {TEXTS[(5 * i + 2) % len(TEXTS)]} today.'
                                                  for i in range(30)) + '"""\n')
    monkeypatch.setattr(textsets, 'python_docs', lambda: docstring_sentences((docs / 'm.py').read_text()))
    play = tmp_path / 'play.txt'
    play.write_text('\n'.join(f'SPEAKER{i}:\n{TEXTS[i % len(TEXTS)]} and {TEXTS[(3 * i + 1) % len(TEXTS)]}' for i in range(40)))
    monkeypatch.chdir(approx_workdir)
    return lambda *args: (monkeypatch.setattr('sys.argv', ['eval', '--n_sentences=20', '--n_queries=10', '--n_candidates=100',
                                                           f'--shakespeare={play}', f'--out={tmp_path / "results"}', *args]),
                          ev.main())


def test_eval_writes_every_set_and_floor_with_intervals(toy_eval, approx_run, tmp_path):
    """The JSON holds every set, every model, each figure inside its interval, and the markdown is made from it."""
    toy_eval(f'--out_dir={approx_run}', '--n_worst=3')
    got = json.loads((tmp_path / 'results.json').read_text())
    assert list(got['sets']) == ['chitchat', 'shakespeare', 'python_docs']
    for name, s in got['sets'].items():
        assert s['n'] == 20 and 0 <= s['backed_off'] <= 1
        assert list(s['rows']) == ['teacher_onnx_int8', 'model2vec', 'entry_mean', 'student', 'student_int8']
        for model, row in s['rows'].items():
            for metric, (x, lo, hi) in row.items():
                assert lo - 1e-9 <= x <= hi + 1e-9 and -1 <= lo <= hi <= 1, (name, model, metric)
        assert s['rows']['teacher_onnx_int8']['overlap@10'][0] == pytest.approx(1.0)  # the toy stands in for itself
    train = {tuple(words(t)) for t, _, _ in toy_splits()['train']}
    assert got['retrieval']['teacher']['recall@10'][0] > 0 and len(got['worst']) == 3
    assert all(tuple(words(t)) not in train for _, t, _ in got['worst'])  # the in-domain set left train's texts out
    md = (tmp_path / 'results.md').read_text()
    assert md.count('| student |') == 4 and 'out of domain' in md


def test_levers_table_chooses_on_val_and_pairs_each_lever_with_the_default(toy_eval, approx_run, tmp_path, monkeypatch):
    import projects.approximator.eval as ev
    monkeypatch.setattr(ev, 'train_runs', lambda variants, run_seeds, prefix, *args: {'default': [str(approx_run)] * 2,
                                                                               '+ same again': [str(approx_run)]})
    toy_eval('--levers=True')
    got = json.loads((tmp_path / 'results_levers.json').read_text())
    assert got['chosen_on_val'] == 'default' and got['n_texts']['val'] == 20  # a tie goes to the first
    assert [r['run'] for r in got['runs']['default']] == [str(approx_run)] * 2
    for k in ('val', 'chitchat', 'shakespeare', 'python_docs'):
        d = got['paired_overlap']['+ same again'][k]
        assert d['diff'] == pytest.approx(0, abs=1e-7) and d['p'] == 1.0  # the same student: no difference
        assert 0 <= got['runs']['default'][0][k]['overlap@10'] <= 1
    md = (tmp_path / 'results_levers.md').read_text()
    assert '| default (chosen on val) |' in md and '| + same again (1 seed) |' in md and '| + same again |' in md


def test_bench_writes_speed_quality_and_its_plot(toy_eval, approx_run, tmp_path):
    toy_eval(f'--out_dir={approx_run}', '--bench=True', '--bench_repeats=1', f'--bench_out={tmp_path / "bench"}')
    got = json.loads((tmp_path / 'bench.json').read_text())
    assert list(got['rows']) == ['teacher', 'teacher_onnx_int8', 'model2vec', 'entry_mean', 'student', 'student_int8']
    assert all(r['sent_per_s_b64'] > 0 and 0 <= r['overlap@10'] <= 1 for r in got['rows'].values())
    assert got['rows']['teacher']['overlap@10'] == pytest.approx(1.0) and got['sentences'] == 20
    assert (tmp_path / 'bench.png').stat().st_size > 10_000 and '| student_int8 |' in (tmp_path / 'bench.md').read_text()


def test_retrieval_task_answers_point_at_the_true_replies():
    messages, distractors = chat(60, 3, 'c'), chat(40, 4, 'd')
    held = turn_texts(messages)
    replies_of = {}  # every right answer of a query turn: the next turn of its conversation
    for (c, t), text in held.items():
        if (c, t + 1) in held:
            replies_of.setdefault(text, set()).add(held[c, t + 1])
    queries, candidates, answers = retrieval_task(messages, 30, 150, seed=0, distractors=distractors)
    assert len(queries) == len(answers) == 30 and len(candidates) == 150
    assert len(set(candidates)) == 150 and len(set(answers.tolist())) == 30  # distinct: one right answer each
    assert all(candidates[a] in replies_of[q] for q, a in zip(queries, answers))
    assert sum(candidates[a] == 'ok' for a in answers) <= 1  # a shared reply answers one query at most
    assert any('\n' in q for q in queries)  # a turn of two messages is one query
    others = set(turn_texts(distractors).values()) - {'ok'}
    assert any(c in others for c in candidates) and not any(q in others for q in queries)  # distractors: candidates only
    assert set(candidates) <= set(held.values()) | others | {'ok'}
    assert retrieval_task(messages, 30, 150, seed=1)[0] != queries  # the seed draws them
    assert retrieval_task(messages, 30, 150, seed=0, distractors=distractors)[:2] == (queries, candidates)


# -----------------------------------------------------------------------------
# the command lines

def one_line(proc):
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_prepare_refuses_a_tiny_vocabulary(tmp_path):
    proc = run('prepare.approximator', '--vocab_size=10', f'--out={tmp_path / "out"}')
    assert '--vocab_size=10 is too small' in one_line(proc) and not (tmp_path / 'out').exists()


def test_embed_cli_index_then_query(approx_run, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(approx_run, out)
    lines = TEXTS[:30]
    line = max(lines, key=len)  # a long line: no other line has its bag
    (tmp_path / 'lines.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    proc = run('projects.approximator.embed', 'index', f'--out_dir={out}', f'--file={tmp_path / "lines.txt"}', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / 'index.faiss').is_file() and (out / 'index.json').is_file()
    proc = run('projects.approximator.embed', 'query', f'--out_dir={out}', f'--text={line}', '--k=3', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = [r.split('  ', 1) for r in proc.stdout.strip().splitlines()[-3:]]
    assert found[0] == ['1.000', line] and all(t in lines for _, t in found)  # the line itself first, at cosine 1
    assert [float(s) for s, _ in found] == sorted((float(s) for s, _ in found), reverse=True)


def test_embed_cli_export(approx_run, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(approx_run, out)
    proc = run('projects.approximator.embed', 'export', f'--out_dir={out}', cwd=tmp_path)
    assert proc.returncode == 0 and 'largest difference from PyTorch' in proc.stdout, proc.stderr[-3000:]
    assert (out / 'approximator.onnx').is_file()


def test_embed_cli_bad_input_says_one_line(approx_run, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(approx_run, out)
    assert 'say what to do' in one_line(run('projects.approximator.embed', f'--out_dir={out}', cwd=tmp_path))
    assert 'no index at' in one_line(run('projects.approximator.embed', 'query', f'--out_dir={out}', '--text=hi', cwd=tmp_path))
