"""Session fixtures: tiny datasets (chars of Shakespeare, BPE conversations) and tiny trained runs, made once."""
import random
import sys
import zlib

import numpy as np
import pytest
import torch

from helpers import REPO, SHAKESPEARE, run, train

sys.path.insert(0, str(REPO))  # model, data, tokenizer, ... importable as the scripts import them
torch.set_num_threads(1)  # see helpers.ENV

from prepare.common import write_dataset  # noqa: E402
from tokenizer import render_conversation, train_bpe  # noqa: E402


def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', help="also run the slow end-to-end tests (marked 'slow')")


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a slow end-to-end test; the default suite skips it, --slow runs it')


def pytest_collection_modifyitems(config, items):
    """The default suite stays under 10 minutes on 2 cores: tests marked slow run with --slow."""
    if not config.getoption('--slow'):
        skip = pytest.mark.skip(reason='slow end-to-end test: run it with --slow')
        for item in items:
            if 'slow' in item.keywords:
                item.add_marker(skip)


# made-up chats: user and assistant alternate, the user opens
CONVERSATIONS = [
    [('user', 'hello'), ('assistant', 'hi! how are you?'), ('user', 'good, thanks'), ('assistant', 'glad to hear it')],
    [('user', 'what is 2 + 2?'), ('assistant', 'it is 4'), ('user', 'and 12 + 30?'), ('assistant', '42')],
    [('user', 'tell me a joke'), ('assistant', 'why did the chicken cross the road?\nto get to the other side')],
    [('user', 'do you like tea'), ('assistant', 'I do, with milk'), ('user', 'me too')],
    [('user', 'good night'), ('assistant', 'sleep well, see you tomorrow')],
    [('user', "what's the weather like?"), ('assistant', "it's sunny and warm today")],
]


