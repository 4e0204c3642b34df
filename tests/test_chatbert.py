"""ChatBERT's three ways to chat (model_chatbert.ChatBERTED, ChatBERTRA, ChatBERTIMR; their chats engine.EDChat, RAChat,
IMRChat and its FIB), the response pool (retrieval.ResponsePool), BM25 chat, and the scripts around them (train.py,
chat.py, sample.py)."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import CONVERSATIONS
from dataloader import SOURCES
from helpers import read_log, run, train
from common import MODELS
from model import GPT, GPTConfig, KVCache
from engine import BM25Chat, IMRChat, chat_for, parse_template, template_ids
from prepare.chatbert import write_pairs
from retrieval import ResponsePool
from tokenizer import render_context, render_response

HISTORY = [('user', 'hello'), ('assistant', 'hi! how are you?'), ('user', 'good, thanks')]
DATASET = 'chatbert_tests'  # this file's pairs in the shared workdir: no other test writes them


def tiny(kind, tok, block_size=24, response_len=8, n_layer=2, **kw):
    """A ChatBERT model of a kind (a name in MODELS), tiny, seeded, in eval mode."""
    config_cls, model_cls = MODELS[kind]
    torch.manual_seed(0)
    config = config_cls(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=32,
                        causal=False, response_len=response_len, pad_id=tok.special('<|pad|>'), **kw)
    return model_cls(config).eval()


def stop_at(row, stops):
    return row[:next((j for j, t in enumerate(row) if t in stops), len(row))]


# -----------------------------------------------------------------------------
# the encoder reads both ways

@pytest.mark.parametrize('kind', ['chatbert_ed', 'chatbert_ra', 'chatbert_imr', 'gpt'])
def test_a_chatbert_encoder_reads_both_ways_and_a_gpt_one_way(kind, chat_tok):
    if kind == 'gpt':  # the control: the same blocks, causal
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=chat_tok.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()
    else:
        model = tiny(kind, chat_tok)
    idx = torch.randint(200, (2, 12), generator=torch.Generator().manual_seed(0))
    later = idx.clone()
    later[:, 8] = (later[:, 8] + 1) % 200  # one later token changes
    with torch.no_grad():
        a, b = model.hidden(idx), model.hidden(later)
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3  # the change reaches its own position either way
    earlier = (a[:, :8] - b[:, :8]).abs().amax(dim=(0, 2))  # per earlier position
    if kind == 'gpt':
        assert earlier.max() < 1e-6, earlier
    else:
        assert (earlier > 1e-4).all(), earlier  # every earlier position, the first included, sees it


# -----------------------------------------------------------------------------
# ChatBERT-ED: an encoder, and a decoder that writes the response

def test_ed_decoder_is_causal(chat_tok):
    # teacher forcing is only honest if a response position never sees the tokens it is to predict
    model = tiny('chatbert_ed', chat_tok)
    kv, mask = model.encode(chat_for(model, chat_tok).context(HISTORY))
    idx = torch.randint(200, (1, 8), generator=torch.Generator().manual_seed(1))
    later = idx.clone()
    later[0, 5] = (later[0, 5] + 1) % 200
    with torch.no_grad():
        a, b = model.decode(idx, kv, mask), model.decode(later, kv, mask)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) and not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


@pytest.mark.parametrize('pos', ['rope', 'learned'])
def test_ed_cached_decoding_in_reply_stream_equals_recomputing_the_prefix(pos, chat_tok, monkeypatch):
    model = tiny('chatbert_ed', chat_tok, pos=pos)
    bot = chat_for(model, chat_tok)
    real_decode, steps = model.decode, []

    def spy(idx, kv, mask, cache=None):
        logits = real_decode(idx, kv, mask, cache)
        steps.append((idx.clone(), logits[:, -1].clone(), cache))
        return logits
    monkeypatch.setattr(model, 'decode', spy)
    monkeypatch.setattr(bot, 'stops', set())  # no early end: the cache fills to response_len
    torch.manual_seed(3)
    list(bot.reply_stream(HISTORY, max_new_tokens=100, temperature=1.0, top_k=None, top_p=None))
    assert len(steps) == 8 and all(idx.shape == (1, 1) for idx, _, _ in steps)  # one token a step, response_len of them
    assert isinstance(steps[0][2], KVCache) and all(c is steps[0][2] for _, _, c in steps) and steps[0][2].pos == 8
    fed = torch.cat([idx for idx, _, _ in steps], dim=1)  # the start token, then each sampled token
    context = bot.context(HISTORY)
    assert fed[0, 0] == context[0, -1] == chat_tok.special('<|assistant|>')
    with torch.no_grad():
        full = real_decode(fed, *model.encode(context))  # one teacher-forced pass over the same tokens, no cache
    for i, (_, logits, _) in enumerate(steps):
        assert torch.allclose(logits, full[:, i], atol=1e-5), (i, (logits - full[:, i]).abs().max())


def test_ed_score_replies_is_the_teacher_forced_log_likelihood(chat_tok):
    model = tiny('chatbert_ed', chat_tok)
    replies = ['glad to hear it', 'it is 4', 'why did the chicken cross the road?', '']  # the third is cut to 8 tokens
    bot = chat_for(model, chat_tok)
    got = bot.score_replies(HISTORY, replies)
    context = bot.context(HISTORY)
    for reply, (logp, n) in zip(replies, got):
        row, length = render_response(chat_tok, reply, 8)
        assert n == length == min(len(chat_tok.encode(reply)) + 1, 8)
        with torch.no_grad():
            logits, _ = model(context, torch.tensor([row]))
        lp = logits[0].double().log_softmax(-1)
        want = sum(lp[j, row[j]].item() for j in range(n))  # the reply's tokens and its end token, no padding
        assert logp == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_ed_cross_attention_sees_the_context_but_not_its_pads(chat_tok):
    model, pad = tiny('chatbert_ed', chat_tok), chat_tok.special('<|pad|>')
    context = chat_for(model, chat_tok).context([('user', 'hello')])  # short: left-padded
    pads = context[0] == pad
    assert 0 < pads.sum() < context.size(1)
    kv, mask = model.encode(context)
    assert mask.shape == (1, 1, 1, context.size(1)) and torch.equal(mask[0, 0, 0], ~pads)
    idx = torch.tensor([[context[0, -1].item(), 10, 20, 30]])

    def decode_with(at):  # the decoder's output with the cross-attention's keys and values replaced at `at`
        new = []
        for k, v in kv:
            k, v = k.clone(), v.clone()
            k[:, :, at], v[:, :, at] = 5 * torch.randn_like(k[:, :, at]), 5 * torch.randn_like(v[:, :, at])
            new.append((k, v))
        with torch.no_grad():
            return model.decode(idx, new, mask)
    with torch.no_grad():
        base = model.decode(idx, kv, mask)
    torch.manual_seed(0)
    assert torch.allclose(decode_with(pads), base, atol=1e-6)  # what sits at a pad is never read
    assert not torch.allclose(decode_with(~pads), base, atol=1e-3)  # what sits at a token is


# -----------------------------------------------------------------------------
# ChatBERT-RA: a bi-encoder, and the pool of responses it retrieves from

@pytest.fixture
def pair_dir(tmp_path, chat_tok):
    """tmp_path/data/tiny: the conversations' pairs (16 context, 8 response tokens); tmp_path is a run's folder."""
    write_pairs(str(tmp_path / 'data' / 'tiny'), chat_tok, {'train': CONVERSATIONS, 'val': CONVERSATIONS[:2]}, 16, 8,
                source='tests')
    return tmp_path / 'data' / 'tiny'


def test_response_pool_is_an_exact_search_over_the_distinct_responses(chat_tok, pair_dir):
    model = tiny('chatbert_ra', chat_tok)
    bot = chat_for(model, chat_tok)
    stops = bot.stops
    rows = np.load(pair_dir / 'train_response.npy')
    pool = ResponsePool.build(model, chat_tok, np.concatenate([rows, rows[:4], rows[2:3]]), stops)  # duplicate rows
    distinct = sorted({tuple(r) for r in rows.tolist()})
    # whole responses only: a row cut to response_len, with no end token, would end mid-sentence
    whole = [r for r in distinct if any(t in stops for t in r)]
    assert len(distinct) == len(rows) == 11 and 0 < len(whole) < 11
    assert len(pool.texts) == pool.index.ntotal == len(whole)
    # each text is its response up to the end token: no <|user|>, no <|pad|>
    want_texts = [chat_tok.decode(stop_at(r, stops)) for r in whole]
    assert sorted(pool.texts) == sorted(want_texts)
    assert sorted(pool.texts) == sorted(t for c in CONVERSATIONS for _, t in c[1:] if len(chat_tok.encode(t)) < 8)
    assert not any('<|' in t for t in pool.texts)
    # search: the k best by inner product, as a brute-force product over the encoded responses finds them
    histories = [HISTORY, [('user', 'good night')], [('user', 'what is 2 + 2?')]]
    with torch.no_grad():
        queries = torch.cat([model.encode(bot.context(h)) for h in histories])
        vectors = model.encode(torch.tensor(whole))
    k = min(4, len(whole))
    scores, ids = pool.search(queries, k)
    assert scores.shape == ids.shape == (3, k)
    brute = queries @ vectors.t()
    top = brute.topk(k, dim=1)
    assert torch.allclose(scores, top.values, atol=1e-5)
    for q in range(3):
        assert [pool.texts[i] for i in ids[q].tolist()] == [want_texts[j] for j in top.indices[q].tolist()]
    assert torch.allclose(queries.norm(dim=1), torch.ones(3)) and torch.allclose(vectors.norm(dim=1), torch.ones(len(whole)))


def test_response_pool_is_saved_beside_the_checkpoint_and_rebuilt_when_it_changes(chat_tok, pair_dir, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # for_checkpoint reads data/<dataset>/train_response.npy from the folder it runs in
    (tmp_path / 'run').mkdir()
    model = tiny('chatbert_ra', chat_tok)
    bot = chat_for(model, chat_tok)
    ckpt = {'path': str(tmp_path / 'run' / 'ckpt.pt'), 'iter_num': 10, 'best_val_loss': 1.25, 'config': {'dataset': 'tiny'}}
    real_build, builds = ResponsePool.__dict__['build'].__func__, []

    def counted(cls, *args, **kwargs):
        builds.append(ckpt['iter_num'])
        return real_build(cls, *args, **kwargs)
    monkeypatch.setattr(ResponsePool, 'build', classmethod(counted))

    built = ResponsePool.for_checkpoint(model, chat_tok, ckpt, bot.stops)
    assert builds == [10]
    assert (tmp_path / 'run' / 'ckpt_pool.faiss').is_file()
    saved = json.loads((tmp_path / 'run' / 'ckpt_pool.json').read_text())
    assert saved['texts'] == built.texts and saved['stamp'] == {'iter': 10, 'val_loss': 1.25}

    def no_build(cls, *args, **kwargs):
        raise AssertionError("the pool was embedded again, though the checkpoint is the same")
    monkeypatch.setattr(ResponsePool, 'build', classmethod(no_build))
    loaded = ResponsePool.for_checkpoint(model, chat_tok, dict(ckpt), bot.stops)
    assert loaded.texts == built.texts
    with torch.no_grad():
        query = model.encode(bot.context(HISTORY))
    for a, b in zip(loaded.search(query, 5), built.search(query, 5)):
        assert torch.equal(a, b)
    # its Chat finds the pool through the checkpoint the model was loaded from (engine.chat_for is given it)
    found = chat_for(model, chat_tok, dict(ckpt)).candidates(HISTORY, 3)
    assert [t for _, t in found] == [loaded.texts[i] for i in loaded.search(query, 3)[1][0].tolist()]

    monkeypatch.setattr(ResponsePool, 'build', classmethod(counted))
    ckpt['iter_num'] = 20  # trained on: the pool's vectors are stale
    ResponsePool.for_checkpoint(model, chat_tok, ckpt, bot.stops)
    assert builds == [10, 20]
    assert json.loads((tmp_path / 'run' / 'ckpt_pool.json').read_text())['stamp'] == {'iter': 20, 'val_loss': 1.25}

    ckpt['iter_num'] = 30
    monkeypatch.chdir(tmp_path / 'run')  # not where it was trained: no data/tiny here
    with pytest.raises(SystemExit, match='train_response.npy'):
        ResponsePool.for_checkpoint(model, chat_tok, ckpt, bot.stops)


def test_ra_candidates_never_offer_more_than_the_pool_holds(chat_tok, pair_dir):
    model = tiny('chatbert_ra', chat_tok)
    bot = chat_for(model, chat_tok)
    bot.pool = ResponsePool.build(model, chat_tok, np.load(pair_dir / 'train_response.npy'), bot.stops)  # fewer than 20
    found = bot.candidates(HISTORY, 20)  # chat.py's /top 20, or reply_stream's default top_k=50
    assert len(found) == len(bot.pool.texts) < 20 and all(-1.001 <= s <= 1.001 for s, _ in found), found


def test_ra_score_replies_ranks_by_the_cosine_of_context_and_reply(chat_tok):
    model = tiny('chatbert_ra', chat_tok)
    replies = ['glad to hear it', 'it is 4', 'sleep well, see you tomorrow', 'me too', '42']
    got = chat_for(model, chat_tok).score_replies(HISTORY, replies)
    with torch.no_grad():
        rows = torch.tensor([render_response(chat_tok, r, 8)[0] for r in replies])
        context = torch.tensor([render_context(chat_tok, HISTORY, 16)])
        cosine = model.encode(rows) @ model.encode(context)[0]
        scale = model.logit_scale.exp().item()
    assert [n for _, n in got] == [1] * len(replies)
    # a row's vector: the mean of the encoder's outputs over its tokens, its padding left out, at unit length
    with torch.no_grad():
        keep = (rows != chat_tok.special('<|pad|>'))[..., None]
        mean = (model.hidden(rows) * keep).sum(1) / keep.sum(1)
    assert torch.allclose(model.encode(rows), mean / mean.norm(dim=1, keepdim=True), atol=1e-5)
    assert [s for s, _ in got] == pytest.approx((scale * cosine).tolist(), abs=1e-4)
    assert sorted(range(len(replies)), key=lambda i: -got[i][0]) == cosine.argsort(descending=True).tolist()


def test_ra_loss_is_in_batch_contrastive_both_ways(chat_tok):
    model = tiny('chatbert_ra', chat_tok)
    c = torch.tensor([render_context(chat_tok, h, 16) for h in (HISTORY, [('user', 'good night')], [('user', 'tea?')])])
    r = torch.tensor([render_response(chat_tok, t, 8)[0] for t in ('good, thanks', 'sleep well', 'I do')])
    logits, loss = model(c, r)
    sims = model.encode(c) @ model.encode(r).t() * model.logit_scale.exp()
    assert torch.allclose(logits, sims, atol=1e-5)
    rows, cols = sims.log_softmax(1).diagonal(), sims.log_softmax(0).diagonal()
    assert loss.item() == pytest.approx(-(rows.mean() + cols.mean()).item() / 2, rel=1e-5)


# -----------------------------------------------------------------------------
# ChatBERT-IMR: the ELBO's bound as a score, and how a reply that is filling in looks

def test_imr_score_replies_shares_its_mask_draws_among_replies(chat_tok):
    bot = chat_for(tiny('chatbert_imr', chat_tok), chat_tok)
    a, b = 'glad to hear it', 'it is 4'
    twice = bot.score_replies(HISTORY, [a, a])
    assert twice[0] == pytest.approx(twice[1], rel=1e-6) and twice[0][1] == 8
    alone = bot.score_replies(HISTORY, [a])[0]
    pair = bot.score_replies(HISTORY, [a, b])
    assert pair[0][0] == pytest.approx(alone[0], rel=1e-5) and pair[1][1] == len(chat_tok.encode(b)) + 1
    assert bot.score_replies(HISTORY, [a])[0][0] == pytest.approx(alone[0], rel=1e-6)  # the same draws again
    other = bot.score_replies(HISTORY, [a], seed=1)[0][0]
    assert other != pytest.approx(alone[0], rel=1e-4)  # other draws, another estimate: the draws are the seed's
    assert alone[0] < 0  # minus a bound on an NLL


def test_imr_show_masks_and_stops_at_the_end(chat_tok):
    bot, mask = chat_for(tiny('chatbert_imr', chat_tok), chat_tok), chat_tok.special('<|mask|>')
    enc = chat_tok.encode
    assert bot.show(enc('hi') + [mask, mask] + enc(' there') + [chat_tok.special('<|user|>')] + enc('junk')) \
        == 'hi' + 2 * IMRChat.MASK_SHOWN + ' there'
    assert bot.show([mask] + enc('ok') + [chat_tok.special('<|pad|>')] + enc('junk')) == IMRChat.MASK_SHOWN + 'ok'
    assert bot.show([chat_tok.special('<|assistant|>')] + enc('junk')) == ''
    assert bot.show(enc('no end at all')) == 'no end at all'


def test_imr_reply_stream_fills_in_from_all_masks(chat_tok):
    bot = chat_for(tiny('chatbert_imr', chat_tok), chat_tok)
    torch.manual_seed(0)
    states = list(bot.reply_stream(HISTORY, temperature=0, steps=4))
    assert len(states) == 4 and IMRChat.MASK_SHOWN not in states[-1]
    assert states[0].count(IMRChat.MASK_SHOWN) <= 6  # 2 of 8 tokens committed at the first step


# -----------------------------------------------------------------------------
# FIB: fill in the blanks of a template

def test_parse_template():
    assert parse_template('I think ___ is ___{2} because ___') == [
        ('text', 'I think'), ('blank', None), ('text', ' is'), ('blank', 2), ('text', ' because'), ('blank', None)]
    assert parse_template('___{3}, right?') == [('blank', 3), ('text', ', right?')]
    assert parse_template('_____ ok') == [('blank', None), ('text', ' ok')]  # 3 underscores or more
    for bad, said in (('I think so', 'at least one blank'), ('no __ blank', 'at least one blank'),
                      ('I think ___{0}', 'n >= 1')):
        with pytest.raises(ValueError, match=said):
            parse_template(bad)


@pytest.fixture
def fib(chat_tok):
    """The Chat of a 32-token-response IMR model that, left alone, would fill every blank with a token a blank must
    never hold: their logits are raised far above the others'."""
    model = tiny('chatbert_imr', chat_tok, block_size=48, response_len=32, n_layer=1)
    bot = chat_for(model, chat_tok)
    banned = sorted(bot.stops | {chat_tok.special('<|mask|>'), chat_tok.bos}
                    | {chat_tok.special(s) for s in ('<|user|>', '<|assistant|>', '<|pad|>')})
    real_head, boost = model.head, torch.zeros(chat_tok.vocab_size)
    boost[banned] = 100.0
    model.head = lambda x: real_head(x) + boost
    bot.banned = banned
    return bot


