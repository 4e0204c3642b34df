"""Hints: a missing dataset or run names the commands that make it, read from the config docstrings' Prepare and
Train lines (common.make_hint); every config names them, so a new config can't forget. Each script case runs in an
empty directory (a fresh clone's): one line, a non-zero exit, no traceback, nothing written."""
import ast
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import common
from helpers import ENV, REPO, TINY, run, sampled
from prepare.common import write_dataset
from test_bad_input import snapshot, the_one_line
from tokenizer import SPECIAL_TOKENS, char_tokenizer, render_conversation

CONFIGS = sorted(p.name for p in (REPO / 'config').glob('*.py'))


def script(cwd, name, *args):
    """A repo script or `-m prepare.X` run in cwd, as a user in a fresh clone runs it; asserts nothing is written."""
    before = snapshot(cwd)
    cmd = [sys.executable, *([str(REPO / name)] if name.endswith('.py') else ['-m', name]), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env={**ENV, 'PYTHONPATH': str(REPO)}, capture_output=True, text=True, timeout=300)
    assert snapshot(cwd) == before
    return proc


def config(name):
    return str(REPO / 'config' / name)


# (config on train.py's command line and its extra args, the line it must print): each dataset's own prepare commands,
# with what they need first (chitchat's tokenizer, the style data), and the config named
MISSING_DATA = [
    (['vibejam_rewrite.py', '--init_from=scratch'],
     "no prepared data in data/vibejam_rewrite_char: make it with python -m prepare.vibejam --out=data/vibejam_char && "
     "python -m prepare.vibejam --pairs=data/vibejam_char --out=data/vibejam_rewrite_char (config/vibejam_rewrite.py)"),
    (['chatbert_ra.py'], "no (context, response) pairs in data/chatbert: make it with python -m prepare.chitchat && "
                         "python -m prepare.chatbert --tokenizer=data/chitchat (config/chatbert_ra.py)"),
    (['approximator.py'], "no bags of entries in data/approximator: make it with python -m prepare.approximator (config/approximator.py)"),
    (['arith_sft.py'], "no prepared data in data/arith: make it with python -m prepare.arith (config/arith_sft.py)"),
    (['quickstart.py'], "no prepared data in data/chitchat: make it with python -m prepare.chitchat (config/quickstart.py)"),
]


@pytest.mark.parametrize('args, line', sampled(MISSING_DATA), ids=[a[0] for a, _ in MISSING_DATA])
def test_missing_data_names_its_prepare_commands(tmp_path, args, line):
    assert the_one_line(script(tmp_path, 'train.py', config(args[0]), *args[1:], '--device=cpu')) == line


# (script and args, the line): a missing run names the commands that train it, and before them what it needs
MISSING_RUNS = [
    (['chat.py', '--out_dir=out-chatbert-ra'],
     "no checkpoint at out-chatbert-ra: make it with python -m prepare.chitchat && python -m prepare.chatbert "
     "--tokenizer=data/chitchat && python train.py config/chatbert_ra.py (config/chatbert_ra.py)"),
    (['sample.py', '--out_dir=out-vibejam-rewrite-char'],
     "no checkpoint at out-vibejam-rewrite-char: make it with python -m prepare.vibejam --out=data/vibejam_char && "
     "python train.py config/vibejam_char.py && python -m prepare.vibejam --pairs=data/vibejam_char "
     "--out=data/vibejam_rewrite_char && python train.py config/vibejam_rewrite.py (config/vibejam_rewrite.py)"),
    (['chat_web.py', '--out_dir=out-approximator'],
     "no run at out-approximator: make it with python -m prepare.approximator && python train.py config/approximator.py "
     "(config/approximator.py)"),
    (['train.py', config('vibejam_rewrite.py')],  # its parent, named in the config's init_from
     "no checkpoint at out-vibejam-char: make it with python -m prepare.vibejam --out=data/vibejam_char && "
     "python train.py config/vibejam_char.py (config/vibejam_char.py)"),
    (['chat.py', '--out_dir=experiments/bi-sft'],
     "no checkpoint at experiments/bi-sft: make it with python -m prepare.chitchat && python -m prepare.chitchat "
     "--format=plain --out=data/chitchat_plain --tokenizer=data/chitchat && python -m prepare.chitchat --format=sft "
     "--out=data/chitchat_sft --tokenizer=data/chitchat && python -m projects.backward.lineage --phases=base,mid,sft "
     "--direction=bidirectional --name=bi (config/lineage_base.py)"),
    (['projects.vibejam.eval', '--message=hi', '--draft_from=out-arith-sft'],
     "no run out-arith-sft: make it with python -m prepare.arith && python train.py config/arith_sft.py "
     "(config/arith_sft.py), or set --draft_from to runs you have"),
]


