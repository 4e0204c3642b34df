"""
The RL phase's measurement (projects/rl/README.md), on the TEST problems, read once here and nowhere else:
- greedy pass@1 on per_level test problems a level (500 by default: all of prepare.arith's), and pass@k (k samples at
  a temperature) on the first k_per_level of them (fewer: k samples cost k generations each);
- of every SFT parent, the RL run from it and its continued-SFT control (projects/rl/experiment.py's plan), per
  level and per reading direction (a bidirectional model both ways); mean ± sample std over seeds (stats.mean_std);
- floors: the most common train answer of the level (a constant), and the last number in the question;
- paired tests on the same test problems, per direction and reading way, pooled over seeds (the items are
  (seed, problem) pairs): exact McNemar (stats.mcnemar) and the pass@1 difference's 95% paired bootstrap interval
  (stats.paired_bootstrap), for RL vs control and RL vs parent;
- the reward and val pass@1 during RL, plotted.
Writes <out>.json (every model's right/wrong on every test problem), <out>.md and rl_curves.png beside them.
$ python -m projects.rl.eval --plan=projects/rl/rl_sweep.json --k_per_level=0   # the README's table (no pass@k: time)
$ python -m projects.rl.eval --runs=experiments/arith-fw-rl     # any RL runs (their parents from the checkpoint)
"""

import json
import os
import sys

import numpy as np
import torch

import arith
from rl import answer_text, attempt, read_problems
from stats import mcnemar, mean_std, paired_bootstrap

# -----------------------------------------------------------------------------
plan = ''  # projects/rl/experiment.py's rl_sweep.json: every parent, RL run and control; or:
runs = ''  # comma-separated RL runs (experiment dirs), each compared with its parent (no control)
per_level: '[1, inf)' = 500  # test problems per level for greedy pass@1
k_per_level: '[0, inf)' = 25  # of those, the first k_per_level a level for pass@k (0: no pass@k)
k: '[1, inf)' = 8  # samples per problem for pass@k
temperature: '(0, inf)' = 1.0  # for pass@k's samples
max_new_tokens: '[1, inf)' = 48
out = 'projects/rl/rl_results'  # out.json and out.md (and rl_curves.png beside them), where the README reads them
seed: '[0, 9.2e18]' = 1337
threads: '[0, inf)' = 0
# -----------------------------------------------------------------------------
ROLES = ('parent', 'control', 'rl')


def load_run(path, device):
    from common import build_model, load_checkpoint
    from tokenizer import Tokenizer
    ckpt = load_checkpoint(path, device)
    model = build_model(ckpt).to(device).eval()
    return model, Tokenizer(ckpt['tokenizer']), ckpt


def evaluate(model, tok, tests, backward, marker, gen):
    """{'right': [0/1 a test problem, greedy], 'passk': [0/1 a pass@k problem], 'length': mean greedy answer chars}."""
    picks = [(p, backward) for p in tests]
    _, _, greedy, right = attempt(model, tok, picks, marker, max_new_tokens, 0)
    out = {'right': right.int().tolist(), 'length': float(np.mean([len(answer_text(tok, g, backward)) for g in greedy]))}
    few = [pick for pick in picks if pick[0]['k_index'] < k_per_level]
    if few:
        sampled = attempt(model, tok, [pick for pick in few for _ in range(k)], marker, max_new_tokens, temperature, gen)[3]
        out['passk'] = sampled.view(len(few), k).max(1).values.int().tolist()
    return out


def measure(run, tests, device):
    """{reading way: evaluate(...)} of a run: both ways for a bidirectional model, else its own."""
    model, tok, ckpt = load_run(run, device)
    ways = ['forward', 'backward'] if ckpt['direction'] == 'bidirectional' else [ckpt['direction']]
    gen = torch.Generator(device=device).manual_seed(seed)
    return {w: evaluate(model, tok, tests, w == 'backward', ckpt['direction'] == 'bidirectional', gen) for w in ways}


