"""
TurnGPT's evaluation (projects/turngpt/README.md). One run: the honest compression figures, semantic arithmetic in turn
space at init and after training, the conversation metrics on chitchat's test conversations (convmetrics.py), a turn-
vector heatmap and a dashboard PNG:
$ python -m projects.turngpt.eval --out_dir=out-turngpt            # -> out-turngpt/turngpt.json, turn_heatmap.png, dashboard.png
The A/B, each arm trained by train.py at the same shrunk token budget (ab_scale of each recipe's iterations: the
full budget is not affordable on one core for 3 seeds an arm), 3 seeds, then measured on the same test pairs:
$ python -m projects.turngpt.eval --ab=True   # -> projects/turngpt/turngpt_ab.{md,json}, turngpt_ab_curves.png (~70 min on one core)
The arms (ARMS) each differ from their comparison (COMPARISONS) in one thing: the one-phase recipe against the
curriculum, dense embeddings against E=32 turn vectors at the same shape and at equal parameters; E=8 and its
equal-parameter dense arm are defined but not in the default ab_arms (not affordable in the time measured). The
floors (copy the last turn, "yeah", a random human reply) are measured on the same pairs. Runs already finished
in ab-turngpt/ are reused.
"""

import os
import sys
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from common import REPO, configure, die, launch, setup_device, load_checkpoint, build_model, read_config_file, read_log
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out-turngpt'  # the run to evaluate
ckpt_name = 'best.pt'  # its checkpoint: best.pt (keep_best) if there, else ckpt.pt
n_pairs: '[20, inf)' = 200  # (history, reply) pairs from chitchat's test conversations
max_new_tokens: '[1, inf)' = 32  # per generated reply (greedy)
seed: '[0, 9.2e18]' = 1337
device = 'cpu'
threads: '[0, inf)' = 0
ab = False  # run the A/B instead
ab_seeds = '1,2,3'
ab_arms = 'simple,curriculum,dense2x128,dense4x128'  # the arms to run, keys of ARMS ('': all)
ab_scale: '(0, 1]' = 0.08  # the share of each recipe's iterations the A/B trains (the same for every arm)
ab_evals: '[1, inf)' = 6  # evals per A/B run (val loss for best.pt and the curves)
ab_dir = 'ab-turngpt'  # the A/B's runs
ab_results = 'projects/turngpt/turngpt_ab'  # its table (.md, .json): the committed copies
ab_pairs: '[20, inf)' = 100  # the A/B's test pairs (n_pairs for each run and the floors): 200 cost ~4 min a run
workers: '[1, inf)' = 1  # A/B runs at a time; each gets one thread
# -----------------------------------------------------------------------------
FULL, SIMPLE = os.path.join(REPO, 'config', 'turngpt.py'), os.path.join(REPO, 'config', 'turngpt_simple.py')
DENSE = ['--turn_dim=0', "--lr_scales={'transformer.wse': 1.0}"]  # the turn groups' lrs name no parameter here
# arm -> (label, config, overrides). The simple one-phase recipe at E=32 is the reference; every other arm differs
# from its comparison (COMPARISONS) in one thing. The dense arms keep the simple recipe and the speakers, so dense
# is compared with turn vectors like with like; the equal-parameter ones are shallower (2x128) or shallower and
# narrower (3x104: no 2- or 4-layer shape with an even head size comes within 1% of E=8's count)
ARMS = {
    'simple': ('simple: one phase, E=32', SIMPLE, []),
    'curriculum': ('curriculum: 3 phases, E=32', FULL, []),
    'dense4x128': ('dense 4x128 (simple recipe)', SIMPLE, DENSE),
    'dense2x128': ("dense 2x128 (E=32's params)", SIMPLE, DENSE + ['--n_layer=2']),
    'e8': ('E=8 (simple recipe)', SIMPLE, ['--turn_dim=8']),
    'dense3x104': ("dense 3x104 (E=8's params)", SIMPLE, DENSE + ['--n_layer=3', '--n_embd=104']),
}
EQUAL_PARAMS = {'dense2x128': 'simple', 'dense3x104': 'e8'}  # dense arm -> the turn-vector arm it matches in size
# the claims the A/B tests, each (A, B, what A - B > 0 would mean): paired on the same test pairs
COMPARISONS = [
    ('dense2x128', 'simple', 'dense beats turn vectors at equal parameters (E=32)'),
    ('dense3x104', 'e8', 'dense beats turn vectors at equal parameters (E=8)'),
    ('dense4x128', 'simple', 'dense embeddings beat E=32 turn vectors at the same depth and width (1.42x params)'),
    ('simple', 'curriculum', 'the one-phase recipe beats the curriculum (E=32)'),
    ('simple', 'e8', 'E=32 beats E=8'),
]
TABLE = ['val_loss', 'response_ppl', 'hits@1/20', 'distinct_2', 'repetition', 'chrf', 'similarity', 'coherence',
         'analogy_top1']
