"""train.py end to end on tiny runs: the log, resuming, DDP, the curriculum, fine-tuning."""
import shutil

import numpy as np
import pytest
import torch

from common import load_checkpoint
from helpers import TORCHRUN, read_log, train, train_losses


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


def test_ddp_needs_accumulation_a_multiple_of_processes(workdir, char_data, tmp_path):
    proc = train(workdir, tmp_path, '--max_iters=1', '--gradient_accumulation_steps=1', launcher=TORCHRUN, check=False)
    assert proc.returncode != 0
    assert 'gradient_accumulation_steps=1 must be a multiple of the 2 processes' in proc.stderr


def test_curriculum_grows_the_block(workdir, char_data, tmp_path):
    proc = train(workdir, tmp_path, '--max_iters=10', '--eval_interval=10',
                 "--phases={5: {'block_size': 32, 'batch_size': 2}}")
    assert "iter 5: curriculum phase {'block_size': 32, 'batch_size': 2}" in proc.stdout
    assert load_checkpoint(str(tmp_path))['model_args']['block_size'] == 32  # the largest block the run reaches


@pytest.mark.parametrize('phases, message', [
    ("{5: {'blok_size': 32}}", "unknown config key 'blok_size' (from phases[5])"),
    ("{5: {'block_size': '32'}}", "config key 'block_size' expects int, got str"),
], ids=['unknown-key', 'wrong-type'])
def test_bad_curriculum_exits_before_training(workdir, char_data, tmp_path, phases, message):
    proc = train(workdir, tmp_path / 'out', '--max_iters=10', f'--phases={phases}', check=False)
    assert proc.returncode != 0 and message in proc.stderr
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
    assert "the checkpoint's tokenizer differs from data/chat's" in proc.stderr


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_resume_with_a_larger_block_exits_clearly(workdir, char_run, tmp_path):
    out = copy_run(char_run, tmp_path / 'out')
    proc = train(workdir, out, '--init_from=resume', '--max_iters=22', '--block_size=32', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'block_size' in proc.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is unavailable')
def test_resume_on_more_processes_than_saved(workdir, char_run, tmp_path):
    # the data stream is the same on 1 process or 2, so a run may move to more processes when resumed
    out = copy_run(char_run, tmp_path / 'out')
    train(workdir, out, '--init_from=resume', '--max_iters=22', '--gradient_accumulation_steps=2', launcher=TORCHRUN)
    assert sorted(train_losses(out))[-2:] == [21, 22]


def test_a_new_run_in_an_old_out_dir_starts_a_new_log(workdir, char_data, tmp_path):
    train(workdir, tmp_path, '--max_iters=6', '--eval_interval=3')
    train(workdir, tmp_path, '--max_iters=4', '--eval_interval=2')
    assert [r['iter'] for r in read_log(tmp_path) if 'val_loss' in r] == [0, 2, 4]