@pytest.mark.parametrize('args, line', sampled(MISSING_RUNS), ids=[' '.join(a)[:40] for a, _ in MISSING_RUNS])
def test_missing_run_names_its_train_command(tmp_path, args, line):
    assert the_one_line(script(tmp_path, *args)) == line


def test_vibejam_names_the_key_of_a_missing_rewrite_run(tmp_path):
    (tmp_path / 'out-quickstart').mkdir()  # the draft model is there; the BPE rewrite run is not
    line = the_one_line(script(tmp_path, 'projects.vibejam.eval', '--message=hi', '--rewrite_runs=out-vibejam-rewrite-bpe'))
    assert line.startswith('no run out-vibejam-rewrite-bpe: make it with python -m prepare.vibejam --tokenizer=bpe')
    assert 'python train.py config/vibejam_rewrite.py --init_from=out-vibejam-bpe --dataset=vibejam_rewrite_bpe' in line
    assert line.endswith('(config/vibejam_rewrite.py), or set --rewrite_runs to runs you have')


@pytest.mark.parametrize('args, line', [
    (['chat.py', '--out_dir=nope'], "no checkpoint at nope: train one first (python train.py config/quickstart.py) or pass --out_dir"),
    (['train.py', '--dataset=nope', '--device=cpu'], "no prepared data in data/nope: prepare it first, e.g. python -m prepare.chitchat "
     "or python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char"),
    (['prepare.chatbert', '--tokenizer=data/nope'], "no tokenizer at data/nope: pass a prepared data dir, e.g. --tokenizer=data/chitchat"),
], ids=['run', 'dataset', 'tokenizer'])
def test_an_unknown_name_gets_the_generic_hint(tmp_path, args, line):
    assert the_one_line(script(tmp_path, *args)) == line


@pytest.mark.parametrize('args, line', [
    (['prepare.chatbert'], "no tokenizer at data/chitchat: make it with python -m prepare.chitchat (config/chatbert_gpt.py)"),
    (['prepare.vibejam', '--pairs=data/vibejam_char'],
     "no tokenizer at data/vibejam_char: make it with python -m prepare.vibejam --out=data/vibejam_char (config/vibejam_char.py)"),
    (['prepare.chitchat', '--format=turns', '--out=data/chitchat_turns', '--tokenizer=data/chitchat'],
     "no tokenizer at data/chitchat: make it with python -m prepare.chitchat (config/chatbert_gpt.py)"),
], ids=['chatbert', 'vibejam-pairs', 'chitchat-turns'])
def test_a_prepare_script_names_the_prepare_its_tokenizer_needs(tmp_path, args, line):
    assert the_one_line(script(tmp_path, *args)) == line


@pytest.mark.parametrize('asked, target, hint', [
    ('arith_mid.py', 'data/arith_chat', "python -m prepare.arith && python -m prepare.arith --format=chat --out=data/arith_chat "
                                        "--tokenizer=data/arith (config/arith_mid.py)"),
    ('arrow_small.py', 'data/chitchat_plain', "python -m prepare.chitchat && python -m prepare.chitchat --format=plain "
                                              "--out=data/chitchat_plain --tokenizer=data/chitchat (config/arrow_small.py)"),
    ('lineage_sft.py', 'data/chitchat_sft', "python -m prepare.chitchat && python -m prepare.chitchat --format=sft "
                                            "--out=data/chitchat_sft --tokenizer=data/chitchat (config/lineage_sft.py)"),
    ('projects.turngpt.eval', 'data/chitchat_engaged', "python -m prepare.chitchat && python -m prepare.chitchat --engaged=0.1 "
                                            "--out=data/chitchat_engaged --tokenizer=data/chitchat (config/turngpt.py)"),
    ('arrow_gpu.py', 'data/fineweb', "python -m prepare.hf HuggingFaceFW/fineweb-edu --config=sample-10BT "
                                     "--split='train[:2%]' --tokenizer=bpe --vocab_size=32768 --out=data/fineweb (config/arrow_gpu.py)"),
    ('lineage_mid.py', 'out-lineage-base', "python -m prepare.chitchat && python -m prepare.chitchat --format=plain "
                                           "--out=data/chitchat_plain --tokenizer=data/chitchat && python train.py "
                                           "config/lineage_base.py (config/lineage_base.py)"),
    ('arith_rl.py', 'experiments/arith-bi-sft', "python -m prepare.arith && python -m projects.backward.lineage --recipe=arith --phases=sft,rl "
                                                "--direction=bidirectional --name=arith-bi (config/arith_sft.py)"),
])
def test_hint_names_what_makes_it_and_what_that_needs(tmp_path, monkeypatch, asked, target, hint):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', f'config/{asked}'])
    assert common.make_hint(target, None) == f"make it with {hint}"


