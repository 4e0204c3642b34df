"""train.py end to end on tiny runs: the log, resuming, DDP, the curriculum, fine-tuning."""
import json
import shutil

import numpy as np
import pytest
import torch

from common import load_checkpoint
from helpers import REPO, TORCHRUN, read_log, run, train, train_losses


def test_log_has_a_row_per_iteration_and_per_eval(char_run):
    rows = read_log(char_run)
    assert [r['iter'] for r in rows if 'loss' in r] == list(range(1, 21))
    assert [r['iter'] for r in rows if 'val_loss' in r] == [0, 10, 20]
    assert all(np.isfinite(r['loss']) and r['lr'] > 0 for r in rows if 'loss' in r)


def test_resume_continues_exactly(workdir, char_run, tmp_path):
    # char_run went 0 -> 20 in one go; this run stops at 10 and resumes. Dropout makes the RNG state matter.
    args = ['--eval_interval=10', '--dropout=0.1']
    train(workdir, tmp_path, *args, '--max_iters=10')
    train(workdir, tmp_path, *args, '--max_iters=20', '--init_from=resume')
    resumed, straight = train_losses(tmp_path), train_losses(char_run)
    assert sorted(resumed) == list(range(1, 21))
    assert np.allclose([resumed[i] for i in range(11, 21)], [straight[i] for i in range(11, 21)], rtol=1e-5, atol=0)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_ddp_matches_one_process(workdir, char_data, tmp_path):
    args = ['--max_iters=8', '--eval_interval=100', '--eval_iters=1', '--gradient_accumulation_steps=2']
    train(workdir, tmp_path / 'one', *args)
    train(workdir, tmp_path / 'ddp', *args, launcher=TORCHRUN)
    one, ddp = train_losses(tmp_path / 'one'), train_losses(tmp_path / 'ddp')
    assert [r['iter'] for r in read_log(tmp_path / 'ddp') if 'loss' in r] == list(range(1, 9))  # rank 0 logs alone
    assert sorted(one) == list(range(1, 9))
    assert np.allclose([ddp[i] for i in one], list(one.values()), rtol=1e-4, atol=0)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_ddp_splits_the_rows_when_micro_steps_are_fewer_than_processes(workdir, char_data, tmp_path):
    # accumulation 1 on 2 processes: each takes half of every batch; losses and evals equal one process's.
    # eval_iters=3 is odd: the 3 eval batches are dealt out unevenly, and must still equal one process's 3
    args = ['--max_iters=6', '--eval_interval=3', '--eval_iters=3', '--gradient_accumulation_steps=1']
    train(workdir, tmp_path / 'one', *args)
    train(workdir, tmp_path / 'ddp', *args, launcher=TORCHRUN)
    one, ddp = read_log(tmp_path / 'one'), read_log(tmp_path / 'ddp')
    assert [sorted(r) for r in one] == [sorted(r) for r in ddp]
    for a, b in zip(one, ddp):
        for key in ('loss', 'train_loss', 'val_loss'):
            if key in a:
                assert np.isclose(a[key], b[key], rtol=1e-4, atol=0), (key, a, b)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_ddp_evaluates_what_one_process_evaluates(workdir, char_data, tmp_path):
    # the eval set is the one process's eval_iters batches on any number of processes: equal already at step 0
    args = ['--max_iters=0', '--eval_iters=5', '--gradient_accumulation_steps=2']
    train(workdir, tmp_path / 'one', *args)
    train(workdir, tmp_path / 'ddp', *args, launcher=TORCHRUN)
    (one,), (ddp,) = read_log(tmp_path / 'one'), read_log(tmp_path / 'ddp')
    assert np.isclose(one['val_loss'], ddp['val_loss'], rtol=1e-6) and np.isclose(one['train_loss'], ddp['train_loss'], rtol=1e-6)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_a_global_batch_that_does_not_split_says_one_line_once(workdir, char_data, tmp_path):
    proc = train(workdir, tmp_path, '--max_iters=1', '--batch_size=3', '--gradient_accumulation_steps=1',
                 launcher=TORCHRUN, check=False)
    assert proc.returncode != 0
    message = "the global batch of gradient_accumulation_steps=1 x batch_size=3 rows can't be split evenly over 2 processes"
    assert proc.stderr.count(message) == 1
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_curriculum_grows_the_block(workdir, char_data, tmp_path):
    proc = train(workdir, tmp_path, '--max_iters=10', '--eval_interval=10',
                 "--phases={5: {'block_size': 32, 'batch_size': 2}}")
    assert "iter 5: phase 1 of 1 (its start, iter 5): {'block_size': 32, 'batch_size': 2}" in proc.stdout
    assert load_checkpoint(str(tmp_path))['model_args']['block_size'] == 32  # the largest block the run reaches


