"""The HDF5 research log: every series train.py writes, its survival of SIGKILL, resume, and life without h5py."""
import json
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np

from helpers import ENV, REPO, TINY, read_log, train


def series(path):
    with h5py.File(path, 'r', swmr=True) as f:
        return {name: (f[name]['iter'][:], f[name]['value'][:]) for name in json.loads(f.attrs['schema']) if name in f}


def test_a_run_logs_every_series_of_the_schema(workdir, char_data, tmp_path):
    train(workdir, tmp_path, '--max_iters=6', '--eval_interval=3', '--log_interval=2')
    s = series(tmp_path / 'log.h5')
    with h5py.File(tmp_path / 'log.h5') as f:  # closed by the run: opens without swmr=True
        assert set(json.loads(f.attrs['schema'])) == set(s)  # every documented series is there
        assert json.loads(f.attrs['config'])['max_iters'] == 6
    assert s['train/loss'][0].tolist() == [2, 4, 6] and s['eval/val_loss'][0].tolist() == [0, 3, 6]
    # the log.jsonl and the HDF5 log agree
    jsonl = {r['iter']: r['loss'] for r in read_log(tmp_path) if 'loss' in r}
    assert np.allclose(s['train/loss'][1], [jsonl[i] for i in (2, 4, 6)], rtol=1e-6)
    n_layer, n_head, B, T = 2, 2, 4, 16
    assert s['train/grad_norm_per_layer'][1].shape == (3, n_layer)
    assert s['probe/attn_entropy'][1].shape == (3, n_layer, n_head)
    assert s['probe/token_loss'][1].shape == (3, B, T) and np.isfinite(s['probe/token_loss'][1]).all()
    # entropy of a causal attention is between 0 and that of uniform attention over the whole block
    assert (s['probe/attn_entropy'][1] >= 0).all() and (s['probe/attn_entropy'][1] <= np.log(T)).all()
    # the per-layer norms make up the total, with the embeddings and final norm outside the blocks
    assert (np.sqrt((s['train/grad_norm_per_layer'][1] ** 2).sum(1)) <= s['train/grad_norm'][1] * (1 + 1e-5)).all()


def test_the_log_of_a_killed_run_opens_and_holds_every_printed_step(workdir, char_data, tmp_path):
    cmd = [sys.executable, str(REPO / 'train.py'), '--dataset=chars', f'--out_dir={tmp_path}', *TINY,
           '--max_iters=100000', '--eval_interval=7', '--log_interval=1']
    proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed = []
    for line in proc.stdout:
        if line.startswith('iter '):
            printed.append(int(line.split()[1].split('/')[0].rstrip(':')))
            if len(printed) == 40:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    s = series(tmp_path / 'log.h5')
    its, losses = s['train/loss']
    assert set(printed) <= set(its.tolist()) and np.isfinite(losses).all()
    assert its.tolist() == list(range(1, len(its) + 1))
    assert s['eval/val_loss'][0].tolist()[:5] == [0, 7, 14, 21, 28]  # every series reads whole
    # and the killed run resumes from its last checkpoint, the log cut back to it and appended to
    train(workdir, tmp_path, '--init_from=resume', f'--max_iters={max(printed) + 3}')
    its = series(tmp_path / 'log.h5')['train/loss'][0].tolist()
    assert its == list(range(1, max(printed) + 4))


def test_resume_cuts_the_log_back_to_the_checkpoint(workdir, char_run, tmp_path):
    # char_run logged to 20; pretend it was killed after logging 21-23 beyond its checkpoint at 20
    out = tmp_path / 'out'
    shutil.copytree(char_run, out)
    with h5py.File(out / 'log.h5', 'a', libver='latest') as f:
        for it in (21, 22, 23):
            g = f['train/loss']
            n = g['iter'].shape[0]
            g['iter'].resize(n + 1, axis=0)
            g['value'].resize(n + 1, axis=0)
            g['iter'][n], g['value'][n] = it, 99.0
    train(workdir, out, '--init_from=resume', '--max_iters=25', '--eval_interval=10', '--dropout=0.1')
    s = series(out / 'log.h5')
    assert s['train/loss'][0].tolist() == list(range(1, 26)) and 99.0 not in s['train/loss'][1]
    assert s['eval/val_loss'][0].tolist() == [0, 10, 20, 25]


def test_training_goes_on_without_h5py(workdir, char_data, tmp_path):
    code = ("import sys, runpy; sys.modules['h5py'] = None; sys.argv = ['train.py'] + sys.argv[1:]; "
            f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, '-c', code, '--dataset=chars', f'--out_dir={tmp_path}', *TINY, '--max_iters=2',
                           '--eval_interval=2'], cwd=workdir, env={**ENV, 'PYTHONPATH': str(REPO)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('h5py is not installed, so the HDF5 research log is off') == 1
    assert (tmp_path / 'ckpt.pt').exists() and not (tmp_path / 'log.h5').exists()


def test_resume_keeps_each_series_rows_up_to_the_first_torn_one(tmp_path):
    # a full disk can leave a row half written: its iter not rising, or iter and value of different lengths
    from h5log import H5Log
    log = H5Log(str(tmp_path / 'log.h5'), {}, {'train/loss': (), 'eval/val_loss': ()})
    for it in (1, 2, 3, 4):
        log.write(it, **{'train/loss': float(it), 'eval/val_loss': float(it)})
    for d, length in ((log.series['train/loss'][0], 5), (log.series['eval/val_loss'][0], 6)):
        d.resize(length, axis=0)  # train/loss: iter 0 after 4, no value; eval/val_loss: two iters without values
    log.series['eval/val_loss'][0][4:] = [5, 6]
    log.close()
    H5Log(str(tmp_path / 'log.h5'), {}, {'train/loss': (), 'eval/val_loss': ()}, resume_iter=10).close()
    s = series(tmp_path / 'log.h5')
    assert s['train/loss'][0].tolist() == [1, 2, 3, 4] and s['train/loss'][1].tolist() == [1, 2, 3, 4]
    assert s['eval/val_loss'][0].tolist() == [1, 2, 3, 4]
