"""ChatBERT's (context, response) pairs: prepare/chatbert.py and data.PairSource."""
import pytest
import torch

from conftest import CONVERSATIONS
from dataloader import SOURCES
from helpers import read_log, train
from prepare.chatbert import conversation_pairs, write_pairs
from tokenizer import render_context, render_prompt, render_response


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
            # chat time lays a pair out through tokenizer's functions, training through prepare's loop: they agree
            assert render_context(chat_tok, history, context_len) == contexts[i - 1].tolist()
            assert render_response(chat_tok, conv[i][1], 5) == (responses[i - 1].tolist(), len(reply))
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


# -----------------------------------------------------------------------------
# ChatBERT-IMR: masked pairs, the ELBO-weighted loss, the refinement sampler

def test_masked_pairs_never_mask_the_context_and_weigh_by_one_over_t(pairs_dir, chat_tok):
    data = SOURCES['masked_pairs'](str(pairs_dir), 24, 512, 'cpu')
    (c, r), (x, y, w) = SOURCES['pairs'](str(pairs_dir), 24, 512, 'cpu').get_batch('train'), data.get_batch('train')
    assert torch.equal(x[:, :16], c) and (y[:, :16] == -1).all() and (w[:, :16] == 0).all()
    masked = x[:, 16:] == chat_tok.special('<|mask|>')
    assert torch.equal(y[:, 16:][masked], r[masked]) and (y[:, 16:][~masked] == -1).all()
    inv_t = w[:, 16:] * 512 * 8  # 1/t on a row's masked tokens, 0 elsewhere
    for row, m in zip(inv_t, masked):
        assert (row[~m] == 0).all() and (len(set(row[m].tolist())) <= 1) and (row[m] >= 1 - 1e-4).all()
    # the masked share of a row follows its t: on average over many rows, share ~ t
    rows = masked.any(1)
    t = 1 / inv_t.max(1).values[rows]
    assert abs((masked[rows].float().mean(1) - t).mean()) < 0.05


def imr(**kw):
    from model_chatbert import ChatBERTConfig, ChatBERTIMR
    torch.manual_seed(0)
    return ChatBERTIMR(ChatBERTConfig(vocab_size=300, block_size=24, n_layer=1, n_head=2, n_embd=32, causal=False,
                                      response_len=8, **kw))


def test_imr_loss_is_the_weighted_sum_of_the_masked_tokens_losses(pairs_dir):
    x, y, w = SOURCES['masked_pairs'](str(pairs_dir), 24, 6, 'cpu').get_batch('train')
    model = imr()
    logits, loss = model(x, y, w)
    logp = logits.log_softmax(-1)
    want = sum(-w[b, i] * logp[b, i, y[b, i]] for b in range(6) for i in range(24) if y[b, i] >= 0)
    assert torch.allclose(loss, want, rtol=1e-5)


def test_imr_refinement_commits_one_token_a_step_when_steps_equal_length(chat_tok):
    model, mask = imr().eval(), chat_tok.special('<|mask|>')
    context = torch.randint(200, (2, 16))
    states = list(model.refine(context, 8, mask, steps=8, temperature=1.0))
    counts = [(s == mask).sum(1).tolist() for s in states]
    assert counts == [[8 - k, 8 - k] for k in range(1, 9)]  # one fewer mask per row at every step, none at the end
    for a, b in zip(states, states[1:]):  # a committed token never changes
        kept = a != mask
        assert torch.equal(a[kept], b[kept])
    greedy = [list(model.refine(context, 8, mask, steps=3, temperature=0))[-1] for _ in range(2)]
    assert torch.equal(*greedy) and not (greedy[0] == mask).any()


def test_an_imr_model_must_be_bidirectional(chat_tok):
    from model_chatbert import ChatBERTConfig, ChatBERTIMR
    args = dict(vocab_size=300, block_size=24, n_layer=1, n_head=2, n_embd=32, response_len=8, pad_id=chat_tok.special('<|pad|>'))
    with pytest.raises(ValueError, match='causal=False'):
        ChatBERTIMR(ChatBERTConfig(**args))  # causal defaults to True, as a GPT's does
    ChatBERTIMR(ChatBERTConfig(**args, causal=False))


def test_imr_trains_through_train_py_and_overfits_tiny_pairs(workdir, chat_tok, tmp_path):
    # the ELBO's 1/t weights make single batches noisy: compare evaluations over many batches, at start and end
    write_pairs(str(workdir / 'data' / 'pairs'), chat_tok, {'train': CONVERSATIONS, 'val': CONVERSATIONS}, 16, 8, source='tests')
    train(workdir, tmp_path, '--model_kind=chatbert_imr', '--causal=False', '--data_source=masked_pairs', '--block_size=24',
          '--max_iters=200', '--eval_interval=200', '--eval_iters=40', '--learning_rate=1e-2', '--warmup_iters=0',
          '--batch_size=8', dataset='pairs')
    first, last = [r['train_loss'] for r in read_log(tmp_path) if 'train_loss' in r]
    assert last < 0.6 * first, (first, last)  # 6.5 -> 3.2 here; an untrained model stays at ln(vocab)


def test_imr_semi_autoregressive_blocks_fill_left_to_right(chat_tok):
    model, mask = imr().eval(), chat_tok.special('<|mask|>')
    context = torch.randint(200, (3, 16))
    for steps in (4, 8, 6):  # a step a block, a token a step, and steps that don't divide the length
        states = list(model.refine(context, 8, mask, steps=steps, temperature=1.0, blocks=4))
        assert len(states) == steps and not (states[-1] == mask).any()
        for s in states:  # whatever is committed is a prefix of whole blocks and part of the next one
            done = (s != mask)
            for b in range(1, 4):
                later = done[:, 2 * b:2 * b + 2].any(1)
                assert done[later][:, :2 * b].all(), (steps, s)
    # one block is the plain sampler: the same draws give the same states
    torch.manual_seed(0)
    one = list(model.refine(context, 8, mask, steps=8, temperature=1.0, blocks=1))
    torch.manual_seed(0)
    plain = list(model.refine(context, 8, mask, steps=8, temperature=1.0))
    assert all(torch.equal(a, b) for a, b in zip(one, plain))