def floors(train, tests):
    """{floor: [0/1 a test problem]}: answers that read nothing (a constant a level) or copy (the last number)."""
    common = arith.most_common_answers(train)
    return {'most common train answer': [int(common.get(p['level']) == p['answer']) for p in tests],
            'last number in the question': [int(arith.last_number(p['question']) == p['answer']) for p in tests]}


def level_mask(tests, level):
    return np.array([level == 'all' or p['level'] == level for p in tests])


def pct(xs):
    return mean_std([100 * x for x in xs], 1) if len(xs) > 1 else f"{100 * xs[0]:.1f}"


def table(res):
    """Markdown: pass@1 (and pass@k) per direction, reading way and level, mean ± sample std over seeds; floors;
    then the paired tests."""
    tests, groups = res['tests'], {}
    levels = sorted({p['level'] for p in tests}) + ['all']
    for r in res['results']:
        groups.setdefault(r['direction'], []).append(r)
    roles = [role for role in ROLES if all(role in r for r in res['results'])]
    head = ['model', 'reads', 'level', 'seeds'] + [f'pass@1 {r}' for r in roles]
    if res['k_per_level']:
        head += [f"pass@{res['k']} {r}" for r in roles]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for direction, rs in groups.items():
        for way in rs[0]['rl']:
            for level in levels:
                m = level_mask(tests, level)
                mk = m[[p['k_index'] < res['k_per_level'] for p in tests]]
                cells = [direction, way, str(level), str(len(rs))]
                cells += [pct([np.mean(np.array(r[role][way]['right'])[m]) for r in rs]) for role in roles]
                if res['k_per_level']:
                    cells += [pct([np.mean(np.array(r[role][way]['passk'])[mk]) for r in rs]) for role in roles]
                lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '| floor | ' + ' | '.join(f'level {level}' for level in levels) + ' |', '|---|' + '---|' * len(levels)]
    for name, right in res['floors'].items():
        lines.append(f'| {name} | ' + ' | '.join(f"{100 * np.mean(np.array(right)[level_mask(tests, level)]):.1f}"
                                                  for level in levels) + ' |')
    lines += ['', '| model | reads | levels | A vs B | A only right | B only right | McNemar p | pass@1 A - B (points, 95% CI) |',
              '|---|---|---|---|---|---|---|---|']
    for row in res['paired']:
        d = row['bootstrap']
        lines.append(f"| {row['direction']} | {row['way']} | {row['levels']} | {row['a']} vs {row['b']} | "
                     f"{row['mcnemar']['a_only']} | {row['mcnemar']['b_only']} | {row['mcnemar']['p']:.2g} | "
                     f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] |")
    return '\n'.join(lines)


def paired(results, tests):
    """RL vs control and RL vs parent per direction and reading way, on all levels and on the trained ones (1-2),
    pooled over seeds: each seed's outcomes on the same test problems, concatenated."""
    rows, groups = [], {}
    for r in results:
        groups.setdefault(r['direction'], []).append(r)
    for direction, rs in groups.items():
        for way in rs[0]['rl']:
            for levels, m in (('all', level_mask(tests, 'all')), ('1-2', np.array([p['level'] <= 2 for p in tests]))):
                for b in ('control', 'parent'):
                    if not all(b in r for r in rs):
                        continue
                    a_right = np.concatenate([np.array(r['rl'][way]['right'])[m] for r in rs])
                    b_right = np.concatenate([np.array(r[b][way]['right'])[m] for r in rs])
                    rows.append({'direction': direction, 'way': way, 'levels': levels, 'a': 'rl', 'b': b,
                                 'items': len(a_right), 'mcnemar': mcnemar(a_right, b_right),
                                 'bootstrap': paired_bootstrap(a_right, b_right)})
    return rows


