"""
The arrow of time (Papadopoulos, Wenger & Hongler, ICML 2024) at CPU scale: is predicting text right to left
harder than left to right, and can one model do both? Trains forward, backward and bidirectional GPTs on the
same data and token budget, at several sizes and seeds, scores each on the same held-out text in bits per byte
(projects/backward/eval.py), and writes the comparison:
$ python -m projects.backward.arrow                      # config/arrow_small.py x 3 directions x 3 seeds, ~25 min on 2 cores
$ python -m projects.backward.arrow --sizes=small,medium --seeds=1,2,3,4,5     # more seeds resolve a smaller gap
$ python -m projects.backward.arrow --sizes=d12,d20,d26 --seeds=1 --workers=1       # the GPU configs, one run at a time
-> projects/backward/arrow_results.md (the table), .json, arrow_per_position.png (the gap by context position).
Runs already finished in arrow/ are reused, so an interrupted study picks up where it stopped.
"""

import os
import sys
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import REPO, configure, die, launch, read_config_file, read_log
from stats import bootstrap_ci, fmt_ci, fmt_diff, mean_ci, mean_std, paired_bootstrap

# -----------------------------------------------------------------------------
sizes = 'small'  # names in SIZES ('small,medium': both CPU sizes)
directions = 'forward,backward,bidirectional'
seeds = '1,2,3'  # the one-way models': their gap is the arrow, and seed-to-seed spread sets its resolution
bi_seeds = '1,2,3'  # the bidirectional model's
workers: '[1, inf)' = 2  # runs at a time; on CPU each gets one thread
eval_tokens: '[1, inf)' = 100_000  # held-out tokens scored per reading direction
position_tokens: '[1, inf)' = 4_000  # held-out tokens scored at every context length, both ways (eval --positions)
phases = 'train,evaluate'  # train only, to evaluate later
out = 'arrow'  # where the runs go
results = 'projects/backward/arrow_results'  # the table (.md, .json), and arrow_per_position.png beside it: the committed copies
# -----------------------------------------------------------------------------
# size -> its config and overrides: two CPU sizes, and the source's GPU depths (n_embd = 64 x depth, heads of 128)
SIZES = {'small': ('arrow_small.py', []), 'medium': ('arrow_medium.py', []),
         **{f'd{d}': ('arrow_gpu.py', [f'--n_layer={d}', f'--n_head={d // 2}', f'--n_embd={64 * d}']) for d in (12, 20, 26)}}


def run_dir(size, way, seed):
    return os.path.join(out, f'{size}-{way}-s{seed}')


def trained(d, size):
    """Whether the run in d reached its config's max_iters (a checkpoint alone may be from mid-run)."""
    log = os.path.join(d, 'log.jsonl')
    want = read_config_file(os.path.join(REPO, 'config', SIZES[size][0]))['max_iters']
    return os.path.isfile(log) and any(r.get('iter', -1) >= want for r in read_log(log))


def train_and_evaluate(job):
    """One run: train (unless done), then score it (unless done): bits per byte both ways, the loss at every
    context length on paired tokens, and the next-turn multiple choice. Returns its summary."""
    size, way, seed = job
    d = run_dir(size, way, seed)
    summary = os.path.join(d, 'evaluations', 'summary.json')
    log = open(os.path.join(out, f'{size}-{way}-s{seed}.log'), 'a')
    if 'train' in phases and not trained(d, size):
        overwrite = ['--overwrite=True'] if os.path.isdir(d) else []  # an unfinished run starts again
        config, overrides = SIZES[size]
        if launch('train.py', f'config/{config}', *overrides, f'--direction={way}', f'--seed={seed}', f'--out_dir={d}',
                  '--threads=1', *overwrite, log=log):
            die(f"train.py failed for {d}: see {log.name}")
        print(f"trained: {d}", flush=True)
    if 'evaluate' not in phases:
        return None
    if not (os.path.isfile(summary) and 'positions' in json.load(open(summary))):
        if launch('projects.backward.eval', f'--out_dir={d}', '--tasks=loss,next_turn', f'--eval_tokens={eval_tokens}',
                  f'--position_tokens={position_tokens}', '--threads=1', log=log):
            die(f"projects.backward.eval failed for {d}: see {log.name}")
        print(f"evaluated: {d}", flush=True)
    with open(summary) as f:
        return json.load(f)


