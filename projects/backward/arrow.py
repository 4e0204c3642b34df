"""
The arrow of time (Papadopoulos, Wenger & Hongler, ICML 2024) at CPU scale: is predicting text right to left
harder than left to right, and can one model do both? Trains forward, backward and bidirectional GPTs on the
same data and token budget, at several sizes and seeds, scores each on the same held-out text in bits per byte
(projects/backward/eval.py), and writes the comparison:
$ python -m projects.backward.arrow                      # config/arrow_{small,medium}.py x 3 directions x 3 seeds, ~45 min on 2 cores
$ python -m projects.backward.arrow --sizes=d12,d20,d26 --seeds=1 --workers=1       # the GPU configs, one run at a time
-> projects/backward/arrow_results.md (the table), .json, arrow_per_position.png (the gap by context position).
Runs already finished in arrow/ are reused, so an interrupted study picks up where it stopped.
"""

import os
import sys
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import configure, die, launch
from stats import mean_std

# -----------------------------------------------------------------------------
sizes = 'small,medium'  # names in SIZES
directions = 'forward,backward,bidirectional'
seeds = '1,2,3'
workers: '[1, inf)' = 2  # runs at a time; on CPU each gets one thread
eval_tokens: '[1, inf)' = 100_000  # held-out tokens scored per reading direction
out = 'arrow'  # where the runs go
results = 'projects/backward/arrow_results'  # the table (.md, .json), and arrow_per_position.png beside it: the committed copies
# -----------------------------------------------------------------------------
# size -> its config and overrides: two CPU sizes, and the source's GPU depths (n_embd = 64 x depth, heads of 128)
SIZES = {'small': ('arrow_small.py', []), 'medium': ('arrow_medium.py', []),
         **{f'd{d}': ('arrow_gpu.py', [f'--n_layer={d}', f'--n_head={d // 2}', f'--n_embd={64 * d}']) for d in (12, 20, 26)}}


def run_dir(size, way, seed):
    return os.path.join(out, f'{size}-{way}-s{seed}')


def train_and_evaluate(job):
    """One run: train (unless done), then score both reading directions. Returns its summary."""
    size, way, seed = job
    d = run_dir(size, way, seed)
    summary = os.path.join(d, 'evaluations', 'summary.json')
    if not os.path.isfile(summary):
        log = open(os.path.join(out, f'{size}-{way}-s{seed}.log'), 'w')
        overwrite = ['--overwrite=True'] if os.path.isdir(d) else []  # an unfinished run starts again
        config, overrides = SIZES[size]
        for cmd in (['train.py', f'config/{config}', *overrides, f'--direction={way}', f'--seed={seed}', f'--out_dir={d}',
                     '--threads=1', *overwrite],
                    ['projects.backward.eval', f'--out_dir={d}', '--tasks=loss', f'--eval_tokens={eval_tokens}', '--threads=1']):
            if launch(*cmd, log=log):
                die(f"{' '.join(cmd[:2])} failed for {d}: see {log.name}")
        print(f"done: {d}", flush=True)
    with open(summary) as f:
        return json.load(f)


def aggregate(results, size_list, way_list, seed_list):
    """The table: per size and model, bits per byte read forward and backward (mean ± std over seeds), and the
    gap BW/FW - 1 between the backward model on backward text and the forward model on forward text, by seed."""
    rows = ['| size | model | bpb forward text | bpb backward text | seeds |', '| --- | --- | --- | --- | --- |']
    gaps, res = {}, {}
    for size in size_list:
        for way in way_list:
            runs = [results[(size, way, s)] for s in seed_list]
            fw = [r['loss']['forward']['bpb'] for r in runs]
            bw = [r['loss']['backward']['bpb'] for r in runs]
            res[f'{size}/{way}'] = {'bpb_forward_text': fw, 'bpb_backward_text': bw}
            rows.append(f"| {size} | {way} | {mean_std(fw)} | {mean_std(bw)} | {len(runs)} |")
        pairs = []  # the two one-way models, each on its own direction's text
        if {'forward', 'backward'} <= set(way_list):
            pairs.append(('one-way models', [results[(size, 'backward', s)]['loss']['backward']['bpb'] /
                                             results[(size, 'forward', s)]['loss']['forward']['bpb'] - 1 for s in seed_list]))
        if 'bidirectional' in way_list:
            pairs.append(('bidirectional model', [results[(size, 'bidirectional', s)]['loss']['backward']['bpb'] /
                                                  results[(size, 'bidirectional', s)]['loss']['forward']['bpb'] - 1 for s in seed_list]))
        for label, g in pairs:
            gaps[f'{size}/{label}'] = g
    rows += ['', '| size | BW/FW - 1 of | mean ± std over seeds | per seed |', '| --- | --- | --- | --- |']
    for key, g in gaps.items():
        size, label = key.split('/')
        rows.append(f"| {size} | {label} | {np.mean(g) * 100:+.2f}% ± {np.std(g, ddof=1) * 100 if len(g) > 1 else 0:.2f}% | "
                    + ', '.join(f"{x * 100:+.2f}%" for x in g) + ' |')
    return '\n'.join(rows), {'bpb': res, 'bw_over_fw_minus_1': gaps}


def plot_positions(results, path, size_list, way_list, seed_list):
    """The paper's main plot: BW/FW - 1 of the mean loss by context position, one line per size, seeds averaged."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for size in size_list:
        if not {'forward', 'backward'} <= set(way_list):
            break
        curves = []
        for s in seed_list:
            fw = results[(size, 'forward', s)]['loss']['forward']['buckets']
            bw = results[(size, 'backward', s)]['loss']['backward']['buckets']
            curves.append([b['nll'] / f['nll'] - 1 for f, b in zip(fw, bw)])
        curves = np.array(curves) * 100
        labels = [f['positions'] for f in fw]
        ax.errorbar(range(len(labels)), curves.mean(0), yerr=curves.std(0, ddof=1) if len(curves) > 1 else None,
                    marker='o', capsize=3, label=f'{size} ({len(curves)} seeds)')
    ax.axhline(0, color='gray', lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_xlabel('context position (tokens before the target)')
    ax.set_ylabel('backward / forward loss - 1 (%)')
    ax.set_title('the arrow of time: backward model on reversed text vs forward model')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    size_list, way_list, seed_list = sizes.split(','), directions.split(','), [int(s) for s in seeds.split(',')]
    unknown = [s for s in size_list if s not in SIZES]
    if unknown:
        die(f"unknown size {unknown[0]}; the sizes are {', '.join(SIZES)}")
    os.makedirs(out, exist_ok=True)
    jobs = [(size, way, s) for size in size_list for s in seed_list for way in way_list]
    with ThreadPoolExecutor(workers) as pool:  # threads only wait on the subprocesses
        found = dict(zip(jobs, pool.map(train_and_evaluate, jobs)))
    table, numbers = aggregate(found, size_list, way_list, seed_list)
    with open(results + '.md', 'w') as f:
        f.write(table + '\n')
    with open(results + '.json', 'w') as f:
        json.dump(numbers, f, indent=2)
    plot = os.path.join(os.path.dirname(results), 'arrow_per_position.png')
    plot_positions(found, plot, size_list, way_list, seed_list)
    print(table)
    print(f"wrote {results}.md, {results}.json and {plot}")
