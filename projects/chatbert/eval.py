"""
ChatBERT's results table (projects/chatbert/README.md): every approach, 3 training seeds each, on one held-out test
set beside the floors that need no model, the table the source's paper left blank.
$ python -m projects.chatbert.experiment     # trains the runs (chatbert_runs.json), then runs this:
$ python -m projects.chatbert.eval --plan=projects/chatbert/chatbert_runs.json --threads=1
    -> projects/chatbert/chatbert_results.md, .json, .png and chatbert_imr_draws.png
Val for every choice, test read once:
- VAL pairs (splits.py 'val' conversations): the IMR bound against its number of mask draws (seed 1's run: the
  curve, and the smallest draw count whose estimate is within DRAW_TOL of the most draws' is the one used on test),
  and IMR's steps/blocks setting (the best mean teacher similarity over the seeds). Checkpoints: each run's best.pt
  (keep_best: by val loss).
- TEST pairs (splits.py 'test'): one per conversation, the reply short enough for every model to score whole. Rows:
  the floors (copy the last turn, "yeah", a random human reply: convmetrics.floors) and the human reply itself, with
  bootstrap intervals over the pairs; BM25 (no model); GPT, ED, RA, IMR (its chosen setting and, for reference, fully
  parallel), each mean ± sample std over the seeds; --fib=True adds FIB (seed 1's IMR). Every generating row replies
  greedily. IMR is ranked (R@1/20) only if its bound converges within max_rank_draws draws: 20 candidates cost 20x.
- Paired comparisons on the same test pairs, seeds pooled (each pair's per-seed values averaged; chrF: the corpus
  chrF of all seeds' replies to the resampled pairs): stats.paired_bootstrap; R@1 also McNemar per seed.
"""

import json
import math
import os
import re
import sys
from collections import Counter

import numpy as np
import torch

import convmetrics
import stats
import teacher
from common import build_model, configure, die, load_checkpoint, setup_device
from engine import BM25Chat, chat_for
from splits import split_conversations
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
plan = 'projects/chatbert/chatbert_runs.json'  # experiment.py's: the runs, by kind and seed
ckpt_name = 'best.pt'  # each run's best checkpoint by val loss (keep_best)
n_pairs = 300  # test pairs at most (one per test conversation whose reply fits)
n_val = 50  # val pairs for IMR's setting (cut from 100 for time on a shared core)
n_curve = 64  # val pairs for the draws curve
draws = '1,2,4,8,16,32,64'  # IMR mask draws per bound estimate, for the curve
draw_seeds = '0,1'  # independent estimates at each draw count: their spread is the estimate's noise
imr_settings = '1x1,32x1,32x8'  # steps x blocks tried on val: fully parallel, one token a step, LLaDA's blocks (8x1, 8x8 cut for time)
rank_draws = 0  # IMR's draws for ranking 20 candidates on test (20x the bound's cost); 0: the converged count; -1: no ranking
max_rank_draws = 4  # more than this many draws (converged later) and IMR isn't ranked: 158 x 20 x draws x 3 seeds forwards
ra_reply_seeds = '1'  # RA's replies need its pool of every training response embedded (minutes a seed): seed 1's only, for time
fib = False  # FIB rows (seed 1's IMR): cut from the measured table for time (~3 min on a shared core)
fib_iterations = 4
keep_words = 100  # a template keeps the training replies' most frequent words and blanks the rest
max_new_tokens = 32
seed = 0
n_boot = 500
out = 'projects/chatbert/chatbert_results'  # .md, .json, .png: where the project's README reads them
device = 'cpu'
threads = 0
# -----------------------------------------------------------------------------
DRAW_TOL = 0.01  # converged: every draw seed's val NLL per token within 1% of the most draws' mean
KINDS = ('gpt', 'ed', 'ra', 'imr')
NAMES = {'gpt': 'GPT', 'ed': 'ED', 'ra': 'RA', 'imr': 'IMR'}
FLOOR_KEYS = ('similarity', 'chrf', 'coherence', 'f1', 'entropy', 'gen_ppl')


