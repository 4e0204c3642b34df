"""
Conversation metrics on held-out conversations, for any chat model. The metrics take functions, not a model,
so every model kind plugs in its own (scorer and replier wrap its engine.Chat's score_replies and reply):
    score(history, replies) -> [(sum log-prob, n_tokens), ...]   how likely each reply is after history
    reply(history) -> text                                        the model's reply to history
history is a list of (role, text) turns, oldest first; a reply is the next 'assistant' turn.
    from splits import split_conversations
    ps = pairs(split_conversations()['test'], n=200, seed=0)
    bot = engine.chat_for(model, tok, ckpt)
    evaluate(ps, score=scorer(bot), reply=replier(bot),
             teacher_model=teacher.load())  # {'response_ppl': ..., 'hits@1/20': ..., 'distinct_1': ..., ...}
"""
import math
import random
import time
from collections import Counter

from tqdm import tqdm

import teacher
from common import need

# -----------------------------------------------------------------------------
# held-out (history, reply) pairs


def pairs(convs, n, seed, min_context=1):
    """Up to n (history, reply) pairs, at most one per conversation so that they are independent: in a random
    order of conversations (seed), a random assistant turn with at least min_context turns before it, not empty."""
    rng = random.Random(seed)
    order = rng.sample(range(len(convs)), len(convs))
    out = []
    for c in order:
        if len(out) == n:
            break
        slots = [i for i, (role, text) in enumerate(convs[c])
                 if role == 'assistant' and i >= min_context and text.strip()]
        if slots:
            i = rng.choice(slots)
            out.append((list(convs[c][:i]), convs[c][i][1]))
    return out

# -----------------------------------------------------------------------------
# a model (its engine.Chat) as a scorer and a replier


def scorer(bot):
    """score(history, replies) of any model kind's Chat: its own score_replies (a GPT's likelihood, ChatBERT-IMR's
    bound, a retriever's similarity)."""
    return bot.score_replies


def replier(bot, max_new_tokens=48, temperature=0.0, top_k=None, top_p=None, **settings):
    """reply(history): the text chat.py would answer, greedy by default so that metrics are reproducible."""
    return lambda history: bot.reply(history, max_new_tokens, temperature, top_k, top_p, **settings)


# -----------------------------------------------------------------------------
# metrics of generated replies


def ngrams(text, n):
    words = text.lower().split()
    return list(zip(*(words[i:] for i in range(n))))


def distinct_n(texts, n):
    """Distinct-n (Li et al. 2016), corpus-level: unique word n-grams / all word n-grams over all texts
    (lowercased, split on whitespace, none across texts). Low: the model says the same things to everyone."""
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts):
    """The mean over texts of 1 - unique/total word trigrams: the share of a text's trigrams that repeat one
    before them ('a b c a b c': 1 of 4). Texts of fewer than 3 words count 0. High: the model loops."""
    rates = [1 - len(set(g)) / len(g) if g else 0.0 for g in (ngrams(t, 3) for t in texts)]
    return sum(rates) / len(rates) if rates else 0.0


def bleu2(hyps, refs):
    """Corpus BLEU with n-grams up to 2 (sacrebleu, its default 13a tokens), 0-100."""
    need('sacrebleu', 'projects/chatbert/requirements.txt')  # not the core's: each project that scores replies lists it
    from sacrebleu.metrics import BLEU
    return BLEU(max_ngram_order=2).corpus_score(list(hyps), [list(refs)]).score


def chrf(hyps, refs):
    """Corpus chrF (sacrebleu: character 6-grams, beta 2), 0-100."""
    need('sacrebleu', 'projects/chatbert/requirements.txt')  # as bleu2
    from sacrebleu.metrics import CHRF
    return CHRF().corpus_score(list(hyps), [list(refs)]).score


def coherence_items(histories, replies, teacher_model):
    """Per reply, the cosine between the teacher's sentence embeddings of the context, taken as the history's last
    turn (what a reply answers), and the reply. Echo wins it: report it only beside floors()."""
    ctx = teacher.embed(teacher_model, [h[-1][1] if h else '' for h in histories])
    return (ctx * teacher.embed(teacher_model, list(replies))).sum(1).tolist()


def coherence(histories, replies, teacher_model):
    """The mean of coherence_items."""
    return _mean(coherence_items(histories, replies, teacher_model))

# -----------------------------------------------------------------------------
# metrics of a scorer


