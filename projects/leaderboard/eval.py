"""
One leaderboard of every chat model this codebase trains: the same held-out test pairs, the same metrics, the same
floors, an interval on every cell.
$ python -m projects.leaderboard.eval                 # the runs in MODELS below -> projects/leaderboard/leaderboard.{json,md}
$ python -m projects.leaderboard.eval --models="mine=out-mine,quickstart GPT=out-quickstart"
The pairs: chitchat's test conversations (splits.py; no run trained or selected on them), one (history, reply) pair
per conversation, the reply short enough (31 tokens) that every kind scores it whole. Every reply is greedy.
Metrics (convmetrics.py): response perplexity where the model defines a likelihood (IMR: its upper bound), R@1/20
(the true reply among 19 of other pairs), chrF and the teacher's similarity to the human reply, distinct-2 and
repetition of the replies, coherence with the last turn (which echo wins: read it beside the floors), ms per
reply on one thread, and parameters. Intervals: 95% bootstrap over the pairs (convmetrics.intervals).
How each direction takes part: a forward model as chat.py runs it; a bidirectional one read forward (behind
<|forward|>); a backward model writes the turn *before* a message, not a reply to it, so it only ranks: each
candidate by log P(history | candidate), the history read back from the candidate (Li et al.'s MMI reranker).
"""

import json
import os
import sys

import numpy as np
import torch

import convmetrics
import teacher
from common import build_model, configure, die, load_checkpoint, setup_device
from engine import BM25Chat, cannot_chat, chat_for
from model import sequence_logprobs
from splits import split_conversations
from stats import fmt_diff, paired_bootstrap
from tokenizer import Tokenizer, orient, render_conversation

# -----------------------------------------------------------------------------
# name -> run directory (its best.pt, else ckpt.pt): what the projects' READMEs train
MODELS = {'quickstart GPT': 'out-quickstart',
          'forward sft': 'experiments/fw-sft', 'backward sft': 'experiments/bw-sft', 'bidirectional sft': 'experiments/bi-sft',
          'TurnGPT': 'out-turngpt',
          'ChatBERT-ED': 'out-chatbert-ed', 'ChatBERT-RA': 'out-chatbert-ra', 'ChatBERT-IMR': 'out-chatbert-imr'}
models = ''  # 'name=run,name=run': instead of MODELS
settings = ''  # 'steps=32,blocks=8': reply settings, for the models whose kind takes them (chat.py's /steps, /blocks)
n_pairs: '[20, inf)' = 300
max_new_tokens: '[1, inf)' = 32
n_boot: '[100, inf)' = 500  # bootstrap resamples per interval
seed: '[0, 9.2e18]' = 0
out = 'projects/leaderboard/leaderboard'  # .json, .md
threads: '[0, inf)' = 1  # one thread: ms/reply compares across models
append = False  # keep the rows of the leaderboard at out (the same pairs) and add these models', without rescoring
tables_only = False  # write the table and comparisons again from out's JSON, scoring nothing
# -----------------------------------------------------------------------------
SHOWN = [('params_M', 'params (M)'), ('tokens_M', 'trained on (M tokens)'), ('ms_per_reply', 'ms/reply'), ('response_ppl', 'response ppl'), ('hits@1/20', 'R@1/20'),
         ('chrf', 'chrF'), ('similarity', 'similarity to the human reply'), ('distinct_2', 'distinct-2'),
         ('repetition', 'repetition'), ('coherence', 'coherence (echo wins)')]
DIGITS = {'params_M': 2, 'tokens_M': 1, 'ms_per_reply': 0, 'response_ppl': 1, 'chrf': 1}


def load(run):
    """(Chat, checkpoint) of a run directory or checkpoint file: best.pt (selected on val) where the run kept one."""
    best = os.path.join(run, 'best.pt')
    ckpt = load_checkpoint(best if os.path.isfile(best) else run)
    tok = Tokenizer(ckpt['tokenizer'])
    if why := cannot_chat(tok, ckpt, run):
        die(why)
    return chat_for(build_model(ckpt).eval(), tok, ckpt), ckpt


def trained_tokens(ckpt):
    """The tokens a checkpoint trained on, its lineage's included (a fine-tune counts from 0; its parent says what
    came before), so that budgets compare across the board."""
    n, parent = ckpt.get('tokens_seen', 0), ckpt.get('parent')
    while parent and os.path.exists(parent):
        up = load_checkpoint(parent)
        n, parent = n + up.get('tokens_seen', 0), up.get('parent')
    return n


