"""ChatBERT's (context, response) pairs: prepare/chatbert.py and data.PairSource."""
import pytest
import torch

from conftest import CONVERSATIONS
from data import SOURCES
from prepare.chatbert import conversation_pairs, write_pairs
from tokenizer import render_prompt


@pytest.mark.parametrize('context_len', [6, 12, 64])  # 6: even the nearest turn is cut; 64: nothing is
def test_contexts_are_the_chat_prompt_of_the_reroled_history(chat_tok, context_len):
    pad, end = chat_tok.special('<|pad|>'), chat_tok.special('<|user|>')
    for conv in CONVERSATIONS:
        contexts, responses, cut = conversation_pairs(chat_tok, conv, context_len, 5)
        assert contexts.shape == (len(conv) - 1, context_len) and responses.shape == (len(conv) - 1, 5)
        for i in range(1, len(conv)):
            history = [('user' if (i - j) % 2 else 'assistant', conv[j][1]) for j in range(i)]  # the reply is the assistant's
            want = render_prompt(chat_tok, history, context_len)
            assert contexts[i - 1].tolist() == [pad] * (context_len - len(want)) + want
            reply = (chat_tok.encode(conv[i][1]) + [end])[:5]
            assert responses[i - 1].tolist() == reply + [pad] * (5 - len(reply))
        assert cut == sum(len(chat_tok.encode(t)) + 1 > 5 for _, t in conv[1:])


@pytest.fixture(scope='module')
def pairs_dir(tmp_path_factory, chat_tok):
    out = tmp_path_factory.mktemp('pairs') / 'chatbert'
    write_pairs(str(out), chat_tok, {'train': CONVERSATIONS * 3, 'val': CONVERSATIONS[:2]}, 16, 8, source='tests')
    return out


def test_pair_batches_are_the_same_on_one_process_or_two(pairs_dir):
    one = SOURCES['pairs'](str(pairs_dir), 24, 4, 'cpu')
    c, r = one.get_batch('train')
    assert c.shape == (4, 16) and r.shape == (4, 8) and c.dtype == torch.long
    halves = [SOURCES['pairs'](str(pairs_dir), 24, 2, 'cpu', rank=k, world_size=2).get_batch('train') for k in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), c) and torch.equal(torch.cat([h[1] for h in halves]), r)


def test_pair_source_resumes_its_stream(pairs_dir):
    a = SOURCES['pairs'](str(pairs_dir), 24, 3, 'cpu')
    a.get_batch('train')
    state = a.state_dict()
    want = a.get_batch('train')
    b = SOURCES['pairs'](str(pairs_dir), 24, 3, 'cpu', seed=7)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(b.get_batch('train'), want))


def test_pair_source_refuses_what_it_cannot_read(pairs_dir, tmp_path):
    for args, said in (((str(tmp_path), 24, 3, 'cpu'), 'prepare them first'),
                       ((str(pairs_dir), 24, 3, 'cpu', 1, 0, 1, 'backward'), 'forward only')):
        with pytest.raises(SystemExit) as e:
            SOURCES['pairs'](*args)
        assert said in str(e.value.code)