FLOOR_TABLE = ['distinct_2', 'repetition', 'chrf', 'similarity', 'coherence']  # what a reply alone allows


def arm_params(arm, vocab_size=4096):
    """An arm's whole-model parameter count (tied weights once), from the model its config and overrides build:
    the equal-parameter arms are checked against it."""
    import ast
    from dataclasses import fields
    from model import GPT, GPTConfig
    label, config, overrides = ARMS[arm]
    c = read_config_file(config)
    names = {f.name for f in fields(GPTConfig)}
    for o in overrides:
        k, v = o[2:].split('=', 1)
        if k in names:
            c[k] = ast.literal_eval(v)
    return GPT(GPTConfig(**{k: c[k] for k in names if k in c}, vocab_size=vocab_size)).compression()['params']


def run_log(run):
    return read_log(os.path.join(run, 'log.jsonl'))


def evaluate(run):
    """Measure one run; writes run/turngpt.json, turn_heatmap.png and dashboard.png, returns the results."""
    import convmetrics
    import semantic
    from engine import chat_for
    import teacher
    from splits import split_conversations
    path = os.path.join(run, ckpt_name) if os.path.isfile(os.path.join(run, ckpt_name)) else run
    ckpt = load_checkpoint(path, device)
    model, tok = build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer'])
    rows = run_log(run)
    evals = [r for r in rows if 'val_loss' in r]
    init = next((r for r in evals if r['iter'] == 0 and 'analogy/top1_excl' in r), {})
    res = {'run': run, 'checkpoint': ckpt['path'], 'iter': ckpt['iter_num'], 'val_loss': ckpt['best_val_loss'],
           'compression': model.compression(),
           'analogies_init': {k.split('/')[1]: v for k, v in init.items() if k.startswith('analogy/')},
           'analogies': semantic.analogy_eval(model.token_vectors().detach().float(), tok)}
    pairs = convmetrics.pairs(split_conversations()['test'], n_pairs, seed)
    torch.manual_seed(seed)
    bot = chat_for(model, tok, ckpt)
    res.update(convmetrics.evaluate(pairs, convmetrics.scorer(bot), convmetrics.replier(bot, max_new_tokens), teacher.load()))
    semantic.heatmap(model.token_vectors().detach().float(), tok, semantic.heatmap_words(),
                     os.path.join(run, 'turn_heatmap.png'), title=f"{run}: token vectors after training")
    dashboard(run, rows)
    with open(os.path.join(run, 'turngpt.json'), 'w') as f:
        json.dump(res, f, indent=2)
    return res