def ranks(score, pairs, n_candidates=20, seed=0):
    """Each pair's true reply's rank among n_candidates: it and n_candidates - 1 replies of other pairs (other
    conversations; none of the same text, which would tie), drawn with the seed. A tie counts against the true
    reply, so a scorer that can't tell the replies apart ranks it last, not first."""
    if len(pairs) < n_candidates:
        raise ValueError(f"ranking among {n_candidates} needs at least {n_candidates} pairs, got {len(pairs)}")
    rng, out = random.Random(seed), []
    for i, (history, reply) in enumerate(tqdm(pairs, desc=f'ranking among {n_candidates}', leave=False, disable=None)):
        others = [j for j in range(len(pairs)) if j != i and pairs[j][1] != reply]
        candidates = [reply] + [pairs[j][1] for j in rng.sample(others, n_candidates - 1)]
        # ranked by the mean log-prob per token: a sum would favour short replies ('lol', 'yes') whatever the
        # history, as each token costs log-prob; per token, a reply wins by fitting the history
        s = [lp / n for lp, n in score(history, candidates)]
        out.append(1 + sum(x >= s[0] for x in s[1:]))
    return out


def hits_at_1(score, pairs, n_candidates=20, seed=0):
    """The share of pairs whose true reply ranks first among n_candidates (ranks)."""
    return sum(r == 1 for r in ranks(score, pairs, n_candidates, seed)) / len(pairs)


def likelihoods(score, pairs):
    """Per pair, (sum log-prob, n_tokens) of the true reply (with its turn-ending token, for a GPT)."""
    return [score(h, [r])[0] for h, r in tqdm(pairs, desc='response ppl', leave=False, disable=None)]


def response_ppl(score, pairs):
    """exp(total NLL / total tokens) of the true replies."""
    lps = likelihoods(score, pairs)
    return math.exp(-sum(lp for lp, _ in lps) / sum(k for _, k in lps))

# -----------------------------------------------------------------------------


def unigram_f1(hyp, ref):
    """F1 of the words two texts share (lowercased, whitespace split, counted with multiplicity): SQuAD's and
    ParlAI's F1 without their punctuation rules."""
    h, r = Counter(hyp.lower().split()), Counter(ref.lower().split())
    same = sum((h & r).values())
    if not same:
        return 0.0
    precision, recall = same / sum(h.values()), same / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def word_entropy(text):
    """The entropy in bits of a text's own word distribution: log2 of its length for all-different words, 0 for
    one word said again and again."""
    counts = Counter(text.lower().split())
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def similarity(replies, refs, teacher_model):
    """Per reply, the teacher's cosine between it and the human reply: a reference-based measure that echoing the
    context or a stock "yeah" can't win, unlike coherence."""
    return (teacher.embed(teacher_model, list(replies)) * teacher.embed(teacher_model, list(refs))).sum(1).tolist()


def floors(pairs, train_convs, seed=0):
    """The replies no model is needed for, each a list aligned with pairs, so a table shows what its metrics reward:
    copy the history's last turn (wins coherence by echo), one constant reply ('yeah', the most common short
    reply), and a random human reply from the training conversations (fluent, human and unrelated)."""
    rng = random.Random(seed)
    pool = [t for turns in train_convs for role, t in turns if role == 'assistant' and t.strip()]
    return {'copy the last turn': [h[-1][1] if h else '' for h, _ in pairs],
            'constant "yeah"': ['yeah'] * len(pairs),
            'random human reply': [rng.choice(pool) for _ in pairs]}


def _mean(xs):
    return sum(xs) / len(xs)


# each metric as a function of per-pair items (a dict of equal-length lists), so that one definition gives both the
# number and, over resampled pairs, its bootstrap interval; corpus-level metrics (ppl, chrF, distinct-n) stay corpus-level
METRICS = {
    'response_ppl': lambda it: math.exp(-sum(it['logprob']) / sum(it['tokens'])),
    'hits@1': lambda it: _mean([r == 1 for r in it['rank']]),
    'mrr': lambda it: _mean([1 / r for r in it['rank']]),
    'ms_per_reply': lambda it: _mean(it['ms']),
    'distinct_1': lambda it: distinct_n(it['reply'], 1),
    'distinct_2': lambda it: distinct_n(it['reply'], 2),
    'repetition': lambda it: repetition_rate(it['reply']),
    'bleu2': lambda it: bleu2(it['reply'], it['ref']),
    'chrf': lambda it: chrf(it['reply'], it['ref']),
    'f1': lambda it: _mean(it['f1']),
    'entropy': lambda it: _mean(it['entropy']),
    'gen_ppl': lambda it: math.exp(-sum(it['gen_logprob']) / sum(it['gen_tokens'])),
    'coherence': lambda it: _mean(it['coherence']),
    'similarity': lambda it: _mean(it['similarity']),
}
NEEDS = {'response_ppl': 'logprob', 'hits@1': 'rank', 'mrr': 'rank', 'ms_per_reply': 'ms', 'gen_ppl': 'gen_logprob',
         'coherence': 'coherence', 'similarity': 'similarity'}