def load(run):
    """The run's Chat (engine.chat_for): its model, tokenizer and checkpoint."""
    path = os.path.join(run, ckpt_name)
    ckpt = load_checkpoint(path if os.path.isfile(path) else run)
    return chat_for(build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer']), ckpt)


def template_of(text, keep):
    """text with every run of words not in keep (lowercased) as one ___ blank: 'i like pizza a lot' -> 'i like ___ a lot'."""
    out = []
    for word in text.split():
        if word.lower() in keep:
            out.append(word)
        elif not out or out[-1] != '___':
            out.append('___')
    return ' '.join(out)


def frequent_words(convs, n):
    return {w for w, _ in Counter(w.lower() for turns in convs for _, t in turns for w in t.split()).most_common(n)}


def fitting_pairs(convs, tok, L, n):
    """Up to n (history, reply) pairs, one per conversation, the reply within L - 1 tokens (so every model scores it whole)."""
    return [(h, r) for h, r in convmetrics.pairs(convs, len(convs), seed) if len(tok.encode(r)) + 1 <= L][:n]


# -----------------------------------------------------------------------------
# IMR's bound against its mask draws (val)

def bound_per_token(imr, pairs, samples, draw_seed):
    """Per pair, (bound, tokens): the ELBO bound on the true reply's NLL from `samples` mask draws."""
    out = []
    for h, r in pairs:
        (neg, n), = imr.score_replies(h, [r], samples=samples, seed=draw_seed)
        out.append((-neg, n))
    return out


def draws_curve(imr, pairs, ks, seeds):
    """{K: {'nll': [per draw seed: total bound / total tokens], 'pair_sd': the per-pair spread between draw seeds}}."""
    curve = {}
    for k in ks:
        per_seed = [bound_per_token(imr, pairs, k, s) for s in seeds]
        nll = [sum(b for b, _ in e) / sum(n for _, n in e) for e in per_seed]
        per_pair = np.array([[b / n for b, n in e] for e in per_seed])  # (seeds, pairs)
        curve[k] = {'nll': nll, 'pair_sd': float(per_pair.std(0, ddof=1).mean()) if len(seeds) > 1 else None}
        print(f"   {k:3d} draws: val NLL/token {', '.join(f'{x:.3f}' for x in nll)}, per-pair sd {curve[k]['pair_sd']:.3f}", flush=True)
    return curve


def converged(curve):
    """The smallest draw count whose every estimate is within DRAW_TOL of the most draws' mean."""
    ks = sorted(curve)
    ref = float(np.mean(curve[ks[-1]]['nll']))
    return next((k for k in ks if all(abs(x - ref) <= DRAW_TOL * ref for x in curve[k]['nll'])), ks[-1])


# -----------------------------------------------------------------------------
# aggregation over seeds, and paired comparisons


def pooled(items_by_seed, key):
    """Each pair's value of key averaged over the seeds (rank: hit at 1)."""
    get = (lambda it: [float(r == 1) for r in it['rank']]) if key == 'hit' else (lambda it: it[key])
    return np.mean([get(it) for it in items_by_seed if (key == 'hit' and 'rank' in it) or key in it], axis=0)


def chrf_diff(a_by_seed, b_by_seed, refs):
    """Paired bootstrap of corpus chrF, A - B, over pairs: a resample of pairs takes every seed's replies to them."""
    n = len(refs)
    replies = [r for it in a_by_seed for r in it['reply']] + [r for it in b_by_seed for r in it['reply']]
    sa, sb = len(a_by_seed), len(b_by_seed)

    def stat(idx):  # idx: pair indices (A's) or pair indices + n (B's)
        idx = np.asarray(idx)
        base, seeds_ = (0, sa) if idx[0] < n else (sa * n, sb)
        pairs_ = idx % n
        return convmetrics.chrf([replies[base + s * n + i] for s in range(seeds_) for i in pairs_],
                                [refs[i] for s in range(seeds_) for i in pairs_])
    return stats.paired_bootstrap(np.arange(n), np.arange(n) + n, stat, n_boot=min(n_boot, 300))


def cell(values, digits):
    return stats.mean_std(values, digits) if len(values) > 1 else f"{values[0]:.{digits}f}"


COLUMNS = [('similarity', 'similarity', 3), ('chrf', 'chrF', 2), ('coherence', 'coherence', 3),
           ('hits@1/20', 'R@1/20', 3), ('mrr', 'MRR', 3), ('response_nll', 'response NLL', 3), ('f1', 'F1', 3),
           ('distinct_2', 'dist-2', 3), ('entropy', 'entropy', 2), ('gen_ppl', 'gen ppl (GPT s1)', 1),
           ('ms_per_reply', 'ms/reply', 0)]


def markdown(rows, n, comparisons, imr_note):
    lines = ['| approach | seeds | ' + ' | '.join(h for _, h, _ in COLUMNS) + ' |', '|---' * (len(COLUMNS) + 2) + '|']
    for r in rows:
        cells = []
        for key, _, d in COLUMNS:
            vs = [v for v in r['per_seed'].get(key) or [] if v is not None]
            if not vs:
                cells.append('—')
            elif r.get('ci', {}).get(key):
                cells.append(stats.fmt_ci(vs[0], *r['ci'][key], d))
            else:
                few = f" (seed{'s' if len(r['reply_seeds']) > 1 else ''} {', '.join(map(str, r['reply_seeds']))})" if len(vs) < len(r['seeds']) and r.get('reply_seeds') else ''
                cells.append(('≤ ' if key == 'response_nll' and r.get('bound') else '') + cell(vs, d) + few)
        lines.append(f"| {r['approach']} | {len(r['seeds']) or '—'} | " + ' | '.join(cells) + ' |')
    lines.append(f"\n{n} test pairs. Models: mean ± sample std over training seeds; floors and the human reply: value "
                 f"[95% bootstrap interval over the pairs]. similarity: the teacher's cosine of the reply with the human "
                 f"reply; coherence: with the last context turn (echo wins it: read it beside the floors). R@1/20, MRR: "
                 f"the true reply among 20 (19 from other test pairs). ≤: IMR's ELBO bound ({imr_note}).")
    lines.append("\nPaired comparisons on the same test pairs (A - B, 95% paired bootstrap interval, p; seeds pooled):\n")
    lines.append('| comparison | metric | A - B [95% CI] | p | note |')
    lines.append('|---|---|---|---|---|')
    for c in comparisons:
        lines.append(f"| {c['a']} vs {c['b']} | {c['metric']} | {stats.fmt_diff(c, c.get('digits', 3))} | {c['p']:.3f} | {c.get('note', '')} |")
    return '\n'.join(lines)


TARGETS = {'gpt': 'every token of a 128-token window', 'ed': 'response tokens to the end token (the encoder reads 96 more)',
           'ra': '2 a pair: context to response and back, among the batch', 'imr': 'masked response positions, padding included (~16 of 32)'}


def training_table(p):
    """The runs' equal footing, from experiment.py's plan: calibration, iterations, FLOPs, supervised targets, val loss."""
    lines = [f"Every run: {p['seconds']:.0f} s of training at its kind's calibrated ms/iter ({p['calibration']['gpt']['iters']} "
             f"iterations each, back to back); val loss at the best checkpoint (keep_best), mean ± sample std over seeds.\n",
             '| kind | params (M) | ms/iter (calibration) | iterations | train s (measured) | rows x tokens read | tokens read | '
             'training FLOPs (6 N D) | supervised targets | what a target is | best val loss |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for k in KINDS:
        rs = [r for r in p['runs'].values() if r['kind'] == k]
        r0 = rs[0]
        lines.append(f"| {NAMES[k]} | {r0['params'] / 1e6:.2f} | {p['calibration'][k]['ms_per_iter']:.0f} | {r0['max_iters']:,} | "
                     f"{cell([r['train_seconds'] for r in rs], 0)} | {r0['rows'] // r0['max_iters']} x 128 | "
                     f"{r0['tokens_processed'] / 1e6:.2f}M | {r0['flops']:.2e} | {r0['supervised_targets'] / 1e6:.3f}M | "
                     f"{TARGETS[k]} | {cell([r['best_val_loss'] for r in rs], 3)} |")
    return '\n'.join(lines)


def val_tables(v, d):
    """IMR's choices on val: its settings beside the val floors, and its bound against the draws."""
    lines = [f"IMR's setting, chosen on {v['pairs']} VAL pairs by {v['by']} (chosen: {v['chosen']['steps']} steps, "
             f"{v['chosen']['blocks']} blocks); floors on the same pairs:\n",
             '| reply | val similarity | val coherence | val chrF |', '|---|---|---|---|']
    for r in v['settings']:
        lines.append(f"| IMR, {r['steps']} steps, {r['blocks']} block{'s' if r['blocks'] > 1 else ''} | "
                     f"{cell(r['similarity'], 3)} | {cell(r['coherence'], 3)} | {cell(r['chrf'], 2)} |")
    for name, f in v['floors'].items():
        lines.append(f"| {name} (floor) | {f['similarity']:.3f} | {f['coherence']:.3f} | — |")
    lines += [f"\nIMR's bound on {d['val_pairs']} VAL pairs (seed {d['run_seed']}'s run) against its mask draws, "
              f"two independent estimates each (draw seeds); converged (every estimate within {100 * d['tolerance']:.0f}% "
              f"of the most draws' mean) at {d['converged']}:\n",
              '| draws | val NLL per token (each draw seed) | one pair\'s spread between draw seeds (sd, per token) |', '|---|---|---|']
    for k, c in d['curve'].items():
        lines.append(f"| {k} | {', '.join(f'{x:.3f}' for x in c['nll'])} | {c['pair_sd']:.3f} |")
    return '\n'.join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    named = [r for r in rows if r['per_seed'].get('similarity') and r['per_seed']['similarity'][0] is not None
             and not r['approach'].startswith('the human')]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(named) + 1.5))
    for ax, key, label in ((axes[0], 'similarity', 'teacher similarity to the human reply'),
                           (axes[1], 'coherence', 'coherence with the last turn')):
        y = np.arange(len(named))
        means, err = [], [[], []]
        for r in named:
            vs = [v for v in r['per_seed'][key] if v is not None]
            means.append(np.mean(vs))
            ci = r.get('ci', {}).get(key)  # a floor: its 95% interval; a model: the sample std over seeds
            lo, hi = (means[-1] - ci[0], ci[1] - means[-1]) if ci else (np.std(vs, ddof=1) if len(vs) > 1 else 0,) * 2
            err[0].append(lo)
            err[1].append(hi)
        ax.barh(y, means, xerr=err, color=['gray' if r.get('ci', {}).get(key) else 'C0' for r in named])
        ax.set_yticks(y, [r['approach'] for r in named], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label + ' (gray: floors, 95% CI; blue: ± std over seeds)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_draws(curve, chosen, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ks = sorted(curve)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for j in range(len(curve[ks[0]]['nll'])):
        a.plot(ks, [curve[k]['nll'][j] for k in ks], 'o-', label=f'draw seed {j}')
    a.axvline(chosen, color='gray', ls='--', label=f'used on test: {chosen}')
    a.set_xscale('log', base=2)
    a.set_xlabel('mask draws per estimate')
    a.set_ylabel('bound: val response NLL per token')
    a.legend(fontsize=8)
    a.set_title('ChatBERT-IMR (seed 1): the bound against its draws')
    b.plot(ks, [curve[k]['pair_sd'] for k in ks], 'o-')
    b.set_xscale('log', base=2)
    b.set_yscale('log')
    b.set_xlabel('mask draws per estimate')
    b.set_title("one pair's estimate: sd between draw seeds (total bound)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(name, results, seeds_, **extra):
    """A table row: each metric's per-seed values, the per-seed items (for pairing) and samples."""
    keys = {k for res in results for k, v in res.items() if isinstance(v, (int, float))}
    return {'approach': name, 'seeds': seeds_, **extra,
            'per_seed': {k: [res.get(k) for res in results] for k in sorted(keys)},
            'samples': results[0].get('samples', []), 'items': [res['items'] for res in results]}


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    setup_device(device, 'float32', threads)
    the_plan = json.load(open(plan))
    runs = {k: {r['seed']: r['dir'] for r in the_plan['runs'].values() if r['kind'] == k} for k in KINDS}
    if any(not runs[k] for k in KINDS):
        die(f"{plan} lacks runs of {', '.join(k for k in KINDS if not runs[k])}: python -m projects.chatbert.experiment")
    convs = split_conversations()
    train_convs = convs['train']
    bots = {k: {s: load(d) for s, d in sorted(runs[k].items())} for k in KINDS}
    first = {k: bots[k][min(bots[k])] for k in KINDS}
    tok = first['gpt'].tok
    L = first['imr'].model.config.response_len
    minilm = teacher.load()
    judge = convmetrics.scorer(first['gpt'])  # gen ppl: every reply under the same GPT (seed 1)
    out_json = {'plan': plan, 'the_plan': the_plan}

    # ---- VAL: the IMR bound's draws, IMR's setting
    val = fitting_pairs(convs['val'], tok, L, max(n_val, n_curve))
    print(f"-- VAL: {len(val)} pairs; IMR's bound against its mask draws (seed {min(bots['imr'])}, {n_curve} pairs)", flush=True)
    curve = draws_curve(first['imr'], val[:n_curve], [int(k) for k in draws.split(',')], [int(s) for s in draw_seeds.split(',')])
    k_conv = converged(curve)
    K = k_conv
    K_rank = rank_draws or (k_conv if k_conv <= max_rank_draws else -1)
    print(f"   converged at {k_conv} draws; the test bound uses {K}, the ranking {K_rank}", flush=True)
    out_json['draws'] = {'curve': {str(k): v for k, v in curve.items()}, 'converged': k_conv, 'used': K, 'ranking': K_rank,
                         'tolerance': DRAW_TOL, 'val_pairs': len(val[:n_curve]), 'run_seed': min(bots['imr'])}
    plot_draws(curve, K, os.path.join(os.path.dirname(out), 'chatbert_imr_draws.png'))
    settings = [tuple(int(x) for x in s.split('x')) for s in imr_settings.split(',')]
    val_rows, val_floor = [], {}
    for name, replies in convmetrics.floors(val[:n_val], train_convs, seed).items():
        res = convmetrics.evaluate(val[:n_val], replies=replies, teacher_model=minilm)
        val_floor[name] = {'similarity': res['similarity'], 'coherence': res['coherence']}
    for steps, blocks in settings:
        per = []
        for s, bot in bots['imr'].items():
            torch.manual_seed(seed)
            res = convmetrics.evaluate(val[:n_val], reply=convmetrics.replier(bot, max_new_tokens, 0.0, steps=steps, blocks=blocks),
                                       teacher_model=minilm)
            per.append({'similarity': res['similarity'], 'coherence': res['coherence'], 'chrf': res['chrf']})
        val_rows.append({'steps': steps, 'blocks': blocks, **{k: [p[k] for p in per] for k in per[0]}})
        print(f"   IMR {steps} steps, {blocks} blocks: val similarity {stats.mean_std([p['similarity'] for p in per], 3)}, "
              f"coherence {stats.mean_std([p['coherence'] for p in per], 3)}", flush=True)
    chosen = max(val_rows, key=lambda r: np.mean(r['similarity']))
    print(f"   chosen on val: {chosen['steps']} steps, {chosen['blocks']} blocks", flush=True)
    out_json['imr_val'] = {'pairs': len(val[:n_val]), 'settings': val_rows, 'floors': val_floor,
                           'chosen': {'steps': chosen['steps'], 'blocks': chosen['blocks']}, 'by': 'mean val similarity over seeds'}

    # ---- TEST, read once
    test = fitting_pairs(convs['test'], tok, L, n_pairs)
    refs = [r for _, r in test]
    print(f"-- TEST: {len(test)} pairs", flush=True)
    rows = []
    floors = dict(convmetrics.floors(test, train_convs, seed), **{'the human reply itself': refs})
    for name, replies in floors.items():
        res = convmetrics.evaluate(test, replies=replies, teacher_model=minilm, judge=judge)
        row = summarize(name, [res], [], floor=True)
        row['ci'] = convmetrics.intervals(res['items'], keys=FLOOR_KEYS, n_boot=n_boot)
        rows.append(row)
        print(f"   {name}: similarity {res['similarity']:.3f}, coherence {res['coherence']:.3f}, chrF {res['chrf']:.2f}", flush=True)
    res = convmetrics.evaluate(test, reply=convmetrics.replier(BM25Chat(train_convs), max_new_tokens, 0.0),
                               teacher_model=minilm, judge=judge)
    rows.append(summarize('BM25 (no model)', [res], []))

    def measure(bot, score, likelihood, reply=True, **settings):
        torch.manual_seed(seed)
        res = convmetrics.evaluate(test, score, convmetrics.replier(bot, max_new_tokens, 0.0, **settings) if reply else None,
                                   minilm, seed=seed, likelihood=likelihood, judge=judge)
        if 'response_ppl' in res:
            res['response_nll'] = math.log(res['response_ppl'])
        print('   ' + ', '.join(f"{k} {v:.3f}" for k, v in res.items() if isinstance(v, float)), flush=True)
        return res

    ra_seeds = [int(s) for s in ra_reply_seeds.split(',') if s]
    for k in ('gpt', 'ed', 'ra'):
        per = []
        for s, bot in bots[k].items():
            print(f"-- {NAMES[k]} seed {s}", flush=True)
            if k == 'ra' and s in ra_seeds:
                bot.prepare()  # RA's pool: embedded (once, then saved) before the replies are timed
            per.append(measure(bot, convmetrics.scorer(bot), k != 'ra', reply=k != 'ra' or s in ra_seeds))
        row = summarize(NAMES[k], per, list(bots[k]), params_M=first[k].model.get_num_params() / 1e6)
        if k == 'ra':  # reply metrics only from the seeds whose pool was built
            row['reply_seeds'] = ra_seeds
        rows.append(row)
    imr_rows = {}
    for steps, blocks, label in ((chosen['steps'], chosen['blocks'], 'chosen on val'), (1, 1, 'fully parallel, for reference')):
        if label.startswith('fully') and (steps, blocks) == (chosen['steps'], chosen['blocks']):
            continue
        per = []
        for s, bot in bots['imr'].items():
            print(f"-- IMR seed {s}, {steps} steps, {blocks} blocks", flush=True)
            score = None
            if label == 'chosen on val' and K_rank > 0:  # the bound and ranking depend on no setting: once, on this row
                score = lambda h, rs, bot=bot: bot.score_replies(h, rs, samples=K_rank)  # noqa: E731
            per.append(measure(bot, score, False, steps=steps, blocks=blocks))
            if label == 'chosen on val':  # the bound on the true replies: with the converged draws
                lps = convmetrics.likelihoods(lambda h, rs, bot=bot: bot.score_replies(h, rs, samples=K), test)
                per[-1]['items'].update(logprob=[lp for lp, _ in lps], tokens=[n for _, n in lps])
                per[-1]['response_ppl'] = convmetrics.METRICS['response_ppl'](per[-1]['items'])
                per[-1]['response_nll'] = math.log(per[-1]['response_ppl'])
                print(f"   bound ({K} draws): {per[-1]['response_nll']:.3f} per token", flush=True)
        imr_rows[label] = summarize(f"IMR, {steps} steps, {blocks} block{'s' if blocks > 1 else ''} ({label})", per,
                                    list(bots['imr']), steps=steps, blocks=blocks, bound=label == 'chosen on val',
                                    params_M=first['imr'].model.get_num_params() / 1e6)
        rows.append(imr_rows[label])
    if fib:
        keep = frequent_words(train_convs, keep_words)
        imr = first['imr']
        items = [(h, r, template_of(r, keep)) for h, r in test]
        items = [(h, r, t) for h, r, t in items if '___' in t and t.strip('_ ')]
        fib_pairs = [(h, r) for h, r, _ in items]
        fill = {tuple(map(tuple, h)): t for h, _, t in items}
        print(f"-- FIB on {len(items)} templated test replies", flush=True)
        fills = [imr.reply(h, max_new_tokens, 0.0, None, None, template=fill[tuple(map(tuple, h))]) for h, _ in fib_pairs]
        alone = [re.sub(r'\s*___\s*', ' ', fill[tuple(map(tuple, h))]).strip() for h, _ in fib_pairs]
        for name, replies in ((f'FIB: IMR s1 fills the template ({len(items)} of the pairs)', fills),
                              (f'template alone, blanks dropped ({len(items)} of the pairs)', alone)):
            res = convmetrics.evaluate(fib_pairs, replies=replies, teacher_model=minilm, judge=judge)
            rows.append(summarize(name, [res], [min(bots['imr'])] if name.startswith('FIB') else [], items_n=len(items)))

    # ---- paired comparisons, seeds pooled
    by = {r['approach']: r for r in rows}
    model_rows = {NAMES[k]: by[NAMES[k]] for k in ('gpt', 'ed', 'ra')}
    model_rows['IMR'] = imr_rows['chosen on val']
    floor_rows = [r for r in rows if r.get('floor') and not r['approach'].startswith('the human')]
    best_floor = max(floor_rows, key=lambda r: r['per_seed']['similarity'][0])
    comparisons = []

    def compare(a, b, metric, note=''):
        ra_, rb_ = model_rows.get(a) or by[a], model_rows.get(b) or by[b]
        if metric == 'chrF':
            d = chrf_diff(ra_['items'], rb_['items'], refs)
            d['digits'] = 2
        else:
            key = 'hit' if metric == 'R@1/20' else metric
            d = stats.paired_bootstrap(pooled(ra_['items'], key), pooled(rb_['items'], key), n_boot=n_boot)
        comparisons.append({'a': a, 'b': b, 'metric': metric, 'note': note, **d})

    mc = [stats.mcnemar([r == 1 for r in a['rank']], [r == 1 for r in b['rank']])
          for a, b in zip(model_rows['RA']['items'], model_rows['GPT']['items'])]
    compare('RA', 'GPT', 'R@1/20', 'McNemar per seed: ' + ', '.join(f"{m['a_only']}/{m['b_only']} p={m['p']:.3g}" for m in mc))
    if K_rank > 0:
        compare('IMR', 'GPT', 'R@1/20', f'IMR ranks by its bound with {K_rank} draws')
    for a, b in (('GPT', 'ED'), ('GPT', 'IMR'), ('ED', 'IMR')):
        for metric in ('similarity', 'chrF'):
            compare(a, b, metric)
    for a in ('GPT', 'ED', 'RA', 'IMR', 'BM25 (no model)'):
        compare(a, best_floor['approach'], 'similarity', 'the best floor on similarity')
    imr_par = imr_rows.get('fully parallel, for reference')
    if imr_par:
        model_rows['IMR, 1 step'] = imr_par
        compare('IMR', 'IMR, 1 step', 'coherence', 'more steps (chosen setting) vs fully parallel')
        compare('IMR', 'copy the last turn', 'coherence', 'the echo floor')
    out_json['comparisons'] = comparisons
    out_json['best_floor'] = best_floor['approach']
    out_json['n_pairs'] = len(test)
    imr_note = (f"{K} mask draws, converged on val at {k_conv}: chatbert_imr_draws.png"
                + (f"; its R@1/20 and MRR rank with {K_rank} draws" if 0 < K_rank != K else '')
                + ("; not ranked: 20 candidates at the converged draws cost more than this machine had" if K_rank < 0 else ''))
    table = (markdown(rows, len(test), comparisons, imr_note) + '\n\n## Training\n\n' + training_table(the_plan)
             + '\n\n## Choices on val\n\n' + val_tables(out_json['imr_val'], out_json['draws']))
    print(table)
    with open(out + '.md', 'w') as f:
        f.write(table + '\n')
    out_json['rows'] = rows
    with open(out + '.json', 'w') as f:
        json.dump(out_json, f, indent=1, default=float)
    plot(rows, out + '.png')
    print(f"wrote {out}.md, {out}.json, {out}.png, {os.path.dirname(out)}/chatbert_imr_draws.png")