@pytest.fixture(scope='session')
def text():
    """A few KB of tiny shakespeare, or made-up words where the file is missing."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding='utf-8')[:10_000]
    rng = random.Random(0)
    words = ['the', 'king', 'queen', 'love', 'thou', 'art', 'night', 'sweet', 'ROMEO:', 'JULIET:', '\n']
    return ' '.join(rng.choice(words) for _ in range(2_000))


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
    """Where train.py runs: it reads data/<dataset> relative to here."""
    return tmp_path_factory.mktemp('work')


@pytest.fixture(scope='session')
def char_data(workdir, text):
    """data/chars: the text, character-level, made by prepare.text."""
    src = workdir / 'input.txt'
    src.write_text(text, encoding='utf-8')
    proc = run('prepare.text', src, '--tokenizer=char', f'--out={workdir / "data" / "chars"}')
    assert proc.returncode == 0, proc.stderr
    return workdir / 'data' / 'chars'


@pytest.fixture(scope='session')
def chat_tok():
    """A 300-token BPE trained on the made-up conversations."""
    return train_bpe([t for conv in CONVERSATIONS for _, t in conv], 300)


@pytest.fixture(scope='session')
def chat_data(workdir, chat_tok):
    """data/chat: the conversations rendered as chat.py renders them, many times over."""
    docs = [np.array(render_conversation(chat_tok, conv), dtype=np.uint16) for conv in CONVERSATIONS]
    write_dataset(workdir / 'data' / 'chat', chat_tok, {'train': docs * 20, 'val': docs[:3] * 2}, source='tests')
    return workdir / 'data' / 'chat'


@pytest.fixture(scope='session')
def char_run(workdir, char_data):
    """20 iterations on data/chars, with dropout, checkpoints at 10 and 20."""
    out = workdir / 'out-char'
    train(workdir, out, '--max_iters=20', '--eval_interval=10', '--dropout=0.1')
    return out


@pytest.fixture(scope='session')
def chat_run(workdir, chat_data):
    """A tiny model trained for a few iterations on data/chat."""
    out = workdir / 'out-chat'
    train(workdir, out, '--block_size=32', '--max_iters=10', '--eval_interval=10', '--learning_rate=1e-2',
          '--warmup_iters=0', dataset='chat')
    return out


@pytest.fixture(scope='session')
def bidir_chat_run(workdir, chat_data):
    """A tiny bidirectional model trained for a few iterations on data/chat."""
    out = workdir / 'out-chat-bidir'
    train(workdir, out, '--block_size=32', '--max_iters=10', '--eval_interval=10', '--learning_rate=1e-2',
          '--warmup_iters=0', '--direction=bidirectional', dataset='chat')
    return out



@pytest.fixture(scope='session')
def imr_run(workdir, chat_tok):
    """A tiny ChatBERT-IMR run (2 iterations; 16 context and 8 response tokens) on pairs of the made-up conversations."""
    from prepare.chatbert import write_pairs
    data = workdir / 'data' / 'imr_pairs'
    write_pairs(str(data), chat_tok, {'train': CONVERSATIONS, 'val': CONVERSATIONS}, 16, 8, source='tests')
    out = workdir / 'out-imr'
    train(workdir, out, '--model_kind=chatbert_imr', '--causal=False', '--data_source=masked_pairs', '--block_size=24',
          '--batch_size=8', '--max_iters=2', '--eval_interval=2', '--eval_iters=1', dataset='imr_pairs')
    return out

# -----------------------------------------------------------------------------
# the BERT approximator: made-up chat messages and a toy teacher a tiny student can learn

TOY_DIM = 16  # the toy teacher's width


def toy_messages(n_convs, seed):
    """[(text, conversation, turn)]: n_convs made-up conversations of 2-5 turns, a message or two a turn, their words
    from a small vocabulary with a few phrases common enough to become n-gram and skip-gram entries."""
    rng = random.Random(seed)
    words = ['hi', 'hello', 'how', 'are', 'you', 'good', 'bad', 'i', 'am', 'fine', 'thanks', 'what', 'do', 'like',
             'tea', 'coffee', 'dogs', 'cats', 'the', 'weather', 'is', 'nice', 'today', 'see', 'later', 'lol', 'yes',
             'no', 'maybe', 'weekend', 'plans', 'for', 'movie', 'music', 'play', 'games', '?', '!', ',']
    phrases = ['how are you', 'see you later', 'i am fine', 'what do you like', 'the weather is nice']
    messages = []
    for c in range(n_convs):
        for turn in range(rng.randint(2, 5)):
            for _ in range(rng.choice([1, 1, 2])):
                parts = [rng.choice(phrases) if rng.random() < 0.3 else rng.choice(words) for _ in range(rng.randint(1, 6))]
                messages.append((' '.join(parts), c, turn))
    return messages


def toy_word_vector(word):
    """A fixed random vector per word, the same in every process (crc32, not hash(), which is salted)."""
    return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(TOY_DIM)


def toy_embed(texts):
    """The toy teacher: (N, TOY_DIM) float32, each text's unit-length mean of its words' vectors (an empty text gets a
    fixed vector of its own), so a bag of words' vectors is enough to learn it."""
    from tokenizer import words
    out = np.zeros((len(texts), TOY_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        v = np.mean([toy_word_vector(w) for w in words(text)] or [toy_word_vector('<empty>')], axis=0)
        out[i] = v / np.linalg.norm(v)
    return out


def toy_splits():
    """{split: messages} for prepare.approximator.build, disjoint conversations in each split."""
    messages = toy_messages(120, seed=0)
    by_conv = lambda lo, hi: [m for m in messages if lo <= m[1] < hi]
    return {'train': by_conv(0, 80), 'val': by_conv(80, 100), 'test': by_conv(100, 120)}


def build_toy_approximator_data(out, **kw):
    """An approximator data dir at out (prepare.approximator.build over the toy messages and teacher)."""
    from prepare.approximator import build
    return build(str(out), toy_splits(), toy_embed, **{'vocab_size': 300, **kw})


@pytest.fixture(scope='session')
def approx_workdir(tmp_path_factory):
    """A private workdir whose data/approximator holds the toy approximator data; approximator runs train here."""
    work = tmp_path_factory.mktemp('approx')
    build_toy_approximator_data(work / 'data' / 'approximator')
    return work