def plot(results, path):
    """The reward (mean of the training rollouts) and the greedy val pass@1 during each RL run."""
    import matplotlib
    from common import read_log
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {'forward': 'tab:blue', 'backward': 'tab:red', 'bidirectional': 'tab:purple'}
    for r in results:
        log = read_log(os.path.join(r['rl_run'], 'log.jsonl'))
        name = os.path.basename(os.path.normpath(r['rl_run']))
        train = [(e['iter'], e['reward']) for e in log if 'reward' in e]
        axes[0].plot(*zip(*train), color=colors.get(r['direction']), alpha=0.7, label=name)
        for key in sorted({k for e in log for k in e if k.startswith('val_pass1')}):  # a bidirectional run: both ways
            evals = [(e['iter'], e[key]) for e in log if key in e]
            axes[1].plot(*zip(*evals), color=colors.get(r['direction']), alpha=0.7, ls='--' if 'backward' in key else '-',
                         marker='.', label=name + key.removeprefix('val_pass1').replace('/', ', read '))
    axes[0].set(title='reward of the training rollouts', xlabel='RL iteration', ylabel='mean reward')
    axes[1].set(title='greedy pass@1 on VAL problems (levels 1-2) during RL', xlabel='RL iteration', ylabel='pass@1')
    for ax in axes:
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chosen_runs():
    """[{direction, seed, parent, rl, control?}] from --plan or --runs."""
    from common import die, load_checkpoint
    if plan:
        with open(plan) as f:
            return list(json.load(f)['runs'].values())
    out = []
    for r in [r for r in runs.split(',') if r]:
        if not os.path.isfile(os.path.join(r, 'ckpt.pt')):
            die(f"{r} holds no checkpoint; pass RL runs, e.g. experiments/arith-fw-rl")
        ckpt = load_checkpoint(r)
        if not ckpt.get('parent') or not os.path.isfile(os.path.join(ckpt['parent'], 'ckpt.pt')):
            die(f"{r} has no parent run to compare with (it should be an RL run started from an SFT run)")
        out.append({'direction': ckpt['direction'], 'seed': ckpt['config'].get('seed'), 'parent': ckpt['parent'], 'rl': r})
    return out


def main():
    from common import configure, die, load_checkpoint, set_threads
    from tqdm import tqdm
    configure(globals(), sys.argv[1:])
    set_threads(threads, 'cpu')
    todo = chosen_runs()
    if not todo:
        die("name the runs to measure: python -m projects.rl.eval --plan=projects/rl/rl_sweep.json (or --runs=...)")
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    data_dir = os.path.join('data', load_checkpoint(todo[0]['rl'])['config']['dataset'])
    tests = read_problems(data_dir, 'test')  # every level: what RL on the easy ones does to the hard ones too
    tests = [dict(p, k_index=i) for level in sorted({p['level'] for p in tests})
             for i, p in enumerate([q for q in tests if q['level'] == level][:per_level])]
    results = []
    for t in tqdm(todo, desc='runs'):
        r = {'direction': t['direction'], 'seed': t['seed'], 'rl_run': t['rl'], 'parent_run': t['parent']}
        for role, path in (('parent', t['parent']), ('rl', t['rl']), ('control', t.get('control'))):
            if path:
                r[role] = measure(path, tests, device)
        if t.get('control'):
            r['control_run'] = t['control']
        results.append(r)
    res = {'per_level': per_level, 'k': k, 'k_per_level': k_per_level, 'temperature': temperature,
           'tests': [{'question': p['question'], 'answer': p['answer'], 'level': p['level'], 'k_index': p['k_index']}
                     for p in tests],
           'floors': floors(read_problems(data_dir, 'train'), tests), 'results': results}
    res['paired'] = paired(results, tests)
    md = table(res)
    print(md)
    with open(f'{out}.json', 'w') as f:
        json.dump(res, f)
    with open(f'{out}.md', 'w') as f:
        f.write(md + '\n')
    plot(results, os.path.join(os.path.dirname(out) or '.', 'rl_curves.png'))
    print(f"wrote {out}.json, {out}.md and rl_curves.png")


if __name__ == '__main__':
    main()
