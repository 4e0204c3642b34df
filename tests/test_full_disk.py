"""Writes that fail, and memory that can't fit: a full disk (faked, and a real tmpfs where one can be mounted) stops
a run in one line with its last checkpoint whole and no .tmp, and the run resumes exactly; the HDF5 log turns off
and training goes on; a torn log.jsonl line is left out with a note; a config that can't fit in memory, a resumed
best.pt and an out_dir that can't be a folder are refused in one line before anything is written."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import pytest
import torch

from common import available_memory
from helpers import ENV, REPO, TINY, TORCHRUN, read_log, run, train, train_losses, sampled
from test_bad_input import snapshot, the_one_line

# char_run's arguments: 20 iterations, checkpoints at 10 and 20
CHAR_RUN = ['--max_iters=20', '--eval_interval=10', '--dropout=0.1']

# train.py with a disk that fills up. FULL_NAME: the file (its name in out_dir) whose write fails once FULL_AFTER
# such files have been opened: it takes half of the first write, then raises ENOSPC, as a full disk does.
# H5_AFTER: h5py's flushes fail after that many, with the RuntimeError h5py raises on a full disk.
FAULTS = '''
import builtins, errno, io, os, runpy, sys
import h5py

class Full(io.FileIO):
    def write(self, b):
        super().write(bytes(b)[:len(b) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

opened, real_open = [0], builtins.open
def fake_open(file, mode='r', *args, **kwargs):
    if os.path.basename(str(file)) == os.environ.get('FULL_NAME') and ('w' in mode or 'a' in mode):
        opened[0] += 1
        if opened[0] > int(os.environ['FULL_AFTER']):
            return Full(file, mode.replace('b', ''))
    return real_open(file, mode, *args, **kwargs)
builtins.open = fake_open

flushes, real_flush = [0], h5py.File.flush
def fake_flush(self):
    flushes[0] += 1
    if flushes[0] > int(os.environ.get('H5_AFTER', 10**9)):
        raise RuntimeError("Unable to synchronously flush file (file write failed: time = now, filename = 'log.h5', "
                           "file descriptor = 3, errno = 28, error message = 'No space left on device')")
    return real_flush(self)
h5py.File.flush = fake_flush

sys.argv = ['train.py'] + sys.argv[1:]
sys.path.insert(0, os.path.dirname(TRAIN))
runpy.run_path(TRAIN, run_name='__main__')
'''.replace('TRAIN', repr(str(REPO / 'train.py')))


def train_with_faults(workdir, out, *args, launcher=(sys.executable, '-c', FAULTS), **faults):
    return subprocess.run([*launcher, '--dataset=chars', f'--out_dir={out}', *TINY, *CHAR_RUN, *args], cwd=workdir,
                          env={**ENV, **{k: str(v) for k, v in faults.items()}}, capture_output=True, text=True, timeout=300)


def tmp_files(out):
    return sorted(p.name for p in out.rglob('*.tmp'))


def resumes_exactly(workdir, out, char_run):
    """The stopped run, resumed, logs the same losses as char_run, which was never stopped."""
    train(workdir, out, '--init_from=resume', *CHAR_RUN)
    assert train_losses(out) == train_losses(char_run)
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == 20


# (the file whose write fails, how many of its writes succeed first, extra args, the one line, the iteration of the
# checkpoint left, how many saves said "saved checkpoint")
WRITES = [
    ('ckpt.pt.tmp', 1, [], "could not write {out}/ckpt.pt (No space left on device); {out}/ckpt.pt of iter 10 is whole: "
     "free some space, then continue with --init_from=resume", 10, 1),
    ('ckpt.pt.tmp', 0, [], "could not write {out}/ckpt.pt (No space left on device); no checkpoint is saved yet: free "
     "some space, then run again", None, 0),
    ('meta.json.tmp', 0, [], "could not write {out}/meta.json (No space left on device); {out}/ckpt.pt, which it "
     "describes, is whole: free some space, then continue with --init_from=resume, which rewrites meta.json", 10, 0),
    ('best.pt.tmp', 0, ['--keep_best=True'], "could not write {out}/best.pt (No space left on device); {out}/ckpt.pt of "
     "iter 10 is whole", 10, 0),
    # appends: the eval at 0, iterations 1-10, the eval at 10 (then the checkpoint), and iteration 11 fails
    ('log.jsonl', 12, [], "could not append to {out}/log.jsonl (No space left on device); the run stops at iter 11; "
     "{out}/ckpt.pt of iter 10 is whole", 10, 1),
]


@pytest.mark.parametrize('name, after, args, message, saved, said', sampled(WRITES), ids=[f'{w[0]}-after-{w[1]}' for w in WRITES])
def test_a_failed_write_stops_in_one_line_and_the_run_resumes_exactly(workdir, char_run, tmp_path, name, after, args,
                                                                     message, saved, said):
    out = tmp_path / 'out'
    proc = train_with_faults(workdir, out, *args, FULL_NAME=name, FULL_AFTER=after)
    assert the_one_line(proc).startswith(message.replace('{out}', str(out)))
    assert not tmp_files(out)  # the partial .tmp is gone
    assert proc.stdout.count('saved checkpoint') == said  # said after a save, not before
    assert all(json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines())  # no torn line
    if saved is None:
        assert not (out / 'ckpt.pt').exists()
        return
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == saved  # the last checkpoint, whole
    resumes_exactly(workdir, out, char_run)
    assert json.loads((out / 'meta.json').read_text())['iter_num'] == 20


@pytest.mark.parametrize('after, note', [(0, 'note: the HDF5 log is off for this run: {out}/log.h5 can\'t be written '
                                              '(No space left on device)'),
                                         (6, 'note: the HDF5 log {out}/log.h5 stopped at iter 5 (No space left on device); '
                                             'training goes on without it')], ids=['at-open', 'mid-run'])
def test_a_failed_hdf5_write_turns_the_log_off_and_training_goes_on(workdir, char_run, tmp_path, after, note):
    out = tmp_path / 'out'
    proc = train_with_faults(workdir, out, H5_AFTER=after)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-2000:]
    notes = [line for line in proc.stdout.splitlines() if 'HDF5' in line]
    assert len(notes) == 1 and notes[0].startswith(note.replace('{out}', str(out)))
    assert train_losses(out) == train_losses(char_run)  # the same training, to the end
    assert not tmp_files(out)
    if after:  # the rows flushed before the failure are kept, and the file opens (the failed row's flush was faked:
        # HDF5, closing the abandoned file as the process exits, may still write it)
        with h5py.File(out / 'log.h5', 'r', swmr=True) as f:
            assert f['train/loss/iter'][:].tolist() in ([1, 2, 3, 4], [1, 2, 3, 4, 5])


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) mounts a tmpfs of that size (a disk that really fills up) and returns it; skips where it can't."""
    mounted = []

    def mount(size, *options):
        where = tmp_path / f'disk{len(mounted)}'
        where.mkdir()
        proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', ','.join([f'size={size}', *options]), 'tmpfs', str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"can't mount a tmpfs here: {proc.stderr.strip() or 'mount failed'} (needs root)")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(['umount', str(where)], capture_output=True)


