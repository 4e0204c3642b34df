"""Paths and small helpers the tests share: run a repo script as a subprocess, read a run's log."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / 'shared' / 'data' / 'tinyshakespeare.txt'
# one thread: tiny models are no faster on two, and OpenMP threads spin badly when the cores are busy
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}  # project scripts run as python -m projects.X.Y from any cwd
# a tiny GPT that trains in milliseconds an iteration on a CPU
TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1']
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']


def run(script, *args, cwd=REPO, stdin=None, launcher=(sys.executable,)):
    """Run a repo script (or -m module) and return the CompletedProcess, output captured as text."""
    cmd = [*launcher, *([str(REPO / script)] if script.endswith('.py') else ['-m', script]), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True, timeout=300)


def train(workdir, out_dir, *args, dataset='chars', config=(), launcher=(sys.executable,), check=True):
    """train.py on workdir/data/<dataset>, tiny by default; later args override earlier ones."""
    proc = run('train.py', *config, f'--dataset={dataset}', f'--out_dir={out_dir}', *TINY, *args,
               cwd=workdir, launcher=launcher)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def read_log(out_dir):
    with open(Path(out_dir) / 'log.jsonl') as f:
        return [json.loads(line) for line in f]


def train_losses(out_dir):
    """{iter: train loss} from the per-iteration rows of a run's log."""
    return {row['iter']: row['loss'] for row in read_log(out_dir) if 'loss' in row}


def sampled(cases, keep=2):
    """Parametrize cases for a class of bad input: the first `keep` run in the default suite, so every class is still
    covered there, and the rest, each a subprocess of a few seconds, only with --slow (tests/conftest.py)."""
    import pytest
    return [case if i < keep else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
            for i, case in enumerate(cases)]
