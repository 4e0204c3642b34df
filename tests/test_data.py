"""dataloader.py's TokenStream: windows, masks, ranks, and the three directions; tokenizer's per-document reversal."""
import numpy as np
import pytest
import torch

from dataloader import TokenStream
from prepare.common import write_dataset
from tokenizer import Tokenizer, orient, reversal_index


def reverse_docs(tokens, bos):
    return np.asarray(tokens)[reversal_index(tokens, bos)]

BOS = 99
N_TRAIN, N_VAL = 512, 100


def test_reverse_docs_example():
    a, b, c, d, e = 1, 2, 3, 4, 5
    assert reverse_docs([BOS, a, b, c, BOS, d, e], BOS).tolist() == [BOS, c, b, a, BOS, e, d]


def test_text_before_the_first_bos_is_one_document():
    assert reverse_docs([1, 2, BOS, 3, 4], BOS).tolist() == [2, 1, BOS, 4, 3]


@pytest.mark.parametrize('p_bos', [0.0, 0.1, 0.5, 1.0])
def test_reverse_docs_twice_is_identity(p_bos):
    rng = np.random.default_rng(0)
    tokens = np.where(rng.random(200) < p_bos, BOS, rng.integers(0, BOS, 200))
    once = reverse_docs(tokens, BOS)
    assert np.array_equal(once == BOS, tokens == BOS)  # every BOS stays where it was
    assert np.array_equal(reverse_docs(once, BOS), tokens)


@pytest.fixture
def data_dir(tmp_path):
    """Token i at position i (in a char vocab of 512 symbols), so a window tells where it was drawn."""
    tok = Tokenizer({'kind': 'char', 'chars': [chr(0x100 + i) for i in range(N_TRAIN)], 'special': {}})
    write_dataset(tmp_path, tok, {'train': [np.arange(N_TRAIN)], 'val': [np.arange(N_VAL)]}, source='tests')
    return str(tmp_path)


def test_batch_is_windows_and_next_tokens(data_dir):
    x, y = TokenStream(data_dir, 16, 4, 'cpu').get_batch('train')
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    starts = x[:, :1]
    assert torch.equal(x, starts + torch.arange(16))  # contiguous windows of the stream
    assert torch.equal(y, x + 1)  # y is x shifted by one


def test_mask_marks_spans_and_the_token_after_each(data_dir):
    # spans of 2 tokens, then 4 unmasked: targets count on the span and on the one token right after it
    mask = (np.arange(N_TRAIN) % 6 < 2).astype(np.uint8)
    mask.tofile(f'{data_dir}/train_mask.bin')
    x, y = TokenStream(data_dir, 16, 8, 'cpu').get_batch('train')
    target_pos = x + 1  # the stream position of each target
    assert torch.equal(y != -1, target_pos % 6 < 3)
    assert torch.equal(y[y != -1], target_pos[y != -1])


def test_split_shorter_than_block_exits(data_dir):
    with pytest.raises(SystemExit, match=r"split 'val' .* has 100 tokens, fewer than block_size\+1 = 101"):
        TokenStream(data_dir, 100, 4, 'cpu')


def test_missing_data_dir_says_how_to_prepare(tmp_path):
    with pytest.raises(SystemExit, match='prepare it first'):
        TokenStream(str(tmp_path / 'nope'), 16, 4, 'cpu')


def test_ranks_take_their_halves_of_the_global_batch(data_dir):
    one = TokenStream(data_dir, 16, 8, 'cpu', seed=7)
    ranks = [TokenStream(data_dir, 16, 4, 'cpu', seed=7, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        x, y = one.get_batch('train')
        (x0, y0), (x1, y1) = (r.get_batch('train') for r in ranks)
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def test_state_dict_restores_the_batches(data_dir):
    data = TokenStream(data_dir, 16, 4, 'cpu')
    data.get_batch('train')
    state = data.state_dict()
    expected = [data.get_batch('train')[0] for _ in range(3)]
    fresh = TokenStream(data_dir, 16, 4, 'cpu', seed=0)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.get_batch('train')[0], x) for x in expected)