def dashboard(run, rows):
    """Loss curves with the phase boundaries, val loss per dataset, the analogy metrics, tokens/s and memory, and
    the turn-vector heatmap: one PNG to look at while and after training."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    steps, evals = [r for r in rows if 'loss' in r], [r for r in rows if 'val_loss' in r]
    ax = axes[0, 0]
    ax.plot([r['iter'] for r in steps], [r['loss'] for r in steps], label='train (batch)', alpha=0.6)
    ax.plot([r['iter'] for r in evals], [r['val_loss'] for r in evals], 'o-', ms=3, label='val (conversations)')
    for k in sorted({k for r in evals for k in r if k.startswith('val_loss/')}):
        pts = [(r['iter'], r[k]) for r in evals if k in r]
        axes[0, 1].plot(*zip(*pts), 'o-', ms=3, label=k)
    for k in ('analogy/top1_excl', 'analogy/distance_rel'):
        pts = [(r['iter'], r[k]) for r in evals if k in r]
        if pts:
            axes[0, 2].plot(*zip(*pts), 'o-', ms=3, label=k)
    axes[1, 0].plot([r['iter'] for r in steps if 'tok_s' in r], [r['tok_s'] for r in steps if 'tok_s' in r], label='tokens/s')
    mem = axes[1, 0].twinx()
    mem.plot([r['iter'] for r in steps if 'mem_mb' in r], [r['mem_mb'] for r in steps if 'mem_mb' in r], 'r', label='peak MB')
    mem.set_ylabel('peak memory (MB)')
    for ax, title in zip(axes.flat, ['loss', 'val loss of the other datasets in the mix', 'semantic arithmetic',
                                     'speed and memory']):
        for r in rows:
            if 'phase' in r:
                ax.axvline(r['iter'], color='gray', ls='--', lw=1)
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    heat = os.path.join(run, 'turn_heatmap.png')
    if os.path.isfile(heat):
        axes[1, 1].imshow(plt.imread(heat))
    for ax in axes[1, 1:]:
        ax.axis('off')
    samples = [r for r in rows if 'samples' in r]
    if samples:
        axes[1, 2].text(0, 1, f"iter {samples[-1]['iter']}:\n" + '\n'.join(f"> {p}\n  {r[:70]}" for p, r in samples[-1]['samples']),
                        va='top', family='monospace', fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(os.path.join(run, 'dashboard.png'), dpi=100)
    plt.close(fig)


def scaled(config):
    """Overrides that train a recipe at ab_scale of its iterations: max_iters, the phase starts, and ab_evals evals
    (plus the one at 0) wherever the run ends, so the evals' cost doesn't grow as the budget shrinks."""
    c = read_config_file(config)
    it = max(1, round(c['max_iters'] * ab_scale))
    phases = {round(s * ab_scale): p for s, p in c.get('phases', {}).items()}
    return [f'--max_iters={it}', f'--phases={phases!r}', f'--eval_interval={max(1, it // ab_evals)}']


def run_dir(arm, s):
    return os.path.join(ab_dir, f'{arm}-s{s}')


def train_and_evaluate(job):
    arm, s = job
    d = run_dir(arm, s)
    result = os.path.join(d, 'turngpt.json')
    if not os.path.isfile(result):
        label, config, overrides = ARMS[arm]
        log = open(d + '.log', 'w')
        for cmd in (['train.py', config, *scaled(config), *overrides, f'--seed={s}', f'--out_dir={d}', '--threads=1',
                     '--hdf5_log=', '--overwrite=True'],
                    ['projects.turngpt.eval', f'--out_dir={d}', '--threads=1', f'--n_pairs={ab_pairs}']):
            if launch(*cmd, log=log, threads=1):
                die(f"{cmd[0]} failed for {d}: see {log.name}")
    with open(result) as f:
        return arm, s, json.load(f)


def columns(r):
    """A run's table row: its metrics, the analogies' top-1 (3CosAdd, inputs excluded) after training."""
    return {**r, 'analogy_top1': r['analogies']['top1_excl']}


def floor_results(pairs_):
    """The floors (convmetrics.floors: copy the last turn, constant "yeah", a random human reply from the training
    conversations) measured like a model's replies, with their bootstrap intervals over the test pairs."""
    import convmetrics
    import teacher
    from splits import split_conversations
    tm = teacher.load()
    out = {}
    for name, replies in convmetrics.floors(pairs_, split_conversations()['train'], seed).items():
        res = convmetrics.evaluate(pairs_, replies=replies, teacher_model=tm)
        out[name] = {**{k: v for k, v in res.items() if k not in ('items', 'samples')},
                     'intervals': convmetrics.intervals(res['items'], FLOOR_TABLE)}
    return out


