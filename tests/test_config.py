"""The configurator: config files then --key=value over a script's globals, with one-line errors."""
import ast
import math

import pytest

from common import configure, read_config_file
from conftest import CONVERSATIONS, build_toy_approximator_data
from helpers import REPO, run, sampled, train
from prepare.chatbert import write_pairs


def defaults():
    return {'batch_size': 12, 'learning_rate': 1e-3, 'dataset': 'chitchat', 'compile': None, 'decay_lr': True,
            'betas': (0.9, 0.99), 'phases': {}, 'MAX_LEN': 3, '_private': 1}


def exit_message(g, argv):
    with pytest.raises(SystemExit) as e:
        configure(g, argv)
    return str(e.value.code)


def test_overrides_are_applied_with_their_types():
    g = defaults()
    configure(g, ['--batch_size=32', '--learning_rate=1', '--dataset=shakespeare_char', '--compile=True',
                  '--decay_lr=False', '--betas=[0.8, 0.9]', "--phases={10: {'batch_size': 4}}"])
    assert g['batch_size'] == 32 and type(g['batch_size']) is int
    assert g['learning_rate'] == 1.0 and type(g['learning_rate']) is float  # an int where a float goes
    assert g['dataset'] == 'shakespeare_char'  # a bare word is a string
    assert g['compile'] is True  # a None default takes anything
    assert g['decay_lr'] is False
    assert g['betas'] == (0.8, 0.9)  # a list where a tuple goes
    assert g['phases'] == {10: {'batch_size': 4}}


def test_quoted_string_stays_a_string():
    g = defaults()
    configure(g, ["--dataset='123'"])
    assert g['dataset'] == '123'


def test_config_file_values_are_applied(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("import math\n_scratch = 5\nbatch_size = 32\nlearning_rate = math.pi / 1000\n")
    g = defaults()
    configure(g, [str(cfg)])  # modules and _private names in the file are not config
    assert g['batch_size'] == 32 and g['learning_rate'] == math.pi / 1000 and g['_private'] == 1


def test_later_arguments_win(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("batch_size = 32\n")
    g = defaults()
    configure(g, [str(cfg), '--batch_size=8'])
    assert g['batch_size'] == 8
    configure(g, ['--batch_size=8', str(cfg)])
    assert g['batch_size'] == 32


def test_unknown_key_exits():
    assert exit_message(defaults(), ['--foo=1']).startswith("unknown config key 'foo' (from --foo=1)")


@pytest.mark.parametrize('key', ['MAX_LEN', '_private'])
def test_constants_and_private_names_are_not_config(key):
    assert exit_message(defaults(), [f'--{key}=1']).startswith(f"unknown config key '{key}'")


def test_unknown_key_in_a_config_file_exits(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("batch_sise = 32\n")
    assert exit_message(defaults(), [str(cfg)]).startswith(f"unknown config key 'batch_sise' (from {cfg})")


@pytest.mark.parametrize('arg, message', [
    ('--batch_size=abc', "config key 'batch_size' expects int, got str"),
    ('--batch_size=2.5', "config key 'batch_size' expects int, got float"),
    ('--decay_lr=1', "config key 'decay_lr' expects bool, got int"),
    ('--learning_rate=True', "config key 'learning_rate' expects float, got bool"),
], ids=['str-for-int', 'float-for-int', 'int-for-bool', 'bool-for-float'])
def test_wrong_type_exits(arg, message):
    assert exit_message(defaults(), [arg]).startswith(message)


def test_missing_config_file_exits():
    assert exit_message(defaults(), ['config/nope.py']).startswith("config file 'config/nope.py' not found")


def test_argument_without_value_exits():
    assert exit_message(defaults(), ['--batch_size']).startswith("argument '--batch_size' has no value")


def test_train_exits_with_one_line_on_unknown_key(workdir):
    proc = run('train.py', '--foo=1', cwd=workdir)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "unknown config key 'foo' (from --foo=1); the keys are the globals at the top of train.py (--help lists them)"]


CONFIGS = sorted(p.name for p in (REPO / 'config').glob('*.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_file_has_a_docstring(name):
    assert ast.get_docstring(ast.parse((REPO / 'config' / name).read_text()))


# one config of each data source and kind of start runs in the default suite (each is a train.py subprocess of a few
# seconds); --slow runs every config
COVERING = ['quickstart.py', 'turngpt.py', 'chatbert_ed.py', 'chatbert_imr.py', 'approximator.py', 'arith_rl.py',
            'vibejam_rewrite.py']


@pytest.mark.parametrize('name', sampled(COVERING + [c for c in CONFIGS if c not in COVERING], keep=len(COVERING)))
def test_config_file_sets_only_train_keys(name, workdir, char_data, chat_tok, tmp_path):
    # every key of the file goes through the configurator; tiny overrides after it keep the run short
    path = REPO / 'config' / name
    # a private data/ where the char data also stands in for every dataset a curriculum mixes in (a mix shares its
    # tokenizer); links in the shared workdir would let other tests write through them
    config = read_config_file(str(path))
    mixed = {n for phase in config.get('phases', {}).values() for n in phase.get('data_mix', {})}
    (tmp_path / 'data').mkdir()
    if config.get('data_source') in ('pairs', 'masked_pairs'):  # ChatBERT: pairs of TINY's block, 10 + 6 tokens
        write_pairs(str(tmp_path / 'data' / 'chars'), chat_tok, {'train': CONVERSATIONS * 3, 'val': CONVERSATIONS}, 10, 6, 'tests')
        mixed = set()
    if config.get('data_source') == 'bags':  # the BERT approximator: bags of the toy messages, with the toy teacher's vectors
        build_toy_approximator_data(tmp_path / 'data' / 'chars')
        mixed = set()
    extra = []
    if config.get('data_source') == 'rollouts':  # RL: a few task problems, and a block with room for an answer
        proc = run('prepare.arith', '--train_per_level=5', '--test_per_level=2', f'--out={tmp_path / "data" / "chars"}')
        assert proc.returncode == 0, proc.stderr
        extra = ['--block_size=160', '--batch_size=16']  # whole groups of 8 or 16 samples
    for n in mixed | ({'chars'} - {p.name for p in (tmp_path / 'data').iterdir()}):
        (tmp_path / 'data' / n).symlink_to(char_data)
    if config.get('init_from', 'scratch') not in ('scratch', 'resume'):  # a fine-tuning config: a tiny parent first
        train(tmp_path, tmp_path / config['init_from'], '--max_iters=1', '--eval_iters=1', '--eval_interval=1')
    proc = train(tmp_path, tmp_path / 'out', '--max_iters=0', '--eval_iters=1', *extra, config=[path])
    keys = [node.targets[0].id for node in ast.parse(path.read_text()).body if isinstance(node, ast.Assign)]
    assert keys and all(f"config: {key} = " in proc.stdout for key in keys)