def test_backward_reverses_the_stream(data_dir):
    x, y = TokenStream(data_dir, 16, 4, 'cpu', direction='backward').get_batch('train')
    # no BOS in this vocab: the whole stream is one document, read backwards
    assert torch.equal(x, x[:, :1] - torch.arange(16)) and torch.equal(y, x - 1)


# documents of several lengths, each [BOS, then increasing ids from its own range]: a window shows each
# document's direction (ids rising = forward, falling = backward) and where documents meet
BOS, FWD, BWD = 1000, 1001, 1002


@pytest.fixture
def docs_dir(tmp_path):
    tok = Tokenizer({'kind': 'char', 'chars': [chr(0x100 + i) for i in range(BOS)],
                     'special': {'<|bos|>': BOS, '<|forward|>': FWD, '<|backward|>': BWD}})
    rng = np.random.default_rng(0)
    docs, start = [], 0
    for _ in range(60):
        n = int(rng.integers(3, 12))
        docs.append(np.array([BOS] + list(range(start, start + n))))
        start += n
    write_dataset(tmp_path, tok, {'train': docs, 'val': docs[:20]}, source='tests')
    return str(tmp_path)


def runs_between_markers(row):
    """The document pieces of a window: the runs of ordinary ids between BOS/direction tokens."""
    pieces, cur = [], []
    for t in row + [BOS]:
        if t >= BOS:
            if cur:
                pieces.append(cur)
            cur = []
        else:
            cur.append(t)
    return pieces


def test_backward_keeps_bos_first_in_every_document_of_a_window(docs_dir):
    x, y = TokenStream(docs_dir, 24, 16, 'cpu', direction='backward').get_batch('train')
    for row in x.tolist():
        for piece in runs_between_markers(row):
            assert piece == sorted(piece, reverse=True)  # every document piece falls: reversed
        for i, t in enumerate(row[:-1]):
            if t == BOS:  # after BOS comes a document's last id, which is the largest of its range
                assert row[i + 1] < BOS
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert (x == FWD).sum() == 0 and (x == BWD).sum() == 0  # no direction tokens outside bidirectional


def test_forward_data_has_no_direction_tokens(docs_dir):
    x, y = TokenStream(docs_dir, 24, 32, 'cpu').get_batch('train')
    assert not torch.isin(torch.cat([x, y]), torch.tensor([FWD, BWD])).any()


@pytest.mark.parametrize('frac', [0.5, 0.25])
def test_bidirectional_batches_hold_both_directions_and_no_document_mixes_them(docs_dir, frac):
    data = TokenStream(docs_dir, 24, 8, 'cpu', direction='bidirectional', backward_frac=frac)
    for _ in range(5):
        x, _ = data.get_batch('train')
        ways = []
        for row in x.tolist():
            # a window is cut from one stream: all its markers agree, and its pieces run the marker's way
            markers = {t for t in row if t in (FWD, BWD)}
            assert len(markers) <= 1
            pieces = runs_between_markers(row)
            falling = [p == sorted(p, reverse=True) and len(p) > 1 for p in pieces]
            rising = [p == sorted(p) and len(p) > 1 for p in pieces]
            way = 'backward' if any(falling) and not any(rising) else 'forward' if any(rising) and not any(falling) else None
            assert way is not None
            assert markers <= {BWD if way == 'backward' else FWD}
            for i, t in enumerate(row[:-1]):
                if t == BOS:
                    assert row[i + 1] == (BWD if way == 'backward' else FWD)  # the marker right after BOS
            ways.append(way)
        assert ways.count('backward') == round(8 * frac) and 'forward' in ways


def test_orient_backward_with_a_mask_moves_the_mask_along(docs_dir):
    tok = Tokenizer.load(f'{docs_dir}/tokenizer.json')
    tokens = [BOS, 1, 2, 3, BOS, 4, 5]
    mask = [0, 0, 1, 1, 0, 1, 0]
    t, m = orient(tokens, tok, True, True, mask)
    assert t.tolist() == [BOS, BWD, 3, 2, 1, BOS, BWD, 5, 4]
    assert m.tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 1]