def test_fib_keeps_the_template_words_and_fills_blanks_with_words(fib, chat_tok, monkeypatch):
    template = 'I think ___ is ___{2} because ___'
    pieces = parse_template(template)
    calls, real = [], fib.mask_predict

    def spy(history, pieces, lengths, iterations):
        out = real(history, pieces, lengths, iterations)
        calls.append((list(lengths), out))
        return out
    monkeypatch.setattr(fib, 'mask_predict', spy)
    texts = list(fib.fill_stream(HISTORY, template))
    final = texts[-1]
    assert final.startswith('I think') and final.index(' is', 7) < final.index(' because')
    # the bare blanks: each of BLANK_LENGTHS tried in turn, the others as they stand, and the best kept
    tries, (lengths, out) = calls[:-1], calls[-1]
    assert len(tries) == 2 * len(IMRChat.BLANK_LENGTHS) and lengths[1] == 2
    for j, group in ((0, tries[:4]), (2, tries[4:])):
        assert [ls[j] for ls, _ in group] == list(IMRChat.BLANK_LENGTHS)
        assert lengths[j] == max(group, key=lambda c: c[1][-1][1])[0][j]
    assert lengths[0] in IMRChat.BLANK_LENGTHS and lengths[2] in IMRChat.BLANK_LENGTHS
    assert len(texts) == len(out) == 4 and texts == [fib.show(ids) for ids, _ in out]
    ids, free = template_ids(chat_tok, pieces, lengths)
    for response, _ in out:
        # the template's own tokens never move; every blank holds a word, never a special token
        assert [t for t, f in zip(response, free) if not f] == [t for t, f in zip(ids, free) if not f]
        assert not set(t for t, f in zip(response, free) if f) & set(fib.banned)
        assert response[len(ids)] == chat_tok.special('<|user|>')  # then the end token and padding, as a response
        assert set(response[len(ids) + 1:]) == {chat_tok.special('<|pad|>')}


