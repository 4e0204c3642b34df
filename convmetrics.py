"""
Conversation metrics on held-out conversations, for any chat model. The metrics take functions, not a model,
so every model kind plugs in its own (gpt_scorer and gpt_replier are the GPT's):
    score(history, replies) -> [(sum log-prob, n_tokens), ...]   how likely each reply is after history
    reply(history) -> text                                        the model's reply to history
history is a list of (role, text) turns, oldest first; a reply is the next 'assistant' turn.
    from prepare.chitchat import split_conversations
    ps = pairs(split_conversations()[1], n=200, seed=0)
    evaluate(ps, score=gpt_scorer(model, tok, 'cpu'), reply=gpt_replier(model, tok, 'cpu'),
             teacher_model=teacher.load())  # {'response_ppl': ..., 'hits@1/20': ..., 'distinct_1': ..., ...}
"""
import math
import random

import torch
from sacrebleu.metrics import BLEU, CHRF
from tqdm import tqdm

import teacher
import chat
from model import sequence_logprobs
from tokenizer import render_prompt, speaker_ids

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
# a GPT as a scorer and a replier


def gpt_scorer(model, tok, device):
    """score(history, replies) for a forward GPT: each reply's log-likelihood after the history and <|assistant|>,
    with the turn token that ends it (the next <|user|>, as render_conversation puts it: a model must also know
    when its reply is done). One batch per call: all replies share one prompt, the history cut (whole turns first)
    to fit the block with the longest reply. A reply longer than half the block is scored on its first half block
    of tokens, as chat.reply_stream leaves the history at least half the block."""
    block, end = model.config.block_size, tok.special('<|user|>')

    @torch.no_grad()
    def score(history, replies):
        targets = [(tok.encode(r) + [end])[:block // 2] for r in replies]
        prompt = render_prompt(tok, history, block + 1 - max(map(len, targets)))  # +1: the last token is no input
        seqs = [prompt + t for t in targets]
        # who says each token, for a model with speaker embeddings (the others ignore it)
        speakers = [speaker_ids(seq, tok) for seq in seqs]
        logps = sequence_logprobs(model, seqs, [len(prompt)] * len(seqs), speakers)
        return [(lp, len(t)) for lp, t in zip(logps, targets)]
    return score


def gpt_replier(model, tok, device, max_new_tokens=48, temperature=0.0, top_k=None, top_p=None):
    """reply(history): the text chat.py would answer, greedy by default so that metrics are reproducible."""
    return lambda history: chat.reply(model, tok, history, max_new_tokens, temperature, top_k, top_p, device)

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
    return BLEU(max_ngram_order=2).corpus_score(list(hyps), [list(refs)]).score


def chrf(hyps, refs):
    """Corpus chrF (sacrebleu: character 6-grams, beta 2), 0-100."""
    return CHRF().corpus_score(list(hyps), [list(refs)]).score


def coherence(histories, replies, teacher_model):
    """The mean cosine between the teacher's sentence embeddings of the context, taken as the history's last
    turn (what a reply answers), and the reply."""
    ctx = teacher.embed(teacher_model, [h[-1][1] if h else '' for h in histories])
    return float((ctx * teacher.embed(teacher_model, replies)).sum(1).mean())

# -----------------------------------------------------------------------------
# metrics of a scorer


def hits_at_1(score, pairs, n_candidates=20, seed=0):
    """The share of pairs whose true reply ranks first among n_candidates: it and n_candidates - 1 replies of
    other pairs (other conversations; none of the same text, which would tie), drawn with the seed. Ties are
    misses, so a scorer that can't tell the replies apart gets 0, not 1/n_candidates."""
    if len(pairs) < n_candidates:
        raise ValueError(f"hits@1/{n_candidates} needs at least {n_candidates} pairs, got {len(pairs)}")
    rng, hits = random.Random(seed), 0
    for i, (history, reply) in enumerate(tqdm(pairs, desc=f'hits@1/{n_candidates}', leave=False, disable=None)):
        others = [j for j in range(len(pairs)) if j != i and pairs[j][1] != reply]
        candidates = [reply] + [pairs[j][1] for j in rng.sample(others, n_candidates - 1)]
        # ranked by the mean log-prob per token: a sum would favour short replies ('lol', 'yes') whatever the
        # history, as each token costs log-prob; per token, a reply wins by fitting the history
        s = [lp / n for lp, n in score(history, candidates)]
        hits += s[0] > max(s[1:])
    return hits / len(pairs)


def response_ppl(score, pairs):
    """exp(total NLL / total tokens) of the true replies (each with its turn-ending token, for gpt_scorer)."""
    nll = n = 0
    for history, reply in tqdm(pairs, desc='response ppl', leave=False, disable=None):
        (lp, k), = score(history, [reply])
        nll, n = nll - lp, n + k
    return math.exp(nll / n)

# -----------------------------------------------------------------------------


def evaluate(pairs, score=None, reply=None, teacher_model=None, n_candidates=20, seed=0):
    """Every metric that what was given allows: a score gives response_ppl and hits@1/<n_candidates>; a reply
    generates one reply per pair for distinct_1/2, repetition, bleu2 and chrf against the true replies, and,
    with a teacher_model, coherence; 'samples' holds a few (context, reference, generated) triples."""
    if not pairs:
        raise ValueError("no (history, reply) pairs to evaluate")
    out = {}
    if score is not None:
        out['response_ppl'] = response_ppl(score, pairs)
        out[f'hits@1/{n_candidates}'] = hits_at_1(score, pairs, n_candidates, seed)
    if reply is not None:
        histories, refs = [h for h, _ in pairs], [r for _, r in pairs]
        hyps = [reply(h) for h in tqdm(histories, desc='replies', leave=False, disable=None)]
        out.update(distinct_1=distinct_n(hyps, 1), distinct_2=distinct_n(hyps, 2), repetition=repetition_rate(hyps),
                   bleu2=bleu2(hyps, refs), chrf=chrf(hyps, refs))
        if teacher_model is not None:
            out['coherence'] = coherence(histories, hyps, teacher_model)
            out['coherence_reference'] = coherence(histories, refs, teacher_model)  # what people score: the ceiling
        out['samples'] = [(h[-1][1] if h else '', r, g) for h, r, g in list(zip(histories, refs, hyps))[:5]]
    return out
