"""
Every measured ChatBERT run (projects/chatbert/README.md, issue 23), in one command, on one CPU core:
$ python -m prepare.chitchat && python -m prepare.chatbert --tokenizer=data/chitchat
$ python -m projects.chatbert.experiment     # ~30 min training on one shared core, then projects.chatbert.eval (~30 min)
Phases (--phases, in order; train skips a run whose checkpoint exists, so a stopped experiment picks up):
- calibrate: each kind (config/chatbert_{gpt,ed,ra,imr}.py) trains calib_iters iterations, back to back, to measure
             its ms per iteration on this machine (train.py's logged 'ms': training alone, evals excluded).
- train:     3 seeds x 4 kinds -> experiments/chatbert23/<kind>-s<seed>, each for max_iters = seconds / (ms/iter), so
             that every kind trains the same wall time: equal footing on this machine, whatever a kind's iteration
             costs. Warmup is WARMUP_FRAC of the iterations and the lr decays to min_lr at max_iters, as the configs'
             15-minute schedules did; evals every 1/EVALS of the run, keep_best (the checkpoint by val loss).
- eval:      projects/chatbert/eval.py --plan=<out>: the results table (val for every choice, test read once).
The plan (calibration, iterations, FLOPs and supervised targets per run) goes to projects/chatbert/chatbert_runs.json.
"""
import json
import os
import sys

import numpy as np

from common import build_model, configure, die, launch, load_checkpoint, read_config_file, read_log

# -----------------------------------------------------------------------------
phases = 'calibrate,train,eval'
seeds = '1,2,3'
kinds = 'gpt,ed,ra,imr'
seconds = 90.0  # training wall time per run: 1/10 of the earlier 15 minutes, to afford 3 seeds on a shared core
calib_iters = 30
out = 'projects/chatbert/chatbert_runs.json'
prefix = 'experiments/chatbert23'
# -----------------------------------------------------------------------------
CPU = ['--device=cpu', '--compile=False', '--threads=1', '--hdf5_log=', '--dtype=float32']
WARMUP_FRAC = 0.045  # the configs' 200 of 4,500 iterations (RA: 100 of 1,800, 0.056)
EVALS = 4  # val-loss evals per run: keep_best picks among them
EVAL_ITERS = 8  # batches per split at each eval: evals come out of no run's training time, but out of ours


def config(kind):
    return f'config/chatbert_{kind}.py'


def train(out_dir, *args):
    """One train.py run, unless out_dir already holds its checkpoint (a rerun picks up where one stopped)."""
    if os.path.isfile(os.path.join(out_dir, 'ckpt.pt')):
        print(f"{out_dir}: done before, kept", flush=True)
        return
    print(f"{out_dir}: train.py {' '.join(args)}", flush=True)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    with open(out_dir + '.log', 'w') as log:
        if launch('train.py', *args, f'--out_dir={out_dir}', '--overwrite=True', *CPU, log=log, threads=1):
            die(f"{out_dir} failed: see {out_dir}.log")


def ms_per_iter(rows):
    """Training ms per iteration from a log's rows: the mean of its logged 'ms' (each the mean over log_interval
    iterations), the first left out (it holds the first iterations' one-off costs)."""
    ms = [r['ms'] for r in rows if 'ms' in r]
    if len(ms) < 2:
        raise ValueError(f"calibration needs at least 2 logged ms rows, got {len(ms)}")
    return float(np.mean(ms[1:]))


def train_seconds(rows):
    """Seconds of training alone (evals excluded) from a log's rows: each logged 'ms' times the iterations it covers."""
    rows = [r for r in rows if 'ms' in r]
    return sum(r['ms'] * (r['iter'] - prev) for r, prev in zip(rows, [0] + [r['iter'] for r in rows])) / 1000


def iterations(budget_s, ms):
    """The iterations that take budget_s seconds at ms per iteration."""
    return max(1, round(budget_s * 1000 / ms))