def test_fib_blank_of_a_given_length_gets_that_many_tokens(fib, chat_tok):
    pieces = parse_template('I think ___{3}')
    out = fib.mask_predict(HISTORY, pieces, [3], 4)
    prefix = chat_tok.encode('I think')
    final = out[-1][0]
    assert final[:len(prefix)] == prefix and final[len(prefix) + 3] == chat_tok.special('<|user|>')
    assert not set(final[len(prefix):len(prefix) + 3]) & set(fib.banned)
    texts = list(fib.fill_stream(HISTORY, 'I think ___{3}'))
    assert texts[-1] == fib.show(final) and texts[-1].startswith('I think')


def test_fib_a_bare_blank_takes_a_length_that_fits(chat_tok):
    fixed = len(chat_tok.encode('I think it is'))
    model = tiny('chatbert_imr', chat_tok, response_len=fixed + 2, n_layer=1)  # room for the words, 1 blank token, the end
    bot = chat_for(model, chat_tok)
    assert list(bot.fill_stream(HISTORY, 'I think it is ___{1}'))  # fits
    texts = list(bot.fill_stream(HISTORY, 'I think it is ___'))  # the same, its length left to the model
    assert texts[-1].startswith('I think it is')


def test_fib_refuses_a_template_longer_than_a_reply(fib, chat_tok):
    with pytest.raises(ValueError, match='room for 31'):
        list(fib.fill_stream(HISTORY, 'I think ___{30}'))
    with pytest.raises(ValueError, match='at least one blank'):
        list(fib.reply_stream(HISTORY, template='no blanks here'))