def gap(a, b):
    """b / a - 1: how much worse (+) the backward loss is than the forward one."""
    return float(np.mean(b) / np.mean(a) - 1)


def aggregate(results, size_list, seeds_of, floor=None):
    """The tables and their numbers, per size:
    - bits per byte of each model read each way (mean ± sample std over seeds);
    - the arrow, BW/FW - 1 of the backward model on backward text against the forward model on forward text, per
      seed, with the t interval over seeds: its half-width is the resolution the study reached;
    - the same by context length on paired tokens: every held-out target at the same context length both ways
      (eval --position_tokens), each model's per-token NLL averaged over its seeds, the interval a bootstrap over
      the targets (resampled together in both directions);
    - the next-turn multiple choice per model and reading: accuracy against chance (0.25), pooled over seeds with a
      bootstrap interval over items, and the one-way models compared on the same items (McNemar, pooled).
    seeds_of: {direction: [seeds]}; floor: the next-turn items' no-model rule accuracy. A result may carry 'positions_nll' {way: (targets, T) array} and
    'mc_correct' {way: [bool per item]} (main loads them from the runs' evaluations)."""
    md, numbers = [], {}
    for size in size_list:
        runs = {way: [results[(size, way, s)] for s in seeds] for way, seeds in seeds_of.items()}
        num = numbers[size] = {'seeds': seeds_of, 'bpb': {}, 'gap': {}, 'positions': {}, 'next_turn': {}}
        md += [f'### {size}', '', '| model | seeds | bpb forward text | bpb backward text |', '| --- | --- | --- | --- |']
        for way, rs in runs.items():
            fw, bw = [r['loss']['forward']['bpb'] for r in rs], [r['loss']['backward']['bpb'] for r in rs]
            num['bpb'][way] = {'forward_text': fw, 'backward_text': bw}
            md.append(f"| {way} | {len(rs)} | {mean_std(fw)} | {mean_std(bw)} |")
        md += ['', '| BW/FW - 1 of | seeds | mean ± std | 95% t interval over seeds (the resolution) | per seed |',
               '| --- | --- | --- | --- | --- |']
        comparisons = {}
        if {'forward', 'backward'} <= set(runs):
            common = [s for s in seeds_of['forward'] if s in seeds_of['backward']]
            comparisons['one-way models, each on its own direction'] = [
                gap([results[(size, 'forward', s)]['loss']['forward']['bpb']], [results[(size, 'backward', s)]['loss']['backward']['bpb']])
                for s in common]
        if 'bidirectional' in runs:
            comparisons['the bidirectional model, its backward / its forward'] = [
                gap([r['loss']['forward']['bpb']], [r['loss']['backward']['bpb']]) for r in runs['bidirectional']]
        for label, g in comparisons.items():
            lo, hi = mean_ci(g) if len(g) > 1 else (float('nan'),) * 2
            num['gap'][label] = {'per_seed': g, 'mean': float(np.mean(g)), 'ci95': [lo, hi], 'resolution': (hi - lo) / 2}
            md.append(f"| {label} | {len(g)} | {np.mean(g) * 100:+.2f}% ± {np.std(g, ddof=1) * 100 if len(g) > 1 else 0:.2f}% | "
                      f"[{lo * 100:+.2f}%, {hi * 100:+.2f}%] (± {(hi - lo) / 2 * 100:.2f}%) | " + ', '.join(f"{x * 100:+.2f}%" for x in g) + ' |')
        md += position_tables(runs, num)
        md += mc_tables(runs, num, floor)
    return '\n'.join(md), numbers


def bucket_slices(T):
    """Context lengths 1, [2, 4), [4, 8), ... up to T, as column slices of a (targets, T) array."""
    return [(f'[{2**b}, {min(2**(b + 1), T + 1)})', slice(2**b - 1, min(2**(b + 1), T + 1) - 1)) for b in range(T.bit_length())]


