"""Paths and small helpers the tests share: run a repo script (through a fork server), read a run's log."""
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / 'shared' / 'data' / 'tinyshakespeare.txt'
# one thread: tiny models are no faster on two, and OpenMP threads spin badly when the cores are busy
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}  # project scripts run as python -m projects.X.Y from any cwd
# a tiny GPT that trains in milliseconds an iteration on a CPU
TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1']
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']


FORK = os.environ.get('NANOLAB_TEST_FORK', '1') != '0'  # 0: every run a fresh interpreter (to rule the fork server out)
_server = None


def run(script, *args, cwd=REPO, stdin=None, launcher=(sys.executable,), timeout=300):
    """Run a repo script (or -m module) as `python script args` would, and return the CompletedProcess, output captured
    as text: forked from the fork server (tests/forkserver.py) when the launcher is plain python, else a subprocess."""
    argv = [*([str(REPO / script)] if script.endswith('.py') else ['-m', script]), *map(str, args)]
    if launcher != (sys.executable,) or not FORK:
        return subprocess.run([*launcher, *argv], cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True,
                              timeout=timeout)
    return forked(argv, cwd, stdin, timeout)


def forked(argv, cwd, stdin, timeout):
    """run() through the fork server: its stdio through files, which are read back as subprocess.run(text=True) reads
    a pipe (universal newlines: tqdm's carriage returns become line ends)."""
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, str(REPO / 'tests' / 'forkserver.py')], env=ENV,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    with tempfile.TemporaryDirectory() as d:
        files = {k: os.path.join(d, k) for k in ('stdin', 'stdout', 'stderr')}
        for k, path in files.items():
            Path(path).write_text((stdin or '') if k == 'stdin' else '')
        _server.stdin.write((json.dumps({'argv': argv, 'cwd': str(cwd), **files}) + '\n').encode())
        pid = server_reply(None)['pid']
        reply = server_reply(timeout)
        if reply is None:
            os.kill(pid, signal.SIGKILL)
            server_reply(None)
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
        out, err = (Path(files[k]).read_text() for k in ('stdout', 'stderr'))
    return subprocess.CompletedProcess([sys.executable, *argv], reply['rc'], out, err)


def server_reply(timeout):
    """The fork server's next JSON line, or None if none comes within timeout seconds (None: wait)."""
    line = b''
    while not line.endswith(b'\n'):
        if not select.select([_server.stdout], [], [], timeout)[0]:
            return None
        byte = _server.stdout.read(1)  # unbuffered: nothing read past the line, so select sees what is left
        if not byte:
            raise RuntimeError('the tests\' fork server died (tests/forkserver.py); NANOLAB_TEST_FORK=0 runs without it')
        line += byte
    return json.loads(line)


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