# -----------------------------------------------------------------------------
# through train.py: the pair source, the checkpoint, and overfitting a handful of pairs

@pytest.fixture(scope='module')
def pairs(workdir, chat_tok):
    out = workdir / 'data' / DATASET
    write_pairs(str(out), chat_tok, {'train': CONVERSATIONS, 'val': CONVERSATIONS}, 16, 8, source='tests')
    return out


def test_pair_source_wants_the_whole_pair_as_its_block_and_tells_the_model_its_shape(pairs, chat_tok):
    for wrong in (16, 25):
        with pytest.raises(SystemExit) as e:
            SOURCES['pairs'](str(pairs), wrong, 4, 'cpu')
        assert 'block_size' in str(e.value.code) and '24' in str(e.value.code)
    assert SOURCES['pairs'](str(pairs), 24, 4, 'cpu').model_args == {'response_len': 8, 'pad_id': chat_tok.special('<|pad|>')}


OVERFIT = ['--causal=False', '--data_source=pairs', '--block_size=24', '--batch_size=8', '--max_iters=150',
           '--eval_interval=150', '--eval_iters=10', '--learning_rate=1e-2', '--warmup_iters=0', '--log_interval=50']


def test_ed_overfits_tiny_pairs_and_its_checkpoint_knows_its_shape(pairs, chat_tok, workdir, tmp_path):
    train(workdir, tmp_path, '--model_kind=chatbert_ed', *OVERFIT, dataset=DATASET)
    first, last = [r['train_loss'] for r in read_log(tmp_path) if 'train_loss' in r]
    assert first > 4.5 and last < 1.0, (first, last)  # ~5.7 -> ~0.4: the decoder memorises 11 replies
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    args = ckpt['model_args']
    assert ckpt['model_kind'] == 'chatbert_ed'
    assert (args['response_len'], args['pad_id'], args['block_size'], args['causal']) == (8, chat_tok.special('<|pad|>'), 24, False)