def position_tables(runs, num):
    """BW/FW - 1 by context length on paired targets, for the one-way pair and the bidirectional model."""
    pairs = {}
    if {'forward', 'backward'} <= set(runs):
        pairs['one-way models'] = ([r['positions_nll']['forward'] for r in runs['forward'] if 'positions_nll' in r],
                                   [r['positions_nll']['backward'] for r in runs['backward'] if 'positions_nll' in r])
    if 'bidirectional' in runs:
        rs = [r for r in runs['bidirectional'] if 'positions_nll' in r]
        pairs['bidirectional model'] = ([r['positions_nll']['forward'] for r in rs], [r['positions_nll']['backward'] for r in rs])
    md = []
    for label, (fws, bws) in pairs.items():
        if not fws or not bws:
            continue
        fw, bw = np.mean(fws, 0), np.mean(bws, 0)  # (targets, T): each target's NLL averaged over seeds
        rows = []
        for name, cols in bucket_slices(fw.shape[1]):
            f, b = fw[:, cols].mean(1), bw[:, cols].mean(1)  # per target, over the bucket's context lengths
            lo, hi = bootstrap_ci(np.stack([f, b], 1), lambda x: x[:, 1].mean() / x[:, 0].mean() - 1, n_boot=1000)
            seeds = [gap(x[:, cols], y[:, cols]) for x, y in zip(fws, bws)]
            rows.append({'positions': name, 'nll_forward': float(f.mean()), 'nll_backward': float(b.mean()),
                         'gap': gap(f, b), 'ci95': [lo, hi], 'per_seed': seeds})
        lo, hi = bootstrap_ci(np.stack([fw.mean(1), bw.mean(1)], 1), lambda x: x[:, 1].mean() / x[:, 0].mean() - 1, n_boot=1000)
        num['positions'][label] = {'targets': len(fw), 'seeds': [len(fws), len(bws)], 'buckets': rows,
                                   'all': {'gap': gap(fw, bw), 'ci95': [lo, hi]}}
        md += ['', f"{label}: NLL by context length on the same {len(fw):,} held-out targets both ways (each target's "
               f"NLL averaged over {len(fws)} and {len(bws)} seeds; 95% bootstrap over targets; per seed: min to max)",
               '', '| context tokens | NLL forward | NLL backward | BW/FW - 1 [95%] | per seed |', '| --- | --- | --- | --- | --- |']
        md += [f"| {r['positions']} | {r['nll_forward']:.4f} | {r['nll_backward']:.4f} | {r['gap'] * 100:+.2f}% "
               f"[{r['ci95'][0] * 100:+.2f}, {r['ci95'][1] * 100:+.2f}] | {min(r['per_seed']) * 100:+.2f} to {max(r['per_seed']) * 100:+.2f} |" for r in rows]
        md.append(f"| all 1-{fw.shape[1]} | {fw.mean():.4f} | {bw.mean():.4f} | {gap(fw, bw) * 100:+.2f}% [{lo * 100:+.2f}, {hi * 100:+.2f}] | |")
    return md


def mc_tables(runs, num, floor=None):
    """Next-turn accuracy per model and reading against chance: each item's accuracy averaged over seeds (every seed
    gets the same items), a bootstrap over items; the one-way models compared on the same items, paired."""
    md, per_item = [], {}
    if floor is not None:
        num['next_turn']['floor'] = floor
    for way, rs in runs.items():
        for reading in ('forward', 'backward'):
            per_seed = [np.asarray(r['mc_correct'][reading], dtype=float) for r in rs if reading in r.get('mc_correct', {})]
            if per_seed:
                x = per_item[(way, reading)] = np.mean(per_seed, 0)
                num['next_turn'][f'{way} model read {reading}'] = {
                    'per_seed': [float(c.mean()) for c in per_seed], 'mean': float(x.mean()), 'ci95': list(bootstrap_ci(x)),
                    'items': len(x)}
    if not per_item:
        return md
    md += ['', 'Next turn, 1 of 4 (chance 0.25): accuracy, mean ± std over seeds, and the mean with a 95% bootstrap '
           'over items (each item averaged over the seeds)', '', '| model | read | seeds | accuracy | [95%] |', '| --- | --- | --- | --- | --- |']
    for (way, reading) in per_item:
        r = num['next_turn'][f'{way} model read {reading}']
        md.append(f"| {way} | {reading} | {len(r['per_seed'])} | {mean_std(r['per_seed'], 3)} | {fmt_ci(r['mean'], *r['ci95'])} |")
    if 'floor' in num['next_turn']:
        md.append(f"| rule: most tokens shared with the context (no model) | - | - | - | {num['next_turn']['floor']:.3f} |")
    if ('forward', 'forward') in per_item and ('backward', 'backward') in per_item:
        d = paired_bootstrap(per_item[('backward', 'backward')], per_item[('forward', 'forward')])
        num['next_turn']['backward minus forward'] = d
        md.append(f"\nBackward model minus forward model on the same items: {fmt_diff(d)} (p = {d['p']:.3f}).")
    return md


