"""Bad input, table-driven: every case exits non-zero with one line and no traceback, and leaves a copied
run's out_dir byte-identical (nothing is written until every check has passed)."""
import shutil

import pytest
import torch

from helpers import REPO, TINY, run

NOT_UTF8 = b'caf\xe9 au lait\n'  # latin-1, not utf-8


def format_paths(text, paths):
    """'{run}/x' -> '/tmp/.../run/x' (not str.format: the cases hold dict literals)"""
    for name, path in paths.items():
        text = text.replace('{' + name + '}', str(path))
    return text


def the_one_line(proc):
    """The one line a failed run printed, after checking it failed, printed one line, and no traceback."""
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def snapshot(path):
    """{relative path: bytes} of every file below path (nothing if it does not exist)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()} if path.exists() else {}


@pytest.fixture
def run_copy(char_run, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(char_run, out)
    return out


@pytest.fixture
def bad_files(workdir, char_data, tmp_path):
    """Files the cases below refer to: a config with a syntax error, a dataset without its tokenizer, a latin-1 prompt."""
    (tmp_path / 'syntax.py').write_text("batch_size = 4\nn_layer = (2\n")
    (tmp_path / 'name_error.py').write_text("batch_size = 4\nn_layer = undefined_name\n")
    (tmp_path / 'latin1.txt').write_bytes(NOT_UTF8)
    no_tok = workdir / 'data' / 'no_tokenizer'
    if not no_tok.exists():
        shutil.copytree(char_data, no_tok)
        (no_tok / 'tokenizer.json').unlink()
    return tmp_path


# (id, extra train.py arguments, a part of the one line it must print); run over a copy of a finished run
TRAIN_CASES = [
    ('unknown-dataset', ['--dataset=nope'], 'no prepared data in data/nope'),
    ('n_layer-0', ['--n_layer=0'], "'n_layer' must be in [1, inf), got 0"),
    ('n_layer-negative', ['--n_layer=-1'], "'n_layer' must be in [1, inf)"),
    ('block_size-0', ['--block_size=0'], "'block_size' must be in [1, inf)"),
    ('eval_iters-0', ['--eval_iters=0'], "'eval_iters' must be in [1, inf)"),
    ('accumulation-0', ['--gradient_accumulation_steps=0'], "'gradient_accumulation_steps' must be in [1, inf)"),
    ('n_head-not-dividing', ['--n_head=5'], 'n_embd=32 must be a multiple of n_head=5'),
    ('rope-odd-head-size', ['--n_embd=30', '--n_head=10'], 'rotary positions need an even head size, got n_embd/n_head = 3'),
    ('pos-unknown', ['--pos=foo'], "'pos' must be one of 'rope', 'learned', got 'foo'"),
    ('dropout-2', ['--dropout=2.0'], "'dropout' must be in [0, 1), got 2.0"),
    ('batch_size-0', ['--batch_size=0'], "'batch_size' must be in [1, inf)"),
    ('device-tpu', ['--device=tpu'], "unknown device 'tpu'"),
    ('device-cuda-1x', ['--device=cuda:x'], "unknown device 'cuda:x'"),
    ('dtype-unknown', ['--dtype=float8'], "'dtype' must be one of"),
    ('float16-on-cpu', ['--dtype=float16'], 'dtype float16 needs a GradScaler'),
    ('no-tokenizer', ['--dataset=no_tokenizer'], 'has no tokenizer.json'),
    ('eval_interval-0', ['--eval_interval=0'], "'eval_interval' must be in [1, inf)"),
    ('log_interval-0', ['--log_interval=0'], "'log_interval' must be in [1, inf)"),
    ('config-syntax-error', ['{files}/syntax.py'], 'syntax.py:2: '),
    ('config-name-error', ['{files}/name_error.py'], "name_error.py:2: NameError: name 'undefined_name' is not defined"),
    ('config-missing', ['{files}/nope.py'], "config file '{files}/nope.py' not found"),
    ('lr-schedule-0-over-0', ['--warmup_iters=5', '--lr_decay_iters=5', '--max_iters=10'],
     'warmup_iters=5 must be less than lr_decay_iters=5'),
    ('phase-lr-schedule', ['--max_iters=30', "--phases={4: {'warmup_iters': 20, 'lr_decay_iters': 10}}"],
     'warmup_iters=20 must be less than lr_decay_iters=10 (in phases[4])'),
    ('phase-architecture', ['--max_iters=30', "--phases={10: {'n_layer': 8}}"], "phases[10] sets 'n_layer', which a phase can't change"),
    ('phase-not-a-dict', ["--phases={10: 5}"], 'phases must map iterations'),
    ('compile-not-bool', ['--compile=abc'], "config key 'compile' expects bool, got str 'abc'"),
    ('wrong-type', ['--eval_interval=abc'], "config key 'eval_interval' expects int, got str"),
    ('unknown-key-did-you-mean', ['--learnin_rate=0.1'], "did you mean 'learning_rate'?"),
    ('no-value', ['--max_iters'], "argument '--max_iters' has no value"),
    ('scratch-over-a-run', [], 'already holds a run: continue it with --init_from=resume'),
    ('resume-architecture', ['--init_from=resume', '--max_iters=30', '--n_layer=8'],
     "--n_layer=8 differs from the run's own n_layer=2: a resumed run keeps its config"),
    ('resume-larger-block', ['--init_from=resume', '--max_iters=30', '--block_size=32'], "--block_size=32 differs"),
    ('resume-other-dataset', ['--init_from=resume', '--max_iters=30', '--dataset=chat'], "--dataset=chat differs"),
    ('finetune-other-size', ['--init_from={run}', '--out_dir={tmp}/child', '--n_embd=64'],
     "--n_embd=64 conflicts with {run}'s n_embd=32: a fine-tuned model keeps its parent's architecture"),
    ('finetune-other-direction', ['--init_from={run}', '--out_dir={tmp}/child', '--direction=backward'],
     "--direction=backward conflicts with {run}'s direction='forward'"),
    ('resume-other-direction', ['--init_from=resume', '--max_iters=30', '--direction=bidirectional'], "--direction=bidirectional differs"),
    ('direction-unknown', ['--direction=sideways'], "'direction' must be one of 'forward', 'backward', 'bidirectional'"),
    ('backward_frac-above-1', ['--backward_frac=1.5'], "'backward_frac' must be in [0, 1]"),
    ('finetune-other-kind', ['--init_from={run}', '--out_dir={tmp}/child', '--model_kind=nope'], "--model_kind=nope conflicts"),
    ('finetune-missing-parent', ['--init_from={tmp}/nope', '--out_dir={tmp}/child'], 'no checkpoint at'),
    ('unknown-model-kind', ['--model_kind=nope', '--overwrite=True'], "unknown model_kind 'nope'; known: gpt"),
    ('unknown-data-source', ['--data_source=nope', '--overwrite=True'], "unknown data_source 'nope'"),
    ('data-mix-negative', ["--data_mix={'chars': -1}", '--overwrite=True'], "data_mix maps dataset names to weights > 0"),
    ('data-mix-missing', ["--phases={5: {'data_mix': {'nope': 1.0}}}", '--overwrite=True'], 'no prepared data in data/nope'),
    ('lr-scales-unknown', ["--lr_scales={'transformer.nope': 2.0}", '--overwrite=True'], "lr_scales names 'transformer.nope'"),
    ('turn-untied', ['--turn_dim=8', '--tie_weights=False', '--overwrite=True'], 'turn_dim ties the output head'),
    ('turn-map-unknown', ['--turn_map=cubic', '--overwrite=True'], "'turn_map' must be one of 'linear', 'poly'"),
    ('advance-unknown-metric', ["--advance_when={'bleu': 1}", '--overwrite=True'], "advance_when names 'bleu'"),
    ('advance-threshold-text', ["--advance_when={'val_loss': 'low'}", '--overwrite=True'], "advance_when maps metric names to thresholds"),
    ('lr-scales-negative', ["--lr_scales={'transformer.h': -1.0}", '--overwrite=True'], "lr_scales maps parameter-name prefixes to multipliers >= 0"),
    ('finetune-other-turn-dim', ['--init_from={run}', '--out_dir={tmp}/child', '--turn_dim=8'], "--turn_dim=8 conflicts"),
]


@pytest.mark.parametrize('args, message', [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input_says_one_line_and_changes_nothing(workdir, run_copy, bad_files, tmp_path, args, message):
    if args == ['--device=cuda'] and torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    fill = {'files': bad_files, 'run': run_copy, 'tmp': tmp_path}
    args, message = [format_paths(a, fill) for a in args], format_paths(message, fill)
    before = snapshot(run_copy)
    proc = run('train.py', *TINY, '--dataset=chars', f'--out_dir={run_copy}', *args, cwd=workdir)
    assert message in the_one_line(proc)
    assert snapshot(run_copy) == before
    assert not (tmp_path / 'child').exists()


def test_train_without_cuda_says_so(workdir, run_copy):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    proc = run('train.py', *TINY, '--dataset=chars', f'--out_dir={run_copy}', '--init_from=resume', '--device=cuda', cwd=workdir)
    assert 'sees no CUDA GPU' in the_one_line(proc)


SAMPLE_CASES = [
    ('forward-model-read-backward', ['--direction=backward'], "trained forward only; it can't read backward"),
    ('unknown-characters', ['--start=日本語 😀'], "4 character(s) not in the char vocabulary: '日本語😀'"),
    ('prompt-not-utf8', ['--start=FILE:{files}/latin1.txt'], 'not UTF-8 text'),
    ('prompt-file-missing', ['--start=FILE:{files}/nope.txt'], 'no such file'),
    ('negative-temperature', ['--temperature=-1'], "'temperature' must be in [0, inf)"),
    ('negative-top_k', ['--top_k=-1'], "'top_k' must be in [0, inf)"),
    ('negative-top_p', ['--top_p=-0.5'], "'top_p' must be in (0, 1]"),
    ('top_p-0', ['--top_p=0'], "'top_p' must be in (0, 1]"),
    ('negative-max_new_tokens', ['--max_new_tokens=-5'], "'max_new_tokens' must be in [1, inf)"),
    ('num_samples-0', ['--num_samples=0'], "'num_samples' must be in [1, inf)"),
    ('unknown-key', ['--temprature=0.5'], "did you mean 'temperature'?"),
    ('device-tpu', ['--device=tpu'], "unknown device 'tpu'"),
    ('no-checkpoint', ['--out_dir={tmp}/nope'], 'no checkpoint at'),
]


@pytest.mark.parametrize('args, message', [c[1:] for c in SAMPLE_CASES], ids=[c[0] for c in SAMPLE_CASES])
def test_sample_bad_input_says_one_line(run_copy, bad_files, tmp_path, args, message):
    fill = {'files': bad_files, 'tmp': tmp_path}
    before = snapshot(run_copy)
    proc = run('sample.py', f'--out_dir={run_copy}', '--device=cpu', '--max_new_tokens=4', *[format_paths(a, fill) for a in args])
    assert format_paths(message, fill) in the_one_line(proc)
    assert snapshot(run_copy) == before


CHAT_CASES = [
    ('negative-temperature', ['--temperature=-1'], "'temperature' must be in [0, inf)"),
    ('max_new_tokens-0', ['--max_new_tokens=0'], "'max_new_tokens' must be in [1, inf)"),
    ('top_p-2', ['--top_p=2'], "'top_p' must be in (0, 1]"),
    ('not-a-chat-model', ['--out_dir={char_run}'], 'was not trained on conversations'),
    ('no-checkpoint', ['--out_dir={tmp}/nope'], 'no checkpoint at'),
]


@pytest.mark.parametrize('args, message', [c[1:] for c in CHAT_CASES], ids=[c[0] for c in CHAT_CASES])
def test_chat_bad_input_says_one_line(chat_run, char_run, tmp_path, args, message):
    fill = {'char_run': char_run, 'tmp': tmp_path}
    before = snapshot(chat_run)
    proc = run('chat.py', f'--out_dir={chat_run}', '--device=cpu', *[format_paths(a, fill) for a in args], stdin='hello\n')
    assert format_paths(message, fill) in the_one_line(proc)
    assert snapshot(chat_run) == before


def test_checkpoint_whose_weights_do_not_fit_its_model_args_says_one_line(char_run, tmp_path):
    ckpt = torch.load(char_run / 'ckpt.pt', weights_only=True)
    ckpt['model_args']['n_embd'] = 64  # the weights are 32 wide
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    proc = run('sample.py', f'--out_dir={tmp_path}', '--device=cpu')
    assert 'its weights do not fit its own model_args' in the_one_line(proc)


def test_unreadable_checkpoint_message_is_whole(char_run, tmp_path):
    (tmp_path / 'ckpt.pt').write_bytes((char_run / 'ckpt.pt').read_bytes()[:1000])
    proc = run('sample.py', f'--out_dir={tmp_path}', '--device=cpu')
    assert the_one_line(proc).endswith('retrain or restore it')


def test_bpe_vocab_too_small_says_one_line(text, tmp_path):
    (tmp_path / 'in.txt').write_text(text, encoding='utf-8')
    proc = run('prepare.text', tmp_path / 'in.txt', '--tokenizer=bpe', '--vocab_size=10', f'--out={tmp_path / "out"}')
    assert the_one_line(proc) == "a BPE vocab_size must be at least 263 (256 bytes + 7 special tokens), got 10"
    assert not (tmp_path / 'out').exists()


# every script answers --help with its docstring and keys, and exits 0
HELP = [('train.py', ['--out_dir', '--max_iters', '--n_layer', '--phases', '--threads']),
        ('sample.py', ['--out_dir', '--temperature', '--top_p', '--max_new_tokens']),
        ('chat.py', ['--out_dir', '--temperature', '--max_new_tokens', '--demo']),
        ('projects.chatbert.eval', ['--plan', '--n_pairs', '--imr_settings', '--draws', '--fib']),
        ('bench.py', ['--bench_iters', '--bench_target', '--bench_against']),
        ('plot.py', ['OUT_DIR', '--out']),
        ('projects.backward.eval', ['--out_dir', '--eval_tokens', '--tasks', '--mc_items']),
        ('prepare.text', ['--tokenizer', '--vocab_size']),
        ('prepare.chitchat', ['--vocab_size']),
        ('prepare.hf', ['--field', '--split']),
        ('prepare.chatbert', ['--source', '--context_len', '--response_len']),
        ('projects.approximator.embed', ['--out_dir', '--text', '--file', '--k', '--format', '--quantize', '--cache_size']),
        ('projects.approximator.eval', ['--out_dir', '--n_sentences', '--n_queries', '--n_candidates', '--ablations']),
        ('prepare.approximator', ['--vocab_size', '--skipgrams', '--word_frac', '--teacher', '--max_words']),
        ('prepare.vibejam', ['--folder', '--tokenizer', '--vocab_size', '--block_size']),
        ('projects.vibejam.eval', ['--rewrite_runs', '--earlier', '--draft_from', '--message']),
        ('projects.rl.eval', ['--runs', '--per_level', '--k', '--temperature']),
        ('prepare.arith', ['--format', '--train_per_level', '--gsm8k', '--tokenizer']),
        ('chat_web.py', ['--out_dir', '--host', '--port', '--max_new_tokens', '--max_message_chars', '--load_clients'])]


@pytest.mark.parametrize('args', [['--rewrite_runs=nope'], ['--message=hi', '--draft_from=nope']], ids=['table', 'message'])
def test_vibejam_names_a_missing_run_before_any_work(tmp_path, args):
    proc = run('projects.vibejam.eval', *args, cwd=tmp_path)
    assert the_one_line(proc).startswith('no run ') and not list(tmp_path.iterdir())


@pytest.mark.parametrize('flag', ['--help', '-h'])
@pytest.mark.parametrize('script, keys', HELP, ids=[h[0] for h in HELP])
def test_help_lists_the_keys(script, keys, flag, tmp_path):
    cwd = tmp_path if script.endswith('.py') else REPO  # modules run from the repo
    proc = run(script, flag, cwd=cwd)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert all(k in proc.stdout for k in keys) and ('$ python' in proc.stdout or 'python -m' in proc.stdout)
    assert not list(tmp_path.iterdir())  # asking for help writes nothing


def test_train_help_shows_every_key_with_its_default_and_rule():
    proc = run('train.py', '--help')
    assert "--n_layer=6  [1, inf)" in proc.stdout and "--pos='rope'  'rope' | 'learned'" in proc.stdout
    assert "--compile=None  bool or None  # torch.compile" in proc.stdout
    import ast
    tree = ast.parse((REPO / 'train.py').read_text())
    keys = [n.target.id if isinstance(n, ast.AnnAssign) else n.targets[0].id for n in tree.body
            if isinstance(n, (ast.Assign, ast.AnnAssign)) and isinstance(getattr(n, 'target', None) or n.targets[0], ast.Name)]
    config = [k for k in keys if not k.isupper() and keys.index(k) < keys.index('RESUMABLE')]
    assert config and all(f"--{k}=" in proc.stdout for k in config)