def schedule(max_iters):
    """The train.py flags of a run of max_iters iterations: warmup, decay to its end, evals, keep_best."""
    interval = max(1, max_iters // EVALS)
    return [f'--max_iters={max_iters}', f'--lr_decay_iters={max_iters}', f'--warmup_iters={max(1, round(WARMUP_FRAC * max_iters))}',
            f'--eval_interval={interval}', f'--eval_iters={EVAL_ITERS}', f'--log_interval={max(1, interval // 5)}', '--keep_best=True']


def accounting(kind, cfg, params, max_iters, response_tokens):
    """Training FLOPs (6 x params x tokens processed) and supervised targets (what carried loss) of a run.
    response_tokens: the mean non-padding response tokens of a training pair, its end token included.
    gpt: every token of a 128-token window is read and is a target. ed: the encoder reads 96 context tokens and the
    decoder 32 response positions (128 processed); targets are the response's tokens up to its end token. ra: each
    pair's 96 context and 32 response tokens are encoded (128); the targets are 2 per pair (its context picks its
    response among the batch's, and back). imr: [96 context; 32 response] (128) read; targets are the masked response
    positions, padding included, t ~ U(0.001, 1) of 32 in expectation (MDLM)."""
    rows = max_iters * cfg['batch_size']
    processed = rows * cfg['block_size']
    per_row = {'gpt': cfg['block_size'], 'ed': response_tokens, 'ra': 2,
               'imr': (1 + 1e-3) / 2 * (cfg['block_size'] - 96)}[kind]
    return {'rows': rows, 'tokens_processed': processed, 'flops': 6 * params * processed,
            'targets_per_row': per_row, 'supervised_targets': rows * per_row}


def mean_response_tokens(data_dir='data/chatbert'):
    """The mean non-padding tokens of a training response (its end token included)."""
    meta = json.load(open(os.path.join(data_dir, 'meta.json')))
    from tokenizer import Tokenizer
    pad = Tokenizer.load(os.path.join(data_dir, 'tokenizer.json')).special('<|pad|>')
    r = np.load(os.path.join(data_dir, 'train_response.npy'), mmap_mode='r')
    assert r.shape[1] == meta['response_len']
    return float((np.asarray(r) != pad).sum(1).mean())


def main():
    configure(globals(), sys.argv[1:])
    todo, ss, ks = phases.split(','), [int(s) for s in seeds.split(',')], kinds.split(',')
    plan = json.load(open(out)) if os.path.isfile(out) else {}
    if 'calibrate' in todo:
        calib = {}
        for k in ks:  # back to back, so every kind is timed on the machine as it is now
            run = f'{prefix}/calib-{k}'
            for name in ('ckpt.pt',):
                if os.path.isfile(os.path.join(run, name)):
                    os.remove(os.path.join(run, name))
            train(run, config(k), f'--max_iters={calib_iters}', f'--eval_interval={calib_iters}', '--eval_iters=1',
                  '--log_interval=5', '--warmup_iters=5', '--keep_best=False')
            calib[k] = {'ms_per_iter': ms_per_iter(read_log(os.path.join(run, 'log.jsonl'))), 'iters': calib_iters}
            print(f"{k}: {calib[k]['ms_per_iter']:.1f} ms/iter", flush=True)
        plan['calibration'] = calib
        plan['seconds'] = seconds
        plan['max_iters'] = {k: iterations(seconds, calib[k]['ms_per_iter']) for k in ks}
        with open(out, 'w') as f:
            json.dump(plan, f, indent=1)
    if 'train' in todo:
        if 'max_iters' not in plan:
            die("no calibration: run --phases=calibrate first")
        runs = plan.setdefault('runs', {})
        resp = mean_response_tokens()
        for s in ss:
            for k in ks:
                run, iters = f'{prefix}/{k}-s{s}', plan['max_iters'][k]
                train(run, config(k), *schedule(iters), f'--seed={s}')
                rows = read_log(os.path.join(run, 'log.jsonl'))
                evals = [r for r in rows if 'val_loss' in r]
                best = min(evals, key=lambda r: r['val_loss'])
                trained = [r for r in rows if 'ms' in r]
                params = build_model(load_checkpoint(run)).get_num_params()
                cfg = read_config_file(config(k))
                runs[f'{k}-s{s}'] = {'kind': k, 'seed': s, 'dir': run, 'max_iters': iters,
                                     'best_iter': best['iter'], 'best_val_loss': best['val_loss'],
                                     'last_val_loss': evals[-1]['val_loss'], 'wall_seconds': trained[-1]['t'],
                                     'train_seconds': train_seconds(trained),
                                     'params': params, **accounting(k, cfg, params, iters, resp)}
                with open(out, 'w') as f:
                    json.dump(plan, f, indent=1)
    if 'eval' in todo:
        if launch('projects.chatbert.eval', f'--plan={out}', '--threads=1', threads=1):
            die("projects.chatbert.eval failed")
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