def history_given_reply(bot, marker):
    """score(history, replies) of a model that reads backward: [(log P(history | reply), history tokens)], the
    conversation read from the reply back to its start. The history is the same for every candidate, so this
    ranks them (it is no reply likelihood: a backward model predicts what came before, not what comes next)."""
    model, tok = bot.model, bot.tok
    block, end = model.config.block_size, tok.special('<|user|>')

    def score(history, replies):
        seqs, starts = [], []
        for r in replies:
            reply = tok.encode(r)[:block // 2] + [end]  # the reply, and the turn token that ends it
            h = list(history)
            while True:  # the oldest turns go first until it fits the block
                ids = render_conversation(tok, h) + [tok.special('<|assistant|>')] + reply
                if len(ids) + marker <= block + 1 or len(h) == 1:
                    break
                h = h[1:]
            ids = orient(ids, tok, True, marker).tolist()[:block + 1]
            seqs.append(ids)
            starts.append(1 + marker + len(reply))  # BOS, the marker, the reply reversed: given; the rest scored
        return [(lp, len(s) - st) for lp, s, st in zip(sequence_logprobs(model, seqs, starts), seqs, starts)]
    return score


def cells(res, ci):
    """{metric: 'x [lo, hi]'} for the table, '—' where the model has no such number."""
    out = {}
    for key, _ in SHOWN:
        v, d = res.get(key), DIGITS.get(key, 3)
        if v is None:
            out[key] = '—'
        elif key in ci:
            lo, hi = ci[key]
            out[key] = f"{'≤ ' if key == 'response_ppl' and res.get('bound') else ''}{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
        else:
            out[key] = f"{v:.{d}f}"
    return out


def cell(text):
    return text.replace('|', '\\|')  # a name's 'P(history | reply)' is not a column


def markdown(rows, n, comparisons):
    lines = ['| model | ' + ' | '.join(h for _, h in SHOWN) + ' |', '|---' * (len(SHOWN) + 1) + '|']
    for r in rows:
        lines.append(f"| {cell(r['name'])} | " + ' | '.join(r['cells'][k] for k, _ in SHOWN) + ' |')
    lines += ['', f"{n} test pairs, one per held-out conversation; greedy replies; [95% bootstrap over the pairs]; "
              "distinct-2 has no interval (a resample repeats replies). ≤: IMR's ELBO, an upper bound on its NLL. "
              "R@1/20 by chance: 0.05."]
    if comparisons:
        lines += ['', '| paired, same pairs | difference [95%] | p |', '| --- | --- | --- |']
        lines += [f"| {cell(c['what'])} | {fmt_diff(c)} | {c['p']:.3f} |" for c in comparisons]
    return '\n'.join(lines)


def per_pair(row, key):
    """(values, stat) for paired_bootstrap: a per-pair number and its mean, or (reply, reference) rows and corpus chrF."""
    items = row['items']
    if key == 'chrf':
        return np.array(list(zip(items['reply'], items['ref']))), lambda x: convmetrics.chrf(x[:, 0], x[:, 1])
    if key == 'hits@1/20':
        return np.array([r == 1 for r in items['rank']], dtype=float), np.mean
    return np.array(items[key]), np.mean


def compare(rows, key, against_floor=True):
    """Paired over the same pairs: each model against the best floor on key (against_floor), or the best model
    against every other model."""
    has = [r for r in rows if per_pair_ok(r, key)]
    pool = [r for r in has if r['floor'] == against_floor]
    if not pool or (not against_floor and len(pool) < 2):
        return []
    score = lambda r: per_pair(r, key)[1](per_pair(r, key)[0])  # noqa: E731
    ranked = sorted(pool, key=score, reverse=True)
    pairs = [(r, ranked[0]) for r in has if not r['floor']] if against_floor else [(ranked[0], r) for r in ranked[1:]]
    out = []
    for r, base in pairs:
        (a, stat), (b, _) = per_pair(r, key), per_pair(base, key)
        out.append({'what': f"{r['name']} − {base['name']}: {key}", **paired_bootstrap(a, b, stat, n_boot=n_boot, seed=seed)})
    return out


def comparisons_of(rows):
    return (compare(rows, 'similarity') + compare(rows, 'chrf') + compare(rows, 'similarity', False)
            + compare(rows, 'hits@1/20', False))


def per_pair_ok(row, key):
    need = {'chrf': 'reply', 'hits@1/20': 'rank'}.get(key, key)
    return need in row['items']


def write(rows, n, reply_settings):
    """The table and the paired comparisons, from the rows: leaderboard.md and .json."""
    comparisons = comparisons_of(rows)
    table = markdown(rows, n, comparisons)
    print(table)
    with open(out + '.md', 'w') as f:
        f.write(table + '\n')
    with open(out + '.json', 'w') as f:
        json.dump({'n_pairs': n, 'seed': seed, 'settings': reply_settings, 'rows': rows,
                   'comparisons': comparisons}, f, indent=1)
    print(f"wrote {out}.md and {out}.json")


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    if tables_only:
        with open(out + '.json') as f:
            old = json.load(f)
        write(old['rows'], old['n_pairs'], old['settings'])
        sys.exit(0)
    setup_device('cpu', 'float32', threads)
    chosen = dict(kv.split('=', 1) for kv in models.split(',')) if models else MODELS
    absent = {name: run for name, run in chosen.items() if not os.path.exists(run)}
    for name, run in absent.items():
        print(f"note: {name} is left out: no run at {run} (its project's README trains it)")
    if len(absent) == len(chosen):
        die(f"none of the runs exists ({', '.join(chosen.values())}): train them first, or pass --models=name=run,...")
    reply_settings = dict(kv.split('=', 1) for kv in settings.split(',')) if settings else {}
    convs = split_conversations()
    bots = {name: load(run) for name, run in chosen.items() if name not in absent}
    tok = next(iter(bots.values()))[0].tok
    candidates = convmetrics.pairs(convs['test'], len(convs['test']), seed)
    pairs = [(h, r) for h, r in candidates if len(tok.encode(r)) + 1 <= 32][:n_pairs]
    print(f"{len(pairs)} test pairs (of {len(candidates)}, one per conversation, the reply in 31 tokens)")
    minilm = teacher.load()
    rows = []
    if append and os.path.isfile(out + '.json'):
        with open(out + '.json') as f:
            old = json.load(f)
        if old['n_pairs'] != len(pairs) or old['seed'] != seed:
            die(f"{out}.json scored {old['n_pairs']} pairs with seed {old['seed']}: append with the same --n_pairs and --seed")
        rows = [r for r in old['rows'] if r.get('run') not in chosen.values()]  # a model scored again replaces its rows
        print(f"appending to the {len(rows)} rows of {out}.json")

    def add(name, res, floor=False, **extra):
        ci = convmetrics.intervals(res['items'], n_boot=n_boot, seed=seed)
        rows.append({'name': name, 'floor': floor, **extra, **{k: v for k, v in res.items() if k not in ('items', 'samples')},
                     'intervals': ci, 'cells': cells({**res, **extra}, ci), 'samples': res.get('samples', []),
                     'items': res['items']})
        print(f"-- {name}: " + ', '.join(f"{k} {v}" for k, v in rows[-1]['cells'].items()), flush=True)

    if not any(r['floor'] for r in rows):
        for name, replies in convmetrics.floors(pairs, convs['train'], seed).items():
            add(f'floor: {name}', convmetrics.evaluate(pairs, replies=replies, teacher_model=minilm), floor=True)
        bm25 = BM25Chat(convs['train'])
        add('floor: BM25 retrieval (no model)', convmetrics.evaluate(pairs, reply=convmetrics.replier(bm25), teacher_model=minilm),
            floor=True)
    for name, (bot, ckpt) in bots.items():
        torch.manual_seed(seed)
        direction = ckpt.get('direction', 'forward')
        marker = direction == 'bidirectional'
        params, tokens = bot.model.get_num_params() / 1e6, trained_tokens(ckpt) / 1e6
        if direction == 'backward':  # it ranks; it doesn't reply
            res = convmetrics.evaluate(pairs, history_given_reply(bot, False), likelihood=False)
            add(f'{name} (ranks by P(history | reply))', res, params_M=params, tokens_M=tokens, run=chosen[name])
            continue
        bot.prepare()  # RA's pool, before any reply is timed
        own = {k: v for k, v in reply_settings.items() if k in bot.settings}
        score = (lambda h, rs, bot=bot: bot.score_replies(h, rs, marker=True)) if marker else convmetrics.scorer(bot)
        reply = convmetrics.replier(bot, max_new_tokens, marker=marker, **bot.options(own)) if marker else \
            convmetrics.replier(bot, max_new_tokens, **bot.options(own))
        res = convmetrics.evaluate(pairs, score, reply, minilm, likelihood=bot.scores != 'similarity')
        label = name + (' (read forward)' if marker else '') + (f" ({', '.join(f'{k} {v}' for k, v in own.items())})" if own else '')
        add(label, res, params_M=params, tokens_M=tokens, run=chosen[name], bound=bot.scores == 'bound')
        if marker:  # the same model read backward ranks too
            res = convmetrics.evaluate(pairs, history_given_reply(bot, True), likelihood=False)
            add(f'{name} (read backward: ranks by P(history | reply))', res, params_M=params, tokens_M=tokens, run=chosen[name])
    write(rows, len(pairs), reply_settings)