def metrics(items, keys=None):
    """Every metric (or those in keys) that items allow, by METRICS."""
    return {k: f(items) for k, f in METRICS.items()
            if NEEDS.get(k, 'reply') in items and (keys is None or k in keys)}


def intervals(items, keys=None, n_boot=500, level=0.95, seed=0, n_candidates=20):
    """{metric: (lo, hi)}: percentile bootstrap intervals over the pairs, each metric computed as metrics() does
    on every resample (stats.bootstrap_ci over item indices); keys named as evaluate() names them. distinct-n has
    none: a resample repeats pairs, and it would count their replies as the model repeating itself."""
    from stats import bootstrap_ci
    n = len(items['ref'])
    pick = lambda idx: {k: [v[i] for i in idx] for k, v in items.items()}  # noqa: E731
    return {(f'hits@1/{n_candidates}' if k == 'hits@1' else k): bootstrap_ci(range(n), lambda idx, f=f: f(pick(idx)), n_boot, level, seed)
            for k, f in METRICS.items() if NEEDS.get(k, 'reply') in items and (keys is None or k in keys)
            and not k.startswith('distinct')}


def evaluate(pairs, score=None, reply=None, teacher_model=None, n_candidates=20, seed=0, likelihood=True, judge=None,
             replies=None):
    """Every metric that what was given allows. A score gives hits@1/<n_candidates> and mrr and, if it is a
    likelihood (not a retriever's similarity), response_ppl. A reply (or the replies, given as a list aligned with
    pairs: a floor) gives ms_per_reply (reply only), distinct_1/2, repetition, bleu2, chrf and f1 against the true
    replies, and entropy (of each reply's words); with a teacher_model, coherence (with the last turn) and
    similarity (with the human reply); with a judge (another model's score), gen_ppl, the replies' perplexity under
    it. 'items' holds the per-pair values behind every metric, for intervals() and paired comparisons; 'samples' a
    few (context, reference, generated) triples."""
    if not pairs:
        raise ValueError("no (history, reply) pairs to evaluate")
    histories, refs = [h for h, _ in pairs], [r for _, r in pairs]
    items = {'ref': refs}
    if score is not None:
        if likelihood:
            lps = likelihoods(score, pairs)
            items.update(logprob=[lp for lp, _ in lps], tokens=[k for _, k in lps])
        items['rank'] = ranks(score, pairs, n_candidates, seed)
    if reply is not None:
        replies, items['ms'] = [], []
        for h in tqdm(histories, desc='replies', leave=False, disable=None):
            t0 = time.perf_counter()
            replies.append(reply(h))
            items['ms'].append(1000 * (time.perf_counter() - t0))
    if replies is not None:
        items.update(reply=list(replies), f1=list(map(unigram_f1, replies, refs)), entropy=list(map(word_entropy, replies)))
        if judge is not None:
            lps = likelihoods(judge, list(zip(histories, replies)))
            items.update(gen_logprob=[lp for lp, _ in lps], gen_tokens=[k for _, k in lps])
        if teacher_model is not None:
            items['coherence'] = coherence_items(histories, replies, teacher_model)
            items['similarity'] = similarity(replies, refs, teacher_model)
    if len(items) == 1:
        return {}
    out = metrics(items)
    if 'hits@1' in out:
        out[f'hits@1/{n_candidates}'] = out.pop('hits@1')
    if replies is not None:
        if teacher_model is not None:  # what people score: not a ceiling, as echo and "yeah" can beat it
            out['coherence_reference'] = coherence(histories, refs, teacher_model)
        out['samples'] = [(h[-1][1] if h else '', r, g) for h, r, g in list(zip(histories, refs, replies))[:5]]
    out['items'] = items
    return out
