"""data.py: the per-document reverse transform and TokenStream's batches."""
import numpy as np
import pytest
import torch

from data import TokenStream, reverse_docs
from prepare.common import write_dataset
from tokenizer import Tokenizer

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


def test_mask_file_makes_masked_targets_minus_one(data_dir):
    mask = (np.arange(N_TRAIN) % 3 != 0).astype(np.uint8)
    mask.tofile(f'{data_dir}/train_mask.bin')
    x, y = TokenStream(data_dir, 16, 8, 'cpu').get_batch('train')
    target_pos = x + 1  # the stream position of each target
    assert torch.equal(y == -1, target_pos % 3 == 0)
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


def test_reverse_transform_reverses_the_stream(data_dir):
    x, y = TokenStream(data_dir, 16, 4, 'cpu', doc_transform='reverse').get_batch('train')
    # no BOS in this vocab: the whole stream is one document, read backwards
    assert torch.equal(x, x[:, :1] - torch.arange(16)) and torch.equal(y, x - 1)


def test_unknown_doc_transform_exits(data_dir):
    with pytest.raises(SystemExit, match="unknown doc_transform 'sideways'"):
        TokenStream(data_dir, 16, 4, 'cpu', doc_transform='sideways')