def plot_positions(numbers, path):
    """The paper's main plot, on paired targets: BW/FW - 1 by context length, one line per size and pair, with
    the bootstrap band over targets and each seed's curve faint behind it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for color, (size, num) in enumerate(numbers.items()):
        for style, (label, p) in zip(('o-', 's--'), num['positions'].items()):
            rows = p['buckets']
            x = range(len(rows))
            y = [r['gap'] * 100 for r in rows]
            ax.plot(x, y, style, color=f'C{color}', label=f'{size}, {label} ({p["targets"]:,} targets)')
            ax.fill_between(x, [r['ci95'][0] * 100 for r in rows], [r['ci95'][1] * 100 for r in rows], color=f'C{color}', alpha=0.2)
            for k in range(len(rows[0]['per_seed'])) if label == 'one-way models' else ():
                ax.plot(x, [r['per_seed'][k] * 100 for r in rows], '-', color=f'C{color}', alpha=0.25, lw=0.8)
    ax.axhline(0, color='gray', lw=0.8)
    ax.set_xticks(range(len(rows)), [r['positions'] for r in rows], rotation=30)
    ax.set_xlabel('context length (tokens before the target)')
    ax.set_ylabel('backward / forward loss - 1 (%)')
    ax.set_title('the arrow of time on the same targets both ways')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def load_outputs(summary, d):
    """A run's summary with its per-target NLLs and per-item next-turn outcomes from its evaluations/."""
    ev = os.path.join(d, 'evaluations')
    summary['positions_nll'] = {w: np.load(os.path.join(ev, f'positions.{w}.npy')) for w in ('forward', 'backward')
                                if os.path.isfile(os.path.join(ev, f'positions.{w}.npy'))}
    summary['mc_correct'] = {w: [json.loads(line)['correct'] for line in open(os.path.join(ev, f'next_turn.{w}.jsonl'))]
                             for w in ('forward', 'backward') if os.path.isfile(os.path.join(ev, f'next_turn.{w}.jsonl'))}
    return summary


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    size_list, way_list, seed_list = sizes.split(','), directions.split(','), [int(s) for s in seeds.split(',')]
    unknown = [s for s in size_list if s not in SIZES]
    if unknown:
        die(f"unknown size {unknown[0]}; the sizes are {', '.join(SIZES)}")
    os.makedirs(out, exist_ok=True)
    bi_seed_list = [int(s) for s in bi_seeds.split(',')]
    jobs = [(size, way, s) for size in size_list for s in sorted(set(seed_list + bi_seed_list)) for way in way_list
            if s in (bi_seed_list if way == 'bidirectional' else seed_list)]
    with ThreadPoolExecutor(workers) as pool:  # threads only wait on the subprocesses
        found = dict(zip(jobs, pool.map(train_and_evaluate, jobs)))
    if 'evaluate' not in phases:
        sys.exit(0)
    found = {job: load_outputs(r, run_dir(*job)) for job, r in found.items()}
    seeds_of = {way: bi_seed_list if way == 'bidirectional' else seed_list for way in way_list}
    floors = [r['mc_floor']['next_turn'] for r in found.values() if 'next_turn' in r.get('mc_floor', {})]  # one per item set
    table, numbers = aggregate(found, size_list, seeds_of, floors[0] if floors else None)
    with open(results + '.md', 'w') as f:
        f.write(table + '\n')
    with open(results + '.json', 'w') as f:
        json.dump(numbers, f, indent=2)
    plot = os.path.join(os.path.dirname(results), 'arrow_per_position.png')
    plot_positions(numbers, plot)
    print(table)
    print(f"wrote {results}.md, {results}.json and {plot}")
