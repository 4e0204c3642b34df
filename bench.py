"""
Benchmark a training config: train.py's ms/iter and tokens/s on it, sampling tokens/s with and without
the KV cache from the model it trained, and peak memory. Prints the numbers and writes bench/<name>.json.
$ python bench.py config/shakespeare_char_cpu.py                     # 100 iterations, then sampling
$ python bench.py config/shakespeare_char_cpu.py --pos=learned --norm=layer --mlp=gelu --bias=True
$ python bench.py config/shakespeare_char_cpu.py --bench_iters=0     # the config's full run: its val loss too
Arguments starting with --bench_ are bench.py's own; everything else goes to train.py as is.
The run stays in out-bench/<name>, so `python plot.py out-bench/*` draws the compared curves.
"""

import os
import sys
import json
import time
import resource
import subprocess

import torch

from common import configure, setup_device, load_checkpoint, build_model, synchronize

# -----------------------------------------------------------------------------
bench_iters = 100  # training iterations to time; 0 runs the config's own max_iters (and reports its val loss)
bench_tokens = 500  # tokens to sample, with and without the KV cache
bench_name = ''  # bench/<bench_name>.json; default: the config's name and the overrides
# -----------------------------------------------------------------------------
own = [a for a in sys.argv[1:] if a.startswith('--bench_')]
train_args = [a for a in sys.argv[1:] if not a.startswith('--bench_')]
configure(globals(), own)
name = bench_name or '_'.join([os.path.splitext(os.path.basename(a))[0] for a in train_args if not a.startswith('--')]
                              + [a[2:].replace('=', '-') for a in train_args if a.startswith('--')]
                              + ([f'iters-{bench_iters}'] if bench_iters else [])) or 'default'
out_dir = os.path.join('out-bench', name)

# 1) training: train.py itself, so we time exactly what users run
cmd = [sys.executable, 'train.py', *train_args, f'--out_dir={out_dir}', '--init_from=scratch', '--always_save_checkpoint=True']
if bench_iters:
    cmd += [f'--max_iters={bench_iters}', f'--eval_interval={bench_iters}', '--eval_iters=1', f'--log_interval={max(1, bench_iters // 5)}']
print(' '.join(cmd))
subprocess.run(cmd, check=True)
rows = [json.loads(line) for line in open(os.path.join(out_dir, 'log.jsonl'))]
steps = [r for r in rows if 'ms' in r][1:]  # the first interval holds the first eval and warmup
evals = [r for r in rows if 'val_loss' in r]
ms = sum(r['ms'] for r in steps) / len(steps)
cfg = json.load(open(os.path.join(out_dir, 'meta.json')))['config']
tokens_per_iter = cfg['gradient_accumulation_steps'] * cfg['batch_size'] * cfg['block_size']

# 2) sampling from the trained model, with and without the KV cache
*_, device, device_type, ptdtype, autocast = setup_device(cfg['device'], cfg['dtype'])
model = build_model(load_checkpoint(out_dir, device)).to(device).eval()
x = torch.zeros((1, 1), dtype=torch.long, device=device)


def sample_tps(use_cache):
    torch.manual_seed(0)
    with autocast:
        model.generate(x, 20, use_cache=use_cache)  # warmup
        synchronize(device_type)
        t0 = time.time()
        model.generate(x, bench_tokens, use_cache=use_cache)
        synchronize(device_type)
    return bench_tokens / (time.time() - t0)


cached, recomputed = sample_tps(True), sample_tps(False)
if device_type == 'cuda':
    peak_mb = torch.cuda.max_memory_allocated() / 2**20  # sampling only; train.py's own peak is in its log
else:  # ru_maxrss is KiB on Linux, bytes on macOS
    peak_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    peak_mb = peak_kb / (2**20 if sys.platform == 'darwin' else 2**10)
result = {
    'name': name, 'train_args': train_args, 'device': device, 'dtype': str(ptdtype), 'iters': evals[-1]['iter'],
    'train_ms_per_iter': round(ms, 2), 'train_tokens_per_s': round(tokens_per_iter / ms * 1000),
    'final_val_loss': round(evals[-1]['val_loss'], 4) if not bench_iters else None,
    'model_block_size': model.config.block_size, 'sample_tokens': bench_tokens,
    'sample_tokens_per_s_kv_cache': round(cached, 1), 'sample_tokens_per_s_recompute': round(recomputed, 1),
    'kv_cache_speedup': round(cached / recomputed, 2), 'peak_memory_mb': round(peak_mb),
}
os.makedirs('bench', exist_ok=True)
with open(os.path.join('bench', f'{name}.json'), 'w') as f:
    json.dump(result, f, indent=2)
print(json.dumps(result, indent=2))
print(f"wrote bench/{name}.json")