@pytest.mark.parametrize('phases, message', [
    ("{5: {'blok_size': 32}}", "unknown config key 'blok_size' (from phases[5])"),
    ("{5: {'block_size': '32'}}", "config key 'block_size' expects int, got str"),
], ids=['unknown-key', 'wrong-type'])
def test_bad_curriculum_exits_before_training(workdir, char_data, tmp_path, phases, message):
    proc = train(workdir, tmp_path / 'out', '--max_iters=10', f'--phases={phases}', check=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('model_args, message', [
    ("{'pooling': 'mean'}", "model_args sets 'pooling', which is not a field of gpt's own (it has none)"),
    ("{'n_layer': 3}", "model_args sets 'n_layer', which is not a field of gpt's own (it has none); set --n_layer itself"),
], ids=['not-the-kinds', 'a-key-of-its-own'])
def test_bad_model_args_exit_in_one_line_before_writing(workdir, char_data, tmp_path, model_args, message):
    proc = train(workdir, tmp_path / 'out', '--max_iters=2', f'--model_args={model_args}', check=False)
    assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_finetune_starts_from_the_parent(workdir, char_run, tmp_path):
    train(workdir, tmp_path, f'--init_from={char_run}', '--max_iters=5', '--eval_interval=5')
    ckpt = load_checkpoint(str(tmp_path))
    assert ckpt['parent'] == str(char_run) and ckpt['iter_num'] == 5
    # the first eval sees the parent's weights on the same eval batches: the parent's last val loss
    assert np.isclose(read_log(tmp_path)[0]['val_loss'], read_log(char_run)[-1]['val_loss'], rtol=1e-5)


def test_finetune_on_other_tokenizer_exits(workdir, char_run, chat_data, tmp_path):
    proc = train(workdir, tmp_path, f'--init_from={char_run}', '--max_iters=1', dataset='chat', check=False)
    assert proc.returncode != 0
    assert "ckpt.pt was trained with another tokenizer than data/chat's" in proc.stderr


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_resume_with_a_larger_block_exits_clearly(workdir, char_run, tmp_path):
    out = copy_run(char_run, tmp_path / 'out')
    proc = train(workdir, out, '--init_from=resume', '--max_iters=22', '--block_size=32', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'block_size' in proc.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_resume_on_more_processes_keeps_the_global_batch(workdir, char_data, tmp_path):
    # the data stream and global batch are the same on 1 process or 2: without dropout, a run moved to 2
    # processes at resume continues the one-process loss curve
    args = ['--eval_interval=10', '--gradient_accumulation_steps=1']
    train(workdir, tmp_path / 'straight', *args, '--max_iters=20')
    train(workdir, tmp_path / 'moved', *args, '--max_iters=10')
    train(workdir, tmp_path / 'moved', '--init_from=resume', '--max_iters=20', launcher=TORCHRUN)
    moved, straight = train_losses(tmp_path / 'moved'), train_losses(tmp_path / 'straight')
    assert sorted(moved) == list(range(1, 21))
    assert np.allclose([moved[i] for i in range(11, 21)], [straight[i] for i in range(11, 21)], rtol=1e-4, atol=0)


def test_a_new_run_in_an_old_out_dir_starts_a_new_log(workdir, char_data, tmp_path):
    train(workdir, tmp_path, '--max_iters=6', '--eval_interval=3')
    train(workdir, tmp_path, '--max_iters=4', '--eval_interval=2', '--overwrite=True')
    assert [r['iter'] for r in read_log(tmp_path) if 'val_loss' in r] == [0, 2, 4]


def test_resume_with_no_config_continues_exactly(workdir, char_run, tmp_path):
    # only --out_dir and --init_from: the config (tiny model, data, dropout 0.1, cpu) comes from the checkpoint
    train(workdir, tmp_path, '--eval_interval=10', '--dropout=0.1', '--max_iters=10')
    proc = run('train.py', f'--out_dir={tmp_path}', '--init_from=resume', '--max_iters=20', cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'changed: max_iters 10 -> 20' in proc.stdout
    resumed, straight = train_losses(tmp_path), train_losses(char_run)
    assert np.allclose([resumed[i] for i in range(11, 21)], [straight[i] for i in range(11, 21)], rtol=1e-5, atol=0)
    assert load_checkpoint(str(tmp_path))['config'] == load_checkpoint(str(char_run))['config'] | {'out_dir': str(tmp_path), 'init_from': 'resume'}


def test_resume_after_a_kill_logs_each_iteration_once(workdir, char_run, tmp_path):
    # a run killed after its checkpoint at 20 has logged iterations 21-23 that the resumed run will redo
    out = copy_run(char_run, tmp_path / 'out')
    with open(out / 'log.jsonl', 'a') as f:
        for i in (21, 22, 23):
            f.write(json.dumps({'iter': i, 'loss': 9.9, 'lr': 0.1, 'ms': 1.0}) + '\n')
    (out / 'meta.json').write_text('{}')  # and meta.json one save behind
    train(workdir, out, '--init_from=resume', '--max_iters=25', '--eval_interval=10', '--dropout=0.1')
    rows = read_log(out)
    steps = [r['iter'] for r in rows if 'loss' in r]
    evals = [r['iter'] for r in rows if 'val_loss' in r]
    assert steps == list(range(1, 26)) and evals == [0, 10, 20, 25]  # no repeat of the eval at 20 either
    assert 9.9 not in [r['loss'] for r in rows if 'loss' in r]
    assert json.loads((out / 'meta.json').read_text())['iter_num'] == 25


def test_a_nan_loss_stops_the_run_without_saving(workdir, char_data, tmp_path):
    # an absurd learning rate with no clipping: the weights blow up within a few steps
    proc = train(workdir, tmp_path, '--learning_rate=1e30', '--grad_clip=0', '--warmup_iters=0', '--max_iters=20',
                 '--eval_interval=5', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'stopping without saving this state' in lines[0]
    assert not (tmp_path / 'ckpt.pt').exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_readme_torchrun_cpu_line_runs_as_written(workdir, char_data, tmp_path):
    # README: OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 train.py config/shakespeare_char_cpu.py --out_dir=out-ddp
    line = next(l for l in (REPO / 'README.md').read_text().splitlines() if 'torchrun' in l and 'shakespeare_char_cpu' in l)
    cmd = line.split('#')[0].split()
    assert cmd[:4] == ['OMP_NUM_THREADS=1', 'torchrun', '--standalone', '--nproc_per_node=2'] and cmd[4:] == ['train.py', 'config/shakespeare_char_cpu.py', '--out_dir=out-ddp']
    data = workdir / 'data' / 'shakespeare_char'
    if not data.exists():
        data.symlink_to(char_data)
    proc = run('train.py', REPO / 'config' / 'shakespeare_char_cpu.py', f'--out_dir={tmp_path}', '--max_iters=4',
               '--eval_interval=2', '--eval_iters=2', '--log_interval=1', cwd=workdir, launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r['iter'] for r in read_log(tmp_path) if 'loss' in r] == [1, 2, 3, 4]