REAL = ['--max_iters=150', '--eval_interval=50', '--dropout=0.0']


@pytest.mark.parametrize('size, saved', [('700k', 50), ('100k', None)], ids=['checkpoint-fills-it', 'hdf5-fills-it'])
def test_a_real_full_disk(workdir, char_data, tmpfs, tmp_path, size, saved):
    disk = tmpfs(size)
    out = disk / 'out'
    proc = train(workdir, out, *REAL, check=False)
    line = the_one_line(proc)  # not a segfault, not a traceback
    assert proc.returncode == 1 and line.startswith(f'could not write {out}/ckpt.pt (No space left on device)')
    assert not tmp_files(out)
    if saved is None:  # the HDF5 log filled it first: turned off, with a note
        assert 'no checkpoint is saved yet' in line and 'note: the HDF5 log' in proc.stdout
        return
    assert f'ckpt.pt of iter {saved} is whole' in line
    subprocess.run(['mount', '-o', 'remount,size=20m', str(disk)], check=True)  # space freed
    train(workdir, out, '--init_from=resume', *REAL)
    train(workdir, tmp_path / 'ref', *REAL)
    assert train_losses(out) == train_losses(tmp_path / 'ref')
    with h5py.File(out / 'log.h5', 'r', swmr=True) as f:  # the HDF5 log is cut back to the checkpoint and goes on
        assert f['train/loss/iter'][:].tolist() == list(range(1, 151))


