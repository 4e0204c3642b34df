"""
Benchmark a training config: train.py's ms/iter and tokens/s on it, sampling tokens/s with and without the KV
cache from the model it trained, peak memory, and, with a target, the time it takes to reach a val loss.
Prints the numbers and writes bench/<name>.json. Arguments starting with --bench_ are bench.py's own; the
rest go to train.py as they are (python train.py --help lists those).
$ python bench.py config/shakespeare_char_cpu.py                     # 100 timed iterations, then sampling
$ python bench.py config/shakespeare_char_cpu.py --bench_iters=0     # the config's whole run: its val loss too
Time to quality against another architecture, alternating the two runs (A B A B ...) on one machine:
$ python bench.py config/shakespeare_char_cpu.py --bench_iters=0 --bench_target=1.886 --bench_pairs=3 \\
    --bench_against="--pos=learned --norm=layer --mlp=gelu --bias=True" --eval_interval=50 --eval_iters=20
The runs stay in out-bench/<name>[-a1, -b1, ...], so `python plot.py out-bench/*` draws their curves.
"""

import os
import sys
import json
import time
import shlex
import resource
import statistics

import torch

from common import command, configure, die, launch, setup_device, load_checkpoint, build_model, synchronize, read_log

# -----------------------------------------------------------------------------
bench_iters: '[0, inf)' = 100  # training iterations to time (quick, few evals); 0: the config's own max_iters and evals
bench_tokens: '[1, inf)' = 500  # tokens to sample, with and without the KV cache
bench_name = ''  # bench/<bench_name>.json; default: the config's name and the overrides
bench_target = 0.0  # > 0: also measure the wall seconds until the val loss first reaches this
bench_against = ''  # train.py arguments of a second arm (B) to compare with, e.g. "--pos=learned --mlp=gelu"
bench_pairs: '[1, inf)' = 1  # runs of each arm, alternated A B A B: single timings on a busy machine mislead
# -----------------------------------------------------------------------------
configure(globals(), [a for a in sys.argv[1:] if a.startswith('--bench_') or a in ('-h', '--help')])
train_args = [a for a in sys.argv[1:] if not a.startswith('--bench_')]
name = bench_name or '_'.join([os.path.splitext(os.path.basename(a))[0] for a in train_args if not a.startswith('--')]
                              + [a[2:].replace('=', '-') for a in train_args if a.startswith('--')]
                              + ([f'iters-{bench_iters}'] if bench_iters else [])) or 'default'


def seconds_to(target, evals):
    """Wall seconds until the val loss first reaches target, interpolated between the two evals around it."""
    if evals[0]['val_loss'] <= target:
        return evals[0]['t']
    for prev, row in zip(evals, evals[1:]):
        if row['val_loss'] <= target:
            frac = (prev['val_loss'] - target) / (prev['val_loss'] - row['val_loss'])
            return prev['t'] + frac * (row['t'] - prev['t'])
    return None  # never reached


def train(out_dir, extra):
    """Run train.py itself (so we time exactly what users run) and read what its log says."""
    args = [*train_args, *extra, f'--out_dir={out_dir}', '--init_from=scratch', '--overwrite=True', '--always_save_checkpoint=True']
    if bench_iters:
        args += [f'--max_iters={bench_iters}', f'--eval_interval={bench_iters}', '--eval_iters=1',
                 f'--log_interval={max(1, bench_iters // 5)}']
    print(' '.join(command('train.py', *args)), flush=True)
    if launch('train.py', *args):
        die("train.py failed (its message is above); bench.py passes it every argument but --bench_*")
    rows = read_log(os.path.join(out_dir, 'log.jsonl'))
    steps = [r for r in rows if 'ms' in r][1:]  # the first interval holds the first eval and warmup
    evals = [r for r in rows if 'val_loss' in r]
    return {'out_dir': out_dir, 'iters': evals[-1]['iter'], 'train_ms_per_iter': round(statistics.mean(r['ms'] for r in steps), 2),
            'final_val_loss': round(evals[-1]['val_loss'], 4), 'wall_s': round(evals[-1]['t'], 1),
            **({'seconds_to_target': seconds_to(bench_target, evals)} if bench_target else {})}


def sample_speed(out_dir):
    """Sampling tokens/s from a run's model, with and without the KV cache, and the peak memory."""
    ckpt = load_checkpoint(out_dir)
    *_, device, device_type, ptdtype, autocast = setup_device(ckpt['config']['device'], ckpt['config']['dtype'])
    model = build_model(ckpt).to(device).eval()
    x = torch.zeros((1, 1), dtype=torch.long, device=device)

    def tokens_per_s(use_cache):
        torch.manual_seed(0)
        with autocast:
            model.generate(x, 20, use_cache=use_cache)  # warmup
            synchronize(device_type)
            t0 = time.time()
            model.generate(x, bench_tokens, use_cache=use_cache)
            synchronize(device_type)
        return bench_tokens / (time.time() - t0)

    cached, recomputed = tokens_per_s(True), tokens_per_s(False)
    if device_type == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2**20  # sampling only; train.py's own peak is in its log
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        peak_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        peak_mb = peak_kb / (2**20 if sys.platform == 'darwin' else 2**10)
    tokens_per_iter = ckpt['config']['gradient_accumulation_steps'] * ckpt['config']['batch_size'] * ckpt['config']['block_size']
    return {'device': device, 'dtype': str(ptdtype), 'tokens_per_iter': tokens_per_iter, 'model_block_size': model.config.block_size,
            'sample_tokens': bench_tokens, 'sample_tokens_per_s_kv_cache': round(cached, 1),
            'sample_tokens_per_s_recompute': round(recomputed, 1), 'kv_cache_speedup': round(cached / recomputed, 2),
            'peak_memory_mb': round(peak_mb)}


def ratio_summary(a_runs, b_runs, key):
    """Per-pair ratios A/B of a measurement: their median and range (None where a run never got there)."""
    ratios = [a[key] / b[key] for a, b in zip(a_runs, b_runs) if a.get(key) and b.get(key)]
    if not ratios:
        return None
    return {'median': round(statistics.median(ratios), 3), 'min': round(min(ratios), 3), 'max': round(max(ratios), 3), 'pairs': len(ratios)}


os.makedirs('bench', exist_ok=True)
if not bench_against:
    run = train(os.path.join('out-bench', name), [])
    result = {'name': name, 'train_args': train_args, **run, **sample_speed(run['out_dir'])}
    result['train_tokens_per_s'] = round(result['tokens_per_iter'] / result['train_ms_per_iter'] * 1000)
else:
    arms = {'a': [], 'b': []}
    for i in range(1, bench_pairs + 1):
        for arm, extra in (('a', []), ('b', shlex.split(bench_against))):
            arms[arm].append(train(os.path.join('out-bench', f'{name}-{arm}{i}'), extra))
    result = {'name': name, 'train_args': train_args, 'against': bench_against, 'target': bench_target or None,
              'a': arms['a'], 'b': arms['b'],
              'ratio_ms_per_iter': ratio_summary(arms['a'], arms['b'], 'train_ms_per_iter'),
              'ratio_seconds_to_target': ratio_summary(arms['a'], arms['b'], 'seconds_to_target') if bench_target else None,
              'ratio_wall_s': ratio_summary(arms['a'], arms['b'], 'wall_s')}
with open(os.path.join('bench', f'{name}.json'), 'w') as f:
    json.dump(result, f, indent=2)
print(json.dumps(result, indent=2))
print(f"wrote bench/{name}.json")