def per_pair(results, arm, seeds):
    """An arm's per-test-pair values, each pair's averaged over the seeds: the mean log-prob per token of the human
    reply, whether it ranks first of 20 (1/0), and the teacher similarity of the greedy reply to it."""
    import numpy as np
    its = [results[(arm, s)]['items'] for s in seeds]
    if any(it['ref'] != its[0]['ref'] for it in its):
        die(f"{arm}'s runs were measured on different test pairs: rerun their evals with the same n_pairs and seed")
    return {'logprob_per_token': np.mean([[lp / k for lp, k in zip(it['logprob'], it['tokens'])] for it in its], 0),
            'hits@1/20': np.mean([[r == 1 for r in it['rank']] for it in its], 0),
            'similarity': np.mean([it['similarity'] for it in its], 0)}


def comparisons(results, seeds):
    """Each claim of COMPARISONS whose arms ran: A - B paired on the same test pairs (stats.paired_bootstrap on the
    seed-averaged per-pair values), and the val losses' difference over seeds (Welch's t-test, 3 seeds an arm)."""
    from scipy.stats import ttest_ind
    from stats import paired_bootstrap
    out = []
    for a, b, claim in COMPARISONS:
        if not all((x, s) in results for x in (a, b) for s in seeds):
            continue
        pa, pb = per_pair(results, a, seeds), per_pair(results, b, seeds)
        va, vb = [results[(a, s)]['val_loss'] for s in seeds], [results[(b, s)]['val_loss'] for s in seeds]
        t = ttest_ind(va, vb, equal_var=False)
        out.append({'a': a, 'b': b, 'claim': claim, **{k: paired_bootstrap(pa[k], pb[k]) for k in pa},
                    'val_loss': {'diff': sum(va) / len(va) - sum(vb) / len(vb), 'welch_t': float(t.statistic),
                                 'p': float(t.pvalue)}})
    return out


def compression_table():
    """The compression both ways (model.compression()) of the configs' E=32 and E=8 models and of the source's size
    (V=50,257, 8x256, E=8), built here, so the README's table has a file."""
    from model import GPT, GPTConfig
    shapes = {'config/turngpt.py (V=4,096, 4x128, E=32)': dict(vocab_size=4096, n_layer=4, n_head=4, n_embd=128, turn_dim=32),
              'the same, E=8': dict(vocab_size=4096, n_layer=4, n_head=4, n_embd=128, turn_dim=8),
              "the source's size (V=50,257, 8x256, E=8)": dict(vocab_size=50257, n_layer=8, n_head=8, n_embd=256, turn_dim=8)}
    return {name: GPT(GPTConfig(**kw, n_speakers=2)).compression() for name, kw in shapes.items()}


