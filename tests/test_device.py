"""common.setup_device: the device, dtype and autocast a script runs with (no DDP here: RANK is unset)."""
from contextlib import nullcontext

import pytest
import torch

from common import setup_device


@pytest.fixture(autouse=True)
def no_torchrun(monkeypatch):
    monkeypatch.delenv('RANK', raising=False)


def test_cpu_runs_float32_without_autocast():
    ddp, rank, _, world_size, device, device_type, ptdtype, ctx = setup_device('cpu')
    assert (ddp, rank, world_size, device, device_type, ptdtype) == (False, 0, 1, 'cpu', 'cpu', torch.float32)
    assert isinstance(ctx, nullcontext)


def test_cpu_bfloat16_uses_autocast():
    *_, ptdtype, ctx = setup_device('cpu', 'bfloat16')
    assert ptdtype == torch.bfloat16 and isinstance(ctx, torch.autocast)


def test_float16_off_cuda_exits():
    with pytest.raises(SystemExit, match='dtype float16 needs a GradScaler, which only CUDA has'):
        setup_device('cpu', 'float16')


@pytest.fixture
def restore_matmul_precision():
    # setup_device turns TF32 on for CUDA, which also sets torch's global float32 matmul precision
    precision, cudnn_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = cudnn_tf32


def test_named_cuda_device_is_kept(monkeypatch, restore_matmul_precision):
    # no GPU needed: stand in for the two CUDA calls setup_device makes
    chosen = []
    monkeypatch.setattr(torch.cuda, 'set_device', chosen.append)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    device = setup_device('cuda:1', 'float32')[4]
    assert device == 'cuda:1' and chosen == ['cuda:1']


def test_a_gpu_that_is_not_there_exits(monkeypatch, restore_matmul_precision):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(SystemExit, match="device 'cuda:2' asked for, but there are only 2 GPUs"):
        setup_device('cuda:2', 'float32')


@pytest.mark.parametrize('threads, env, load, expected', [
    (3, None, 0.0, 3),    # asked for
    (0, '1', 0.0, None),  # OMP_NUM_THREADS set: left alone
    (0, None, 0.0, 4),    # idle machine: every core
    (0, None, 1.2, 3),    # one busy core: the rest
    (0, None, 9.0, 1),    # all busy: one
])
def test_auto_threads_leave_busy_cores_alone(monkeypatch, threads, env, load, expected):
    import common
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    if env:
        monkeypatch.setenv('OMP_NUM_THREADS', env)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 4)
    monkeypatch.setattr(common.os, 'getloadavg', lambda: (load, load, load))
    calls = []
    monkeypatch.setattr(torch, 'set_num_threads', calls.append)
    common.set_threads(threads, 'cpu')
    assert calls == ([expected] if expected else [])
