"""Checkpoints: written atomically, loaded safely, refused with one clear line when broken."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from common import build_model, load_checkpoint
from dataloader import TokenStream
from helpers import read_log, run, train


def test_run_leaves_checkpoint_and_meta_and_no_temp_files(char_run):
    names = sorted(os.listdir(char_run))
    assert {'ckpt.pt', 'meta.json', 'log.jsonl'} <= set(names)
    assert not [n for n in names if n.endswith('.tmp')]


def test_checkpoint_loads_with_weights_only(char_run):
    ckpt = torch.load(char_run / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 20 and ckpt['model_kind'] == 'gpt'


def test_meta_json_describes_the_checkpoint(char_run):
    meta = json.loads((char_run / 'meta.json').read_text())
    ckpt = load_checkpoint(str(char_run))
    assert meta['model_args'] == ckpt['model_args'] and meta['iter_num'] == ckpt['iter_num'] == 20
    assert meta['tokenizer'] == 'char'


def test_built_model_has_the_recorded_shape(char_run, char_data):
    model = build_model(load_checkpoint(str(char_run)))
    vocab = json.loads((char_data / 'meta.json').read_text())['vocab_size']
    assert model.config.block_size == 16 and model.config.vocab_size == vocab
    assert model.lm_head.weight.shape == (vocab, 32)


def test_built_model_reproduces_the_logged_val_loss(char_run, char_data):
    # train.py's estimate_loss: eval_iters=2 val batches from a generator seeded seed + 1, in eval mode
    model = build_model(load_checkpoint(str(char_run))).eval()
    data = TokenStream(str(char_data), 16, 4, 'cpu')
    generator = torch.Generator().manual_seed(1337 + 1)
    with torch.no_grad():
        loss = np.mean([model(*data.get_batch('val', generator))[1].item() for _ in range(2)])
    assert np.isclose(loss, read_log(char_run)[-1]['val_loss'], rtol=1e-5)


def test_a_checkpoint_whose_config_has_keys_train_py_no_longer_has_resumes(workdir, char_run, tmp_path):
    # saved before the approximator's and TurnGPT's keys moved into model_args and data_args: its config holds them
    # and no model_args; the model's own model_args kept the same field names
    shutil.copytree(char_run, tmp_path, dirs_exist_ok=True)
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    del ckpt['config']['model_args']
    ckpt['config'].update(semantic_init=False, eval_analogies=False, pooling='attention', entry_dim=0,
                          mse_weight=1.0, cos_weight=1.0, sim_weight=0.0)
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    train(workdir, tmp_path, '--init_from=resume', '--max_iters=22')
    assert load_checkpoint(str(tmp_path))['iter_num'] == 22


def corrupt(kind, path):
    if kind == 'truncated':
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'random bytes':
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == 'empty':
        path.write_bytes(b'')


@pytest.mark.parametrize('kind', ['truncated', 'random bytes', 'empty'])
def test_corrupt_checkpoint_exits_clearly(kind, char_run, tmp_path):
    path = tmp_path / 'ckpt.pt'
    shutil.copy(char_run / 'ckpt.pt', path)
    corrupt(kind, path)
    with pytest.raises(SystemExit, match='is not a readable checkpoint'):
        load_checkpoint(str(path))


@pytest.mark.parametrize('obj', [{'weights': torch.zeros(3)}, torch.zeros(3)], ids=['dict', 'tensor'])
def test_foreign_checkpoint_exits_clearly(obj, tmp_path):
    torch.save(obj, tmp_path / 'ckpt.pt')
    with pytest.raises(SystemExit, match='is not a nanolab checkpoint'):
        load_checkpoint(str(tmp_path))


def test_missing_checkpoint_exits_clearly(tmp_path):
    with pytest.raises(SystemExit, match=f'no checkpoint at {tmp_path / "ckpt.pt"}'):
        load_checkpoint(str(tmp_path))


def test_sample_on_corrupt_checkpoint_says_one_line(char_run, tmp_path):
    shutil.copy(char_run / 'ckpt.pt', tmp_path / 'ckpt.pt')
    corrupt('truncated', tmp_path / 'ckpt.pt')
    proc = run('sample.py', f'--out_dir={tmp_path}', '--device=cpu')
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'is not a readable checkpoint' in proc.stderr
