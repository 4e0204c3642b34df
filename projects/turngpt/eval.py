"""
TurnGPT's evaluation (projects/turngpt/README.md). One run: the honest compression figures, semantic arithmetic in turn
space at init and after training, the conversation metrics on held-out conversations (convmetrics.py), a turn-
vector heatmap and a dashboard PNG:
$ python -m projects.turngpt.eval --out_dir=out-turngpt            # -> out-turngpt/turngpt.json, turn_heatmap.png, dashboard.png
The A/B the source planned, each arm trained by train.py at the same token budget, several seeds, then measured:
$ python -m projects.turngpt.eval --ab=True                        # -> projects/turngpt/turngpt_ab.md, .json (~25 min on 2 cores)
Arms differ from the full recipe (config/turngpt.py) in one thing each: the simple one-phase recipe, random init,
E=8, dense embeddings, no speaker embeddings. Runs already finished in ab-turngpt/ are reused.
"""

import os
import sys
import json
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from stats import mean_std
from common import REPO, configure, die, launch, setup_device, load_checkpoint, build_model, read_config_file, read_log
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out-turngpt'  # the run to evaluate
ckpt_name = 'best.pt'  # its checkpoint: best.pt (keep_best) if there, else ckpt.pt
n_pairs: '[20, inf)' = 200  # held-out (history, reply) pairs from chitchat's val conversations
max_new_tokens: '[1, inf)' = 32  # per generated reply (greedy)
seed: '[0, 9.2e18]' = 1337
device = 'cpu'
threads: '[0, inf)' = 0
ab = False  # run the A/B instead
ab_seeds = '1,2'
ab_scale: '(0, 1]' = 0.25  # the share of each recipe's iterations the A/B trains (the same for every arm)
ab_dir = 'ab-turngpt'  # the A/B's runs
ab_results = 'projects/turngpt/turngpt_ab'  # its table (.md, .json): the committed copies
workers: '[1, inf)' = 2  # A/B runs at a time; each gets one thread
# -----------------------------------------------------------------------------
FULL, SIMPLE = os.path.join(REPO, 'config', 'turngpt.py'), os.path.join(REPO, 'config', 'turngpt_simple.py')
# arm -> (config, overrides): the full recipe, and one change each
ARMS = {
    'full (curriculum, semantic, E=32, speakers)': (FULL, []),
    'simple (one phase)': (SIMPLE, []),
    'random init': (FULL, ["--data_args={'semantic_init': False, 'eval_analogies': True}"]),
    'E=8': (FULL, ['--turn_dim=8']),
    'dense embeddings': (FULL, ['--turn_dim=0', "--lr_scales={'transformer.wse': 1.0}"]),
    'no speakers': (FULL, ['--n_speakers=0', '--data_source=tokens',
                           "--lr_scales={'transformer.turn': 1.0, 'transformer.turn_map': 1.0}"]),
}
METRICS = ['val_loss', 'response_ppl', 'hits@1/20', 'distinct_1', 'distinct_2', 'repetition', 'bleu2', 'chrf',
           'coherence', 'analogy_top1', 'analogy_rank_init', 'analogy_rank']


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
    """Overrides that train a recipe at ab_scale of its iterations: max_iters, the phase starts and the evals."""
    c = read_config_file(config)
    it = max(1, round(c['max_iters'] * ab_scale))
    phases = {round(s * ab_scale): p for s, p in c.get('phases', {}).items()}
    return [f'--max_iters={it}', f'--phases={phases!r}', f"--eval_interval={max(1, round(c['eval_interval'] * ab_scale))}"]


def train_and_evaluate(job):
    arm, s = job
    d = os.path.join(ab_dir, f"{''.join(ch if ch.isalnum() else '_' for ch in arm.split(' (')[0])}-s{s}")
    result = os.path.join(d, 'turngpt.json')
    if not os.path.isfile(result):
        config, overrides = ARMS[arm]
        log = open(d + '.log', 'w')
        for cmd in (['train.py', config, *scaled(config), *overrides, f'--seed={s}', f'--out_dir={d}', '--threads=1',
                     '--hdf5_log=', '--overwrite=True'],
                    ['projects.turngpt.eval', f'--out_dir={d}', '--threads=1', f'--n_pairs={n_pairs}']):
            if launch(*cmd, log=log, threads=1):
                die(f"{cmd[0]} failed for {d}: see {log.name}")
    with open(result) as f:
        return arm, s, json.load(f)


def columns(r):
    """The table's analogy columns: top-1 (3CosAdd, inputs excluded) after training, and the mean rank of the
    answer among the vocabulary's words at init and after (top-1 alone is 0 for every small model here)."""
    return {**r, 'analogy_top1': r['analogies']['top1_excl'], 'analogy_rank': r['analogies']['rank_mean'],
            'analogy_rank_init': r['analogies_init'].get('rank_mean', float('nan'))}


def ab_table(results, seeds):
    rows = ['| arm | params (whole model) | ' + ' | '.join(METRICS) + ' |', '|' + ' --- |' * (len(METRICS) + 2)]
    for arm in ARMS:
        runs = [columns(results[(arm, s)]) for s in seeds]
        rows.append(f"| {arm} | {runs[0]['compression']['params']:,} | "
                    + ' | '.join(mean_std([r[m] for r in runs], 3) for m in METRICS) + ' |')
    return '\n'.join(rows)


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    setup_device(device, 'float32', threads)
    if not ab:
        res = evaluate(out_dir)
        print(json.dumps({k: v for k, v in res.items() if k != 'samples'}, indent=2))
        for ctx, ref, gen in res['samples']:
            print(f"  context: {ctx!r}\n  reference: {ref!r}\n  model: {gen!r}")
        sys.exit()
    seeds = [int(s) for s in str(ab_seeds).split(',')]
    os.makedirs(ab_dir, exist_ok=True)
    jobs = [(arm, s) for s in seeds for arm in ARMS]
    with ThreadPoolExecutor(workers) as pool:
        results = {(arm, s): r for arm, s, r in tqdm(pool.map(train_and_evaluate, jobs), total=len(jobs), desc='A/B runs')}
    table = ab_table(results, seeds)
    with open(ab_results + '.json', 'w') as f:
        json.dump({f'{arm} / seed {s}': r for (arm, s), r in results.items()}, f, indent=2)
    with open(ab_results + '.md', 'w') as f:
        f.write(f"TurnGPT A/B: {len(seeds)} seeds per arm (mean ± std), each at {ab_scale} of its recipe's iterations "
                f"(the same tokens per arm), {n_pairs} held-out pairs.\n\n{table}\n")
    print(table)