def curves(results, seeds, path):
    """The arms' val loss (mean over seeds) against the share of the run's iterations: the curriculum's phases take
    different tokens per iteration, but every arm ends at the same tokens."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        logs = [[r for r in run_log(run_dir(arm, s)) if 'val_loss' in r] for s in seeds]
        n = min(len(rows) for rows in logs)
        last = max(r['iter'] for r in logs[0]) or 1
        ax.plot([r['iter'] / last for r in logs[0][:n]], np.mean([[r['val_loss'] for r in rows[:n]] for rows in logs], 0),
                'o-', ms=3, label=ARMS[arm][0])
    ax.set_xlabel("share of the run's iterations (the same tokens at 1.0)")
    ax.set_ylabel(f'val loss (mean of {len(seeds)} seeds)')
    ax.set_ylim(top=7)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ab_tables(results, seeds, floors, comps, compression):
    """The markdown: the arms (mean ± sample std over seeds) with the floors' rows, the paired claims, the compression."""
    from stats import fmt_ci, fmt_diff, mean_std
    rows = ['| arm | params (whole model) | ' + ' | '.join(TABLE) + ' |', '|' + ' --- |' * (len(TABLE) + 2)]
    for arm in arms:
        runs = [columns(results[(arm, s)]) for s in seeds]
        rows.append(f"| {ARMS[arm][0]} | {runs[0]['compression']['params']:,} | "
                    + ' | '.join(mean_std([r[m] for r in runs], 3) for m in TABLE) + ' |')
    for name, f in floors.items():
        rows.append(f"| floor: {name} | 0 | " + ' | '.join(
            fmt_ci(f[m], *f['intervals'][m]) if m in f['intervals'] else f'{f[m]:.3f}' if m in f else '-'
            for m in TABLE) + ' |')
    human = next(iter(results.values()))['coherence_reference']
    rows.append("| the human reply | - | - | - | - | - | - | - | 1 | " + f'{human:.3f} | - |')
    claims = ['| claim (A - B) | val loss: diff of seed means (Welch p) | log-prob per token of the human reply | '
              'hits@1/20 | similarity to the human reply |', '| --- | --- | --- | --- | --- |']
    for c in comps:
        claims.append(f"| {c['claim']}: {c['a']} - {c['b']} | {c['val_loss']['diff']:+.3f} (p={c['val_loss']['p']:.3f}) | "
                      + ' | '.join(f"{fmt_diff(c[k])} (p={c[k]['p']:.3f})" for k in ('logprob_per_token', 'hits@1/20', 'similarity')) + ' |')
    comp = ['| model | token parameters: turn vs dense | embedding ratio | whole model: turn vs dense | whole-model ratio |',
            '| --- | --- | --- | --- | --- |']
    comp += [f"| {name} | {c['token_params']:,} vs {c['dense_token_params']:,} | {c['embedding_ratio']:.1f}x | "
             f"{c['params']:,} vs {c['dense_params']:,} | {c['model_ratio']:.2f}x |" for name, c in compression.items()]
    return '\n'.join(rows), '\n'.join(claims), '\n'.join(comp)


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    setup_device(device, 'float32', threads)
    if not ab:
        res = evaluate(out_dir)
        print(json.dumps({k: v for k, v in res.items() if k not in ('samples', 'items')}, indent=2))
        for ctx, ref, gen in res['samples']:
            print(f"  context: {ctx!r}\n  reference: {ref!r}\n  model: {gen!r}")
        sys.exit()
    import convmetrics
    from splits import split_conversations
    seeds = [int(s) for s in str(ab_seeds).split(',')]
    arms = [a for a in (ab_arms.split(',') if ab_arms else ARMS)]
    for a in arms:
        if a not in ARMS:
            die(f"ab_arms: no arm {a!r}; the arms are {', '.join(ARMS)}")
    os.makedirs(ab_dir, exist_ok=True)
    jobs = [(arm, s) for arm in arms for s in seeds]  # arm by arm: a run out of time loses the last arm, not a seed of each
    with ThreadPoolExecutor(workers) as pool:
        results = {(arm, s): r for arm, s, r in tqdm(pool.map(train_and_evaluate, jobs), total=len(jobs), desc='A/B runs')}
    floors = floor_results(convmetrics.pairs(split_conversations()['test'], ab_pairs, seed))
    comps, compression = comparisons(results, seeds), compression_table()
    table, claims, comp = ab_tables(results, seeds, floors, comps, compression)
    curves(results, seeds, ab_results + '_curves.png')
    shown = run_dir(arms[0], seeds[0])  # the first arm's first seed: its dashboard and heatmap are the README's
    for name in ('dashboard', 'turn_heatmap'):
        if os.path.isfile(os.path.join(shown, name + '.png')):
            shutil.copy(os.path.join(shown, name + '.png'), os.path.join(os.path.dirname(ab_results), f'turngpt_{name}.png'))
    with open(ab_results + '.json', 'w') as f:
        json.dump({'seeds': seeds, 'ab_scale': ab_scale, 'n_pairs': ab_pairs, 'split': 'test', 'dashboard_from': shown,
                   'runs': {f'{arm} / seed {s}': r for (arm, s), r in results.items()}, 'floors': floors,
                   'comparisons': comps, 'compression': compression}, f, indent=2)
    with open(ab_results + '.md', 'w') as f:
        f.write(f"TurnGPT A/B: {len(seeds)} seeds per arm (mean ± sample std), each at {ab_scale} of its recipe's "
                f"iterations (the same tokens per arm), on {ab_pairs} (history, reply) pairs of chitchat's test "
                f"conversations; the floors with 95% bootstrap intervals over the pairs. val_loss is the best.pt's "
                f"(chosen on val).\n\n{table}\n\nPaired on the same test pairs (each pair's value averaged over the "
                f"seeds; 95% paired bootstrap interval, p); val loss over seeds (Welch's t-test, {len(seeds)} seeds an "
                f"arm):\n\n{claims}\n\nThe compression (model.compression()):\n\n{comp}\n")
    print(table, claims, comp, sep='\n\n')