def test_a_checkpoint_that_fails_under_ddp_stops_every_rank_with_one_line(workdir, char_data, tmp_path):
    script = tmp_path / 'train_full.py'
    script.write_text(FAULTS)
    proc = train_with_faults(workdir, tmp_path / 'out', launcher=(*TORCHRUN, str(script)),
                             FULL_NAME='ckpt.pt.tmp', FULL_AFTER=1)
    assert proc.returncode != 0
    assert proc.stderr.count('could not write') == 1 and '[rank1]' not in proc.stderr, proc.stderr[-3000:]
    assert torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['iter_num'] == 10


# torn last lines, as a kill or a full disk leaves them
TORN = [b'{"iter": 21, "lo', b'{"iter": 21, "text": "caf\xc3']


@pytest.mark.parametrize('torn', TORN, ids=['json', 'utf-8'])
def test_a_torn_last_log_line_is_left_out_with_a_note(workdir, char_run, tmp_path, torn):
    out = tmp_path / 'out'
    shutil.copytree(char_run, out)
    with open(out / 'log.jsonl', 'ab') as f:
        f.write(torn)
    proc = run('plot.py', out)
    assert proc.returncode == 0 and not proc.stderr and (out / 'loss.png').is_file(), proc.stderr[-2000:]
    assert proc.stdout.count(f'note: {out}/log.jsonl ends in a torn line') == 1
    proc = train(workdir, out, '--init_from=resume', '--max_iters=22')
    assert proc.stdout.count(f'note: {out}/log.jsonl ends in a torn line') == 1
    assert [r['iter'] for r in read_log(out) if 'loss' in r] == list(range(1, 23))


# a line in the middle that isn't a JSON object is no torn line: it is named, and nothing is changed
BAD_LINES = [('garbage', b'not json at all\n'), ('a-list', b'[1, 2]\n')]


@pytest.mark.parametrize('script', ['train.py', 'plot.py'])
@pytest.mark.parametrize('line', [b for _, b in BAD_LINES], ids=[i for i, _ in BAD_LINES])
def test_a_log_line_that_is_not_an_object_says_one_line(workdir, char_run, tmp_path, script, line):
    out = tmp_path / 'out'
    shutil.copytree(char_run, out)
    rows = (out / 'log.jsonl').read_bytes().splitlines(keepends=True)
    (out / 'log.jsonl').write_bytes(b''.join(rows[:3] + [line] + rows[3:]))
    before = snapshot(out)
    if script == 'plot.py':
        proc = run('plot.py', out)
    else:
        proc = train(workdir, out, '--init_from=resume', '--max_iters=30', check=False)
    assert the_one_line(proc).startswith(f'{out}/log.jsonl:4 is not a JSON object')
    assert snapshot(out) == before


@pytest.fixture
def best_pt(char_run, tmp_path):
    """A run with a best.pt: the weights and config of its checkpoint, without the optimizer, as keep_best writes it."""
    out = tmp_path / 'run'
    shutil.copytree(char_run, out)
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k not in ('optimizer', 'scaler', 'rng')}, out / 'best.pt')
    return out