def test_hints_from_any_directory_and_path_form(tmp_path, monkeypatch):
    """A checkpoint file, an absolute path or a tokenizer.json names the same run or data dir; the asked config first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py'])
    assert common.make_hint(str(tmp_path / 'out-arith-rl' / 'ckpt.pt'), None) == (
        "make it with python -m prepare.arith && python train.py config/arith_sft.py && "
        "python train.py config/arith_rl.py --init_from=out-arith-sft (config/arith_rl.py)")
    assert common.make_hint('data/chitchat_engaged/tokenizer.json', None).endswith(
        "--engaged=0.1 --out=data/chitchat_engaged --tokenizer=data/chitchat (config/turngpt.py)")
    monkeypatch.setattr(sys, 'argv', ['train.py', 'config/turngpt_gpu.py'])
    assert common.make_hint('data/chitchat_engaged', None).endswith('(config/turngpt_gpu.py)')
    (tmp_path / 'data' / 'chitchat').mkdir(parents=True)  # what is there is not made again
    assert common.make_hint('data/chitchat_turns', None) == (
        "make it with python -m prepare.chitchat --format=turns --out=data/chitchat_turns --tokenizer=data/chitchat (config/turngpt_gpu.py)")
    assert common.make_hint('experiments/nope-sft', None) == (
        "it is phase sft of experiment nope: make it with python -m projects.backward.lineage --name=nope and the --phases up to sft "
        "(and --recipe, --direction or --parent) it ran with")
    assert common.make_hint('experiments/nope', 'generic') == 'generic'


@pytest.fixture(scope='module')
def arith_like_run(workdir):
    """A tiny chat model whose char tokenizer knows only arithmetic (as prepare.arith's does): chitchat's next-turn
    task has characters it can't write."""
    tok = char_tokenizer('0123456789+-= #\nabcdefghijklmnopqrstuvwxyz', specials=SPECIAL_TOKENS)
    docs = [np.array(render_conversation(tok, [('user', f'{a} + {b}'), ('assistant', f'{a} + {b} = {a + b}\n#### {a + b}')]),
                     dtype=np.uint16) for a in range(10) for b in range(10)]
    write_dataset(workdir / 'data' / 'sums', tok, {'train': docs, 'val': docs[:20]}, source='tests')
    out = workdir / 'out-sums'
    proc = run('train.py', '--dataset=sums', f'--out_dir={out}', *TINY, '--max_iters=2', '--eval_interval=2', cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_eval_directions_refuses_a_task_the_model_cannot_do_in_one_line(workdir, arith_like_run, tmp_path):
    proc = run('projects.backward.eval', f'--out_dir={arith_like_run}', '--tasks=next_turn', f'--eval_dir={tmp_path / "ev"}', cwd=workdir)
    line = the_one_line(proc)
    assert line.startswith(f"{arith_like_run}/ckpt.pt can do none of --tasks=next_turn (next_turn: the char tokenizer "
                           f"can't write chitchat's conversations (") and line.endswith('with --tasks=loss')
    assert not (tmp_path / 'ev').exists()
    # asked for both, it measures what it can and says what it skipped
    proc = run('projects.backward.eval', f'--out_dir={arith_like_run}', '--eval_tokens=50', f'--eval_dir={tmp_path / "ev"}', cwd=workdir)
    assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert "next_turn: skipped, the char tokenizer can't write chitchat's conversations" in proc.stdout


# -----------------------------------------------------------------------------
# every config names its commands, so that the hints (and a reader) can find them


def doc(name):
    return ast.get_docstring(ast.parse((REPO / 'config' / name).read_text()))


def all_configs():
    return {f'config/{n}': (common.read_config_file(config(n)), common.config_steps(config(n))) for n in CONFIGS}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_names_its_prepare_and_train_commands(name):
    configs = all_configs()
    values, steps = configs[f'config/{name}']
    assert steps.get('Prepare') or re.search(r'^Prepare:\s*none\b', doc(name), re.M), f"{name}: no Prepare line"
    assert any(re.match(rf"(python|torchrun .*) train\.py config/{name}\b", c) for c in steps.get('Train', [])), \
        f"{name}: no Train line that trains it"
    made = {m for c in steps['Prepare'] for m in common.step_targets(c, configs)[0]}
    assert set(common.datasets(values)) <= made, f"{name}: its Prepare lines don't make {set(common.datasets(values)) - made}"
    assert values.get('out_dir') in {m for c in steps['Train'] for m in common.step_targets(c, configs)[0]}


def flag_exists(words, flag):
    """Is --flag one the command's script or module takes? (its argparse option, or its config key)"""
    module = words[words.index('-m') + 1] if '-m' in words else ''
    if module.startswith('prepare.'):  # argparse options
        return f"'--{flag}'" in (REPO / (module.replace('.', '/') + '.py')).read_text()
    scripts = [REPO / w for w in words if w.endswith('.py') and not w.startswith('config/')]
    scripts += [REPO / (module.replace('.', '/') + '.py')] if module else []
    sources = scripts + ([REPO / 'train.py'] if module == 'projects.backward.lineage' else [])  # its other flags go to train.py
    return any(re.search(rf'^{flag}\b', s.read_text(), re.M) for s in sources)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_commands_name_what_exists(name):
    """Each command's module, script, config and flags exist, and each data/ dir it needs is made by some config."""
    configs = all_configs()
    made = {m for _, steps in configs.values() for cs in steps.values() for c in cs for m in common.step_targets(c, configs)[0]}
    for cmd in [c for cs in configs[f'config/{name}'][1].values() for c in cs]:
        words = shlex.split(cmd)
        if '-m' in words:
            assert (REPO / (words[words.index('-m') + 1].replace('.', '/') + '.py')).is_file(), cmd
        assert all((REPO / w).is_file() for w in words if w.endswith('.py')), cmd
        own = words[next(i for i, w in enumerate(words) if w.endswith('.py') or w == '-m'):]  # not torchrun's
        bad = [w for w in own if w.startswith('--') and not flag_exists(words, w[2:].partition('=')[0])]
        assert not bad, f"{cmd}: unknown flags {bad}"
        needs = [n for n in common.step_targets(cmd, configs)[1] if n.startswith('data/')]
        assert set(needs) <= made, f"{cmd}: nothing makes {set(needs) - made}"


def test_a_config_that_does_not_load_or_parse_is_skipped(tmp_path, monkeypatch):
    """A user's own config with an error, or a docstring command that doesn't parse, costs its own hint only."""
    configs = tmp_path / 'config'
    configs.mkdir()
    (configs / 'quickstart.py').write_text((REPO / 'config' / 'quickstart.py').read_text())
    (configs / 'broken.py').write_text('"""\nPrepare: python -m prepare.chitchat\n"""\nn_layer = (2\n')
    (configs / 'quotes.py').write_text('"""\nPrepare: python -m prepare.mine --out=\'data/chitchat\n"""\ndataset = "chitchat"\n')
    (configs / 'noscript.py').write_text('"""\nTrain: python --version\n"""\nout_dir = "out-quickstart"\n')
    monkeypatch.setattr(common, 'CONFIG_DIR', str(configs))
    monkeypatch.chdir(tmp_path)
    assert list(common.read_configs()) == ['config/quickstart.py']
    assert common.make_hint('out-quickstart', None) == (
        "make it with python -m prepare.chitchat && python train.py config/quickstart.py (config/quickstart.py)")
