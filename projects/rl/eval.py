"""
The RL phase's measurement (projects/rl/README.md): RL runs against their parents (the SFT each started from):
pass@1 (greedy) and pass@k (k samples at a temperature) on the test problems, per level and per reading direction (a
bidirectional model both ways), the mean answer length, with runs of the same direction pooled as seeds
(mean ± std); and the reward during RL, plotted. Writes projects/rl/rl_results.json, rl_results.md and rl_curves.png.
$ python -m projects.rl.eval --runs=experiments/arith-fw-rl,experiments/arith-bw-rl
"""

import json
import os
import sys

import numpy as np
import torch

from rl import answer_text, attempt, read_problems

# -----------------------------------------------------------------------------
runs = ''  # comma-separated RL runs (experiment dirs); each is compared with its parent, the SFT it started from
per_level: '[1, inf)' = 100  # test problems per level
k: '[1, inf)' = 8  # samples per problem for pass@k
temperature: '(0, inf)' = 1.0  # for pass@k's samples
max_new_tokens: '[1, inf)' = 64
out = 'projects/rl/rl_results'  # out.json and out.md (and rl_curves.png beside them), where the README reads them
seed: '[0, 9.2e18]' = 1337
threads: '[0, inf)' = 0
# -----------------------------------------------------------------------------



def load_run(path, device):
    from common import build_model, load_checkpoint
    from tokenizer import Tokenizer
    ckpt = load_checkpoint(path, device)
    model = build_model(ckpt).to(device).eval()
    return model, Tokenizer(ckpt['tokenizer']), ckpt


def evaluate(model, tok, tests, backward, marker, gen):
    """{level: {pass1, passk, length}} and 'all' of one model read one way, on tests [{question, answer, level}]."""
    picks = [(p, backward) for p in tests]
    _, _, greedy, right = attempt(model, tok, picks, marker, max_new_tokens, 0)
    _, _, _, sampled = attempt(model, tok, [pick for pick in picks for _ in range(k)], marker, max_new_tokens, temperature, gen)
    best = sampled.view(len(tests), k).max(1).values
    rows = [(p['level'], right[j].item(), best[j].item(), len(answer_text(tok, greedy[j], backward))) for j, p in enumerate(tests)]
    out = {}
    for level in sorted({r[0] for r in rows}) + ['all']:
        mine = np.array([r[1:] for r in rows if level in ('all', r[0])], dtype=float)
        out[str(level)] = {'pass1': mine[:, 0].mean(), f'pass{k}': mine[:, 1].mean(), 'length': mine[:, 2].mean()}
    return out


def measure(run, tests, device):
    """{reading direction: evaluate(...)} of a run: both ways for a bidirectional model, else its own."""
    model, tok, ckpt = load_run(run, device)
    ways = ['forward', 'backward'] if ckpt['direction'] == 'bidirectional' else [ckpt['direction']]
    gen = torch.Generator(device=device).manual_seed(seed)
    return {w: evaluate(model, tok, tests, w == 'backward', ckpt['direction'] == 'bidirectional', gen) for w in ways}, ckpt


def spread(xs):
    return f"{100 * np.mean(xs):.1f} ± {100 * np.std(xs):.1f}" if len(xs) > 1 else f"{100 * xs[0]:.1f}"


def table(results):
    """Markdown: one row per (model direction, reading direction, level), before -> after, mean ± std over the RL
    runs (seeds) and over their distinct sft parents."""
    lines = [f"| model | reads | level | RL runs | pass@1 SFT | pass@1 RL | pass@{k} SFT | pass@{k} RL | answer chars SFT | RL |",
             '|---|---|---|---|---|---|---|---|---|---|']
    groups = {}
    for r in results:
        groups.setdefault(r['direction'], []).append(r)
    for direction, rs in groups.items():
        for way in rs[0]['after']:
            for level in rs[0]['after'][way]:
                # before: each distinct parent once (RL seeds from one sft run share it); after: each RL run
                get = lambda when, m: [r[when][way][level][m] for r in (rs if when == 'after' else
                                                                         {r['parent']: r for r in rs}.values())]
                lines.append(f"| {direction} | {way} | {level} | {len(rs)} | {spread(get('before', 'pass1'))} | "
                             f"{spread(get('after', 'pass1'))} | {spread(get('before', f'pass{k}'))} | "
                             f"{spread(get('after', f'pass{k}'))} | {np.mean(get('before', 'length')):.1f} | "
                             f"{np.mean(get('after', 'length')):.1f} |")
    return '\n'.join(lines)


def plot(results, path):
    """The reward (mean of the training rollouts) and the greedy test pass@1 during each RL run."""
    import matplotlib
    from common import read_log
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {'forward': 'tab:blue', 'backward': 'tab:red', 'bidirectional': 'tab:purple'}
    for r in results:
        log = read_log(os.path.join(r['run'], 'log.jsonl'))
        name = os.path.basename(os.path.normpath(r['run']))
        train = [(e['iter'], e['reward']) for e in log if 'reward' in e]
        axes[0].plot(*zip(*train), color=colors.get(r['direction']), alpha=0.8, label=name)
        for key in sorted({k for e in log for k in e if k.startswith('val_pass1')}):  # a bidirectional run: both ways
            evals = [(e['iter'], e[key]) for e in log if key in e]
            axes[1].plot(*zip(*evals), color=colors.get(r['direction']), alpha=0.8, ls='--' if 'backward' in key else '-',
                         label=name + key.removeprefix('val_pass1').replace('/', ', read '))
    axes[0].set(title='reward of the training rollouts', xlabel='RL iteration', ylabel='mean reward')
    axes[1].set(title='greedy pass@1 on test problems (during RL)', xlabel='RL iteration', ylabel='pass@1')
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    from common import configure, die, load_checkpoint, set_threads
    from tqdm import tqdm
    configure(globals(), sys.argv[1:])
    set_threads(threads, 'cpu')
    chosen = [r for r in runs.split(',') if r]
    if not chosen:
        die("name the RL runs to measure: python -m projects.rl.eval --runs=experiments/arith-fw-rl,...")
    for r in chosen:
        if not os.path.isfile(os.path.join(r, 'ckpt.pt')):
            die(f"{r} holds no checkpoint; pass RL runs, e.g. experiments/arith-fw-rl")
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    results = []
    for r in tqdm(chosen, desc='runs'):
        ckpt = load_checkpoint(r)
        if not ckpt.get('parent') or not os.path.isfile(os.path.join(ckpt['parent'], 'ckpt.pt')):
            die(f"{r} has no parent run to compare with (it should be an RL run started from an SFT run)")
        data_dir = os.path.join('data', ckpt['config']['dataset'])
        tests = read_problems(data_dir, 'test')  # every level: what RL on the easy ones does to the hard ones too
        tests = [p for level in sorted({p['level'] for p in tests}) for p in [q for q in tests if q['level'] == level][:per_level]]
        after, _ = measure(r, tests, device)
        before, _ = measure(ckpt['parent'], tests, device)
        results.append({'run': r, 'parent': ckpt['parent'], 'direction': ckpt['direction'], 'before': before, 'after': after})
    md = table(results)
    print(md)
    with open(f'{out}.json', 'w') as f:
        json.dump({'k': k, 'temperature': temperature, 'per_level': per_level, 'results': results}, f, indent=1)
    with open(f'{out}.md', 'w') as f:
        f.write(md + '\n')
    plot(results, os.path.join(os.path.dirname(out) or '.', 'rl_curves.png'))
    print(f"wrote {out}.json, {out}.md and rl_curves.png")


if __name__ == '__main__':
    main()