def test_ra_overfits_tiny_pairs(pairs, workdir, tmp_path):
    # in-batch negatives: a batch of 8 at chance costs ln 8 = 2.08; 8 rows drawn from 11 pairs repeat some, so the
    # loss can't reach 0
    train(workdir, tmp_path, '--model_kind=chatbert_ra', *OVERFIT, dataset=DATASET)
    first, last = [r['train_loss'] for r in read_log(tmp_path) if 'train_loss' in r]
    assert last < 1.0 and last < 0.4 * first, (first, last)  # ~5.5 -> ~0.5


def test_train_py_refuses_a_causal_chatbert(pairs, workdir, tmp_path):
    proc = train(workdir, tmp_path, '--model_kind=chatbert_ra', '--data_source=pairs', '--block_size=24',
                 '--max_iters=1', dataset=DATASET, check=False)
    assert proc.returncode == 1 and 'causal=False' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.fixture(scope='module')
def imr_run(pairs, workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp('imr')
    train(workdir, out, '--model_kind=chatbert_imr', *OVERFIT, '--data_source=masked_pairs', '--max_iters=60',
          '--eval_interval=60', dataset=DATASET)
    return out


def test_chat_fills_a_template_with_an_imr_checkpoint(imr_run, tmp_path):
    said = '\n'.join(['/steps 2', 'hello', '/steps x', '/template I think ___{2}', 'good night',
                      '/template I think ___{9}', 'hello again', '/quit']) + '\n'
    proc = run('chat.py', f'--out_dir={imr_run}', '--device=cpu', stdin=said, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert '(steps = 2' in out and '(/steps takes a int' in out
    after = out[out.index("(template = 'I think ___{2}'"):]
    shown = re.findall(r'Bot: (.*)', after)
    assert len(shown) == 2 and all(s.startswith('I think') and len(s) > len('I think') for s in shown), shown
    # too long for 8: refused when set (the web's check too), and chat goes on with the template it had
    assert '(/template: the template takes 14 tokens with its blanks; a reply has room for 7)' in after


def test_sample_py_sends_a_chatbert_checkpoint_to_chat_py(imr_run, tmp_path):
    proc = run('sample.py', f'--out_dir={imr_run}', '--device=cpu', cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'chat.py' in lines[0], proc.stderr


# -----------------------------------------------------------------------------
# chatting with no model: BM25 over the training conversations

def test_bm25_replies_with_the_reply_to_the_most_similar_turn():
    bot = BM25Chat([
        [('user', 'do you like green tea with milk'), ('assistant', 'yes, every morning')],
        [('user', 'where is the train station'), ('assistant', 'two blocks north of here'),
         ('user', 'what time does the concert start tonight'), ('assistant', 'at eight, on the main stage')],
        [('user', 'I adopted a puppy yesterday'), ('assistant', 'how lovely, what breed?'), ('user', '   ')],
    ])
    assert len(bot.replies) == 5  # every turn with a reply after it; a blank turn is neither
    assert list(bot.reply_stream([('user', 'when is the concert tonight?')])) == ['at eight, on the main stage']
    found = bot.candidates([('assistant', 'hi'), ('user', 'any trains to the station?')], 10)
    assert len(found) == 5 and found[0][1] == 'two blocks north of here'
    assert [s for s, _ in found] == sorted((s for s, _ in found), reverse=True)


def test_chat_demo_answers_with_no_checkpoint(tmp_path):
    proc = run('chat.py', '--demo=True', stdin='hi, how are you?\n/top 3\n/quit\n', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    replies = re.findall(r'Bot: (.*)', proc.stdout)
    assert len(replies) == 1 and replies[0].strip(), proc.stdout
    top = re.findall(r'(?:^|You:) +(-?\d+\.\d{3})  \S', proc.stdout, flags=re.M)  # a line per candidate, score first
    assert len(top) == 3 and [float(s) for s in top] == sorted(map(float, top), reverse=True), proc.stdout


# -----------------------------------------------------------------------------
# projects/chatbert/experiment.py and eval.py: equal wall time, the accounting, the draws' convergence

def test_experiment_gives_every_kind_the_same_seconds_and_counts_its_targets():
    from projects.chatbert.experiment import accounting, iterations, ms_per_iter, train_seconds
    rows = [{'iter': 5, 'ms': 900.0}, {'iter': 10, 'ms': 100.0}, {'iter': 15, 'ms': 300.0}, {'iter': 15, 'val_loss': 3.0}]
    assert ms_per_iter(rows) == 200.0  # the first logged row (one-off costs) left out
    assert train_seconds(rows) == (5 * 900 + 5 * 100 + 5 * 300) / 1000
    assert iterations(180, 810.6) == 222 and iterations(180, 1880.8) == 96  # 180 s either way
    assert iterations(180, 810.6) * 810.6 / 1000 == pytest.approx(180, rel=0.01)
    cfg = {'batch_size': 32, 'block_size': 128}
    ed = accounting('ed', cfg, 1_000_000, 100, response_tokens=9.5)
    assert ed['tokens_processed'] == 100 * 32 * 128 and ed['flops'] == 6 * 1_000_000 * 100 * 32 * 128
    assert ed['supervised_targets'] == 100 * 32 * 9.5  # response tokens only, though 128 are read
    assert accounting('gpt', {'batch_size': 16, 'block_size': 128}, 1, 10, 9.5)['supervised_targets'] == 10 * 16 * 128
    assert accounting('ra', {'batch_size': 64, 'block_size': 128}, 1, 10, 9.5)['supervised_targets'] == 10 * 64 * 2
    imr = accounting('imr', {'batch_size': 16, 'block_size': 128}, 1, 10, 9.5)['supervised_targets']
    assert imr == pytest.approx(10 * 16 * 16, rel=0.01)  # half the 32 response positions masked on average


def test_eval_takes_the_fewest_draws_within_the_tolerance_and_pools_seeds_pair_by_pair():
    import importlib
    ev = importlib.import_module('projects.chatbert.eval')
    curve = {1: {'nll': [5.0, 3.0]}, 2: {'nll': [4.1, 3.9]}, 4: {'nll': [4.01, 3.99]}, 8: {'nll': [4.0, 4.0]}}
    assert ev.converged(curve) == 4
    assert ev.converged({1: {'nll': [1.0, 9.0]}, 2: {'nll': [4.0, 6.0]}}) == 2  # nothing settles: the most draws
    items = [{'rank': [1, 2, 1], 'similarity': [0.2, 0.4, 0.6]}, {'rank': [1, 1, 3], 'similarity': [0.4, 0.4, 0.0]}]
    assert ev.pooled(items, 'hit').tolist() == [1.0, 0.5, 0.5]
    assert ev.pooled(items, 'similarity').tolist() == pytest.approx([0.3, 0.4, 0.3])
    same = [{'reply': ['hello there', 'yes']}]
    d = ev.chrf_diff(same, same, ['hello there', 'no'])
    assert d['diff'] == 0 and d['lo'] == 0 and d['hi'] == 0
