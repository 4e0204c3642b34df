"""projects/backward/lineage.py: a base -> mid -> sft lineage of tiny runs, its links and report, and a branch."""
import hashlib
import json

import numpy as np
import pytest

from common import load_checkpoint
from conftest import CONVERSATIONS
from helpers import TINY, run
from prepare.chitchat import render
from prepare.common import write_dataset

ARGS = [a for a in TINY if not a.startswith('--block_size')] + ['--block_size=32', '--max_iters=4', '--eval_interval=2',
                                                                  '--warmup_iters=0', '--evaluate=False']


@pytest.fixture(scope='module')
def lineage_data(workdir, chat_tok):
    """data/chitchat_plain, data/chitchat, data/chitchat_sft from the made-up conversations, one tokenizer."""
    for fmt, name in (('plain', 'chitchat_plain'), ('chat', 'chitchat'), ('sft', 'chitchat_sft')):
        rendered = [render(chat_tok, conv, fmt) for conv in CONVERSATIONS]
        docs = [np.array(ids, dtype=np.uint16) for ids, _ in rendered] * 10
        masks = {s: [np.array(m, dtype=np.uint8) for _, m in rendered] * 10 for s in ('train', 'val')} if fmt == 'sft' else None
        write_dataset(workdir / 'data' / name, chat_tok, {'train': docs, 'val': docs}, masks=masks, source='tests')
    return workdir


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_lineage_runs_its_phases_in_order_and_inherits_the_direction(lineage_data):
    proc = run('projects.backward.lineage', '--phases=base,mid,sft', '--direction=backward', '--name=t', *ARGS, cwd=lineage_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = lineage_data / 'experiments'
    for phase, dataset in (('base', 'chitchat_plain'), ('mid', 'chitchat'), ('sft', 'chitchat_sft')):
        d = exp / f't-{phase}'
        config = json.loads((d / 'config.json').read_text())
        assert config['phase'] == phase and config['direction'] == 'backward' and config['dataset'] == dataset
        assert (d / f'{phase}.h5').exists() and (d / 'RESEARCH_REPORT.md').exists() and (d / 'curves.png').exists()
    link = json.loads((exp / 't-sft' / 'parent_link.json').read_text())
    assert link['parent'] == str(exp / 't-mid') and link['parent_sha256'] == sha256(exp / 't-mid' / 'ckpt.pt')
    assert load_checkpoint(str(exp / 't-sft'))['parent'] == str(exp / 't-mid')
    report = (exp / 't-sft' / 'RESEARCH_REPORT.md').read_text()
    assert 'direction **backward**' in report and report.index('t-sft') < report.index('t-mid') < report.index('t-base')


def test_a_branch_from_mid_and_a_refused_direction(lineage_data):
    exp = lineage_data / 'experiments'
    if not (exp / 't-mid').exists():
        pytest.skip('needs the lineage of the test above')
    proc = run('projects.backward.lineage', '--phases=sft', f'--parent={exp / "t-mid"}', '--name=t-branch', *ARGS, '--learning_rate=1e-4',
               cwd=lineage_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((exp / 't-branch-sft' / 'config.json').read_text())['direction'] == 'backward'
    proc = run('projects.backward.lineage', '--phases=sft', f'--parent={exp / "t-mid"}', '--name=t-fw', '--direction=forward', *ARGS,
               cwd=lineage_data)
    assert proc.returncode != 0 and "--direction=forward conflicts with" in proc.stderr
    assert not (exp / 't-fw-sft').exists()


def test_unknown_phase_says_one_line(lineage_data):
    proc = run('projects.backward.lineage', '--phases=base,pretrain', cwd=lineage_data)
    assert proc.returncode != 0 and proc.stderr.strip() == "unknown phase(s) pretrain; phases are base, mid, sft, rl, e.g. --phases=base,mid,sft"
