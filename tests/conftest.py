"""Session fixtures: tiny datasets (chars of Shakespeare, BPE conversations) and tiny trained runs, made once."""
import random
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, SHAKESPEARE, run, train

sys.path.insert(0, str(REPO))  # model, data, tokenizer, ... importable as the scripts import them
torch.set_num_threads(1)  # see helpers.ENV

from prepare.common import write_dataset  # noqa: E402
from tokenizer import render_conversation, train_bpe  # noqa: E402

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
