"""Chat: prompts rendered as in training and cut to fit, replies streamed up to a turn token, the CLI."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from engine import chat_for
from helpers import run
from model import GPT, GPTConfig
from tokenizer import Tokenizer, render_conversation, render_prompt

HISTORY = [('user', 'first question about apples'), ('assistant', 'an answer about apples'),
           ('user', 'second question about pears'), ('assistant', 'an answer about pears'),
           ('user', 'newest question about plums')]


def tiny_chat_model(tok, block_size=32):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()


def scripted(model, tokens):
    """Make model.generate_stream yield these tokens, whatever the prompt; record the prompts it got."""
    model.prompts = []

    def generate_stream(x, *args, **kwargs):
        model.prompts.append(x[0].tolist())
        yield from (torch.tensor([[t]]) for t in tokens)
    model.generate_stream = generate_stream
    return model


def test_prompt_is_the_conversation_then_assistant(chat_tok):
    ids = render_prompt(chat_tok, HISTORY, 10_000)
    assert ids == render_conversation(chat_tok, HISTORY) + [chat_tok.special('<|assistant|>')]


def test_long_prompt_keeps_the_newest_turns(chat_tok):
    full = render_prompt(chat_tok, HISTORY, 10_000)
    ids = render_prompt(chat_tok, HISTORY, len(full) - 1)
    assert len(ids) <= len(full) - 1
    assert ids[0] == chat_tok.bos and ids[-1] == chat_tok.special('<|assistant|>')
    text = chat_tok.decode(ids)
    assert 'newest question about plums' in text and 'first question' not in text


def test_single_long_turn_is_cut_from_the_left(chat_tok):
    turns = [('user', 'a very long question ' * 10 + 'ending here')]
    full = render_prompt(chat_tok, turns, 10_000)
    ids = render_prompt(chat_tok, turns, 10)
    assert ids == [chat_tok.bos] + full[-9:]


@pytest.mark.skipif(importlib.util.find_spec('chitchat_dataset') is None, reason='needs chitchat-dataset')
def test_prepared_chitchat_is_rendered_as_chat_renders(tmp_path):
    proc = run('prepare.chitchat', '--vocab_size=300', f'--out={tmp_path}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    tok = Tokenizer.load(tmp_path / 'tokenizer.json')
    stream = np.memmap(tmp_path / 'train.bin', dtype=json.loads((tmp_path / 'meta.json').read_text())['dtype'])
    starts = np.flatnonzero(stream[:200_000] == tok.bos)[:21]
    roles = {tok.special('<|user|>'): 'user', tok.special('<|assistant|>'): 'assistant'}
    for s, e in zip(starts[:-1], starts[1:]):
        doc = stream[s:e].tolist()
        cuts = [i for i, t in enumerate(doc) if t in roles] + [len(doc)]
        turns = [(roles[doc[i]], tok.decode(doc[i + 1:j])) for i, j in zip(cuts[:-1], cuts[1:])]
        assert [r for r, _ in turns] == ['user', 'assistant'] * (len(turns) // 2) + ['user'] * (len(turns) % 2)
        assert render_conversation(tok, turns) == doc  # what chat.py's render_prompt builds on


def test_reply_stream_yields_growing_text(chat_tok):
    model = tiny_chat_model(chat_tok)
    replies = list(chat_for(model, chat_tok).reply_stream(HISTORY[:1], 8, 1.0, None, None))
    assert len(replies) <= 8 and all(isinstance(r, str) for r in replies)
    assert all(b.startswith(a) for a, b in zip(replies, replies[1:]))


def test_reply_stream_stops_at_a_turn_token(chat_tok):
    tokens = chat_tok.encode('sure thing') + [chat_tok.special('<|user|>')] + chat_tok.encode(' and more')
    model = scripted(tiny_chat_model(chat_tok), tokens)
    replies = list(chat_for(model, chat_tok).reply_stream(HISTORY[:1], 20, 0.0, None, None))
    assert replies[-1] == 'sure thing'


def test_reply_stream_waits_for_whole_characters(chat_tok):
    tokens = chat_tok.encode('ok 🙂')
    assert len(tokens) > len('ok 🙂')  # the emoji is several byte tokens
    model = scripted(tiny_chat_model(chat_tok), tokens)
    replies = list(chat_for(model, chat_tok).reply_stream(HISTORY[:1], 20, 0.0, None, None))
    assert replies[-1] == 'ok 🙂' and not any('\ufffd' in r for r in replies)


def test_reply_prompt_fits_the_block_and_ends_with_the_user_turn(chat_tok):
    model = scripted(tiny_chat_model(chat_tok, block_size=64), chat_tok.encode('fine'))
    list(chat_for(model, chat_tok).reply_stream(HISTORY, 16, 0.0, None, None))
    prompt = model.prompts[0]
    assert len(prompt) <= 64 - 16 and prompt[-1] == chat_tok.special('<|assistant|>')
    assert 'newest question about plums' in chat_tok.decode(prompt)


def test_reply_prompt_keeps_the_user_turn_when_max_new_tokens_exceeds_the_block(chat_tok):
    # chat.py's default max_new_tokens (128) is the block_size of config/quickstart.py: the prompt must not vanish
    model = scripted(tiny_chat_model(chat_tok, block_size=64), chat_tok.encode('fine'))
    list(chat_for(model, chat_tok).reply_stream([('user', 'hello there')], 64, 0.0, None, None))
    assert 'hello there' in chat_tok.decode(model.prompts[0])


def test_chat_cli_answers_twice_and_ignores_empty_input(chat_run):
    proc = run('chat.py', f'--out_dir={chat_run}', '--device=cpu', '--max_new_tokens=8',
               stdin='hello\n\n/clear\nhi\n/quit\n')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Bot:') == 2 and '(history cleared)' in proc.stdout


def test_chat_cli_refuses_a_model_not_trained_on_conversations(char_run):
    proc = run('chat.py', f'--out_dir={char_run}', '--device=cpu', stdin='hello\n')
    assert proc.returncode != 0 and 'was not trained on conversations' in proc.stderr