@pytest.mark.parametrize('where', ['the-file', 'a-folder'])
def test_resuming_a_best_pt_says_one_line(workdir, best_pt, tmp_path, where):
    out = best_pt / 'best.pt'
    if where == 'a-folder':  # best.pt copied as a run's ckpt.pt
        out = tmp_path / 'copy'
        out.mkdir()
        shutil.copy(best_pt / 'best.pt', out / 'ckpt.pt')
    before = snapshot(tmp_path)
    line = the_one_line(train(workdir, out, '--init_from=resume', '--max_iters=30', check=False))
    want = 'is a file, not a folder' if where == 'the-file' else 'has no optimizer state, so a run can\'t resume from it'
    assert want in line and '--init_from=' in line
    assert snapshot(tmp_path) == before


def test_a_best_pt_fine_tunes(workdir, best_pt, tmp_path):  # what the one line above says to do
    train(workdir, tmp_path / 'child', f'--init_from={best_pt / "best.pt"}', '--max_iters=2')
    assert torch.load(tmp_path / 'child' / 'ckpt.pt', weights_only=True)['parent'] == str(best_pt / 'best.pt')


@pytest.fixture(scope='module')
def long_data(workdir, text):
    """data/long: a character dataset long enough for block_size=100000 (val has 111k characters)."""
    src = workdir / 'long.txt'
    src.write_text(text * (1_110_000 // len(text) + 1), encoding='utf-8')
    proc = run('prepare.text', src, '--tokenizer=char', f'--out={workdir / "data" / "long"}')
    assert proc.returncode == 0, proc.stderr
    return workdir / 'data' / 'long'


# (id, args, the start of the one line, the bytes it says at least)
HUGE = [
    ('block_size-100000', ['--block_size=100000'], "the HDF5 log's probe (the attention of 4 rows x 100,000 tokens, each "
     "layer) would take at least 640.0 GB", 640e9),
    ('batch_size-10M', ['--batch_size=10000000'], 'training gpt (', 81.9e9),
    ('n_embd-65536', ['--n_embd=65536'], 'training gpt (103,', 1.6e12),
]


@pytest.mark.parametrize('args, message, need', sampled([h[1:] for h in HUGE]), ids=[h[0] for h in HUGE])
def test_a_config_that_cannot_fit_in_memory_says_one_line(workdir, long_data, tmp_path, args, message, need):
    if (available_memory('cpu') or 0) > need:
        pytest.skip('this machine has the memory')
    proc = train(workdir, tmp_path / 'out', '--max_iters=2', *args, dataset='long', check=False)
    line = the_one_line(proc)
    assert line.startswith(message) and 'and cpu has' in line and 'available; lower ' in line
    assert not (tmp_path / 'out').exists()


def test_a_huge_accumulation_is_not_refused(workdir, char_data, tmp_path):  # micro-steps run one after another
    train(workdir, tmp_path / 'out', '--gradient_accumulation_steps=100000', '--max_iters=0')


OUT_DIRS = [
    ('empty', lambda tmp: '', '--out_dir is empty'),
    ('a-name-too-long', lambda tmp: tmp / ('x' * 300), "--out_dir={tmp}/" + 'x' * 300 + " can't be used (File name too long)"),
    ('a-file', lambda tmp: (tmp / 'f').write_text('x') and tmp / 'f', '--out_dir={tmp}/f is a file, not a folder'),
    ('through-a-file', lambda tmp: (tmp / 'f').write_text('x') and tmp / 'f' / 'run',
     "--out_dir={tmp}/f/run can't be made: {tmp}/f is a file"),
    ('a-folder-named-ckpt.pt', lambda tmp: (tmp / 'run' / 'ckpt.pt').mkdir(parents=True) or tmp / 'run',
     '{tmp}/run/ckpt.pt is a folder, where the run writes a file'),
]


@pytest.mark.parametrize('make, message', sampled([o[1:] for o in OUT_DIRS]), ids=[o[0] for o in OUT_DIRS])
def test_an_out_dir_that_cannot_be_a_folder_says_one_line(workdir, char_data, tmp_path, make, message):
    out = make(tmp_path)
    before = snapshot(tmp_path)
    line = the_one_line(train(workdir, out, '--max_iters=2', check=False))
    assert line.startswith(message.replace('{tmp}', str(tmp_path)))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('name', ['log.h5', 'ckpt.pt'])
def test_a_pipe_where_the_run_writes_a_file_says_one_line(workdir, char_data, tmp_path, name):
    # a pipe (or a device: /dev/full) is not replaced by the run's file, nor opened (a pipe would block)
    (tmp_path / 'run').mkdir()
    os.mkfifo(tmp_path / 'run' / name)
    line = the_one_line(train(workdir, tmp_path / 'run', '--max_iters=2', check=False))
    assert line == f'{tmp_path}/run/{name} is a device or pipe, where the run writes a file; move it away'


def test_a_truncated_hdf5_log_is_left_and_resume_goes_on_without_it(workdir, char_run, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(char_run, out)
    with open(out / 'log.h5', 'r+b') as f:  # not SWMR's minutes of retries: a plain open fails at once
        f.truncate(20_000)
    proc = train(workdir, out, '--init_from=resume', '--max_iters=22')
    assert f"note: the HDF5 log is off for this run: {out}/log.h5 can't be read (OSError: " in proc.stdout
    assert (out / 'log.h5').stat().st_size == 20_000  # left as it was
    assert [r['iter'] for r in read_log(out) if 'loss' in r] == list(range(1, 23))


def test_a_read_only_out_dir_says_one_line(workdir, char_data, tmpfs):
    disk = tmpfs('64k', 'ro')
    line = the_one_line(train(workdir, disk / 'run', '--max_iters=2', check=False))
    assert line.startswith(f"--out_dir={disk}/run can't be written: {disk} is read-only")


@pytest.fixture(scope='module')
def approx_run(approx_workdir):
    """A student of config/approximator.py, 2 iterations: enough to embed with."""
    out = approx_workdir / 'out-approx-2'
    train(approx_workdir, out, '--max_iters=2', '--eval_interval=2', '--warmup_iters=0', '--lr_decay_iters=2',
          '--batch_size=16', dataset='approximator', config=[REPO / 'config' / 'approximator.py'])
    return out


@pytest.mark.parametrize('output, wrote', [('new/folder/v.npy', 'new/folder/v.npy'), ('vectors', 'vectors.npy'),
                                           ('', 'lines.npy')], ids=['missing-folder', 'no-suffix', 'default'])
def test_embed_writes_its_output_where_it_says(approx_run, tmp_path, output, wrote):
    (tmp_path / 'lines.txt').write_text('hello there\nhow are you\n', encoding='utf-8')
    proc = run('projects.approximator.embed', 'file', f'--out_dir={approx_run}', '--file=lines.txt', f'--output={output}', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(f'wrote {wrote}: 2 unit vectors')
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*.npy')) == [wrote]


def test_embed_output_that_cannot_be_written_says_one_line_before_the_work(approx_run, tmp_path):
    (tmp_path / 'lines.txt').write_text('hello there\n', encoding='utf-8')
    proc = run('projects.approximator.embed', 'file', f'--out_dir={approx_run}', '--file=lines.txt', '--output=lines.txt/v.npy', cwd=tmp_path)
    assert the_one_line(proc).startswith(f"--output=lines.txt/v.npy can't be made: {tmp_path}/lines.txt is a file")


def test_plot_makes_a_missing_folder_and_refuses_what_it_cannot_write(char_run, tmp_path):
    proc = run('plot.py', char_run, f'--out={tmp_path}/new/loss.png')
    assert proc.returncode == 0 and (tmp_path / 'new' / 'loss.png').is_file(), proc.stderr[-2000:]
    assert "matplotlib can't write .xyz files" in the_one_line(run('plot.py', char_run, f'--out={tmp_path}/loss.xyz'))
    assert 'is a folder, not a file' in the_one_line(run('plot.py', char_run, f'--out={tmp_path}'))
    os.mkfifo(tmp_path / 'pipe.png')
    assert 'is a device or pipe, not a file' in the_one_line(run('plot.py', char_run, f'--out={tmp_path}/pipe.png'))
