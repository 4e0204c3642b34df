"""The RL phase: the arithmetic task and its checker, GRPO's pieces (rl.py), the rollouts source through train.py
(exact resume, a direction's prompts), projects/backward/lineage.py's rl phase and projects/rl/eval.py's before/after table."""
import json

import numpy as np
import pytest
import torch

import arith
import rl
from common import load_checkpoint
from helpers import ENV, read_log, run, train_losses  # noqa: F401
from model import GPT, GPTConfig
from splits import split_of
from tokenizer import SPECIAL_TOKENS, Tokenizer, char_tokenizer

# a tiny char GPT over whole problems: a prompt is up to ~100 characters and an answer up to 48
RL_TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=64', '--block_size=160',
           '--eval_iters=1', '--log_interval=1', '--warmup_iters=0']
RL_ARGS = ['--data_source=rollouts', "--data_args={'samples': 4, 'max_new_tokens': 48, 'levels': [1], 'eval_problems': 4}",
           '--batch_size=16', '--learning_rate=1e-3', '--decay_lr=False', '--dataset=arith_tiny']


# -- the task ------------------------------------------------------------------

@pytest.mark.parametrize('level', arith.LEVELS)
def test_problems_are_deterministic_and_train_val_and_test_are_disjoint(level):
    sets = {s: arith.problems(s, n, level, seed=3) for s, n in (('train', 300), ('val', 30), ('test', 30))}
    assert sets == {s: arith.problems(s, len(ps), level, seed=3) for s, ps in sets.items()}
    assert arith.problems('train', 300, level, seed=4) != sets['train']  # the seed picks the problems
    questions = {s: {p['question'] for p in ps} for s, ps in sets.items()}
    assert [len(q) for q in questions.values()] == [300, 30, 30]
    assert not questions['train'] & questions['val'] and not questions['test'] & (questions['train'] | questions['val'])
    assert all(split_of(q) == s for s, qs in questions.items() for q in qs)  # the one split every project uses


def test_prepare_writes_three_disjoint_splits_and_val_bin_holds_no_test_question(tmp_path):
    proc = run('prepare.arith', '--train_per_level=200', '--val_per_level=20', '--test_per_level=30', f'--out={tmp_path / "a"}')
    assert proc.returncode == 0, proc.stderr
    sets = {s: rl.read_problems(str(tmp_path / 'a'), s) for s in ('train', 'val', 'test')}
    assert [len(ps) for ps in sets.values()] == [800, 80, 120]
    questions = {s: {p['question'] for p in ps} for s, ps in sets.items()}
    assert not questions['test'] & (questions['train'] | questions['val']) and not questions['train'] & questions['val']
    tok = Tokenizer.load(str(tmp_path / 'a' / 'tokenizer.json'))
    meta = json.loads((tmp_path / 'a' / 'meta.json').read_text())
    val = tok.decode(np.fromfile(tmp_path / 'a' / 'val.bin', dtype=meta['dtype']).tolist())
    assert all(q in val for q in questions['val']) and not any(q in val for q in questions['test'])
    assert not (tmp_path / 'a' / 'test.bin').exists()  # test is read by projects/rl/eval.py alone


def test_floor_baselines():
    assert arith.last_number('Ann has 7 pens. She gets 12 more. How many pens does Ann have?') == 12
    train = [{'level': 1, 'answer': a} for a in (3, 5, 5, 9)] + [{'level': 2, 'answer': a} for a in (4, 2, 2, 4, 8)]
    assert arith.most_common_answers(train) == {1: 5, 2: 2}  # a tie goes to the smaller answer


@pytest.mark.parametrize('level', arith.LEVELS)
def test_every_solution_computes_its_answer_and_the_checker_accepts_it(level):
    for p in arith.problems('train', 200, level):
        *work, last = p['solution'].split('\n')
        for line in work:  # each line of working is a true equation, and each step starts from the last result
            left, result = line.split(' = ')
            assert eval(left) == int(result) >= 0
        assert last == f"#### {p['answer']}" and arith.check(p['solution'], p['answer']) == 1.0
        assert len(work) == {1: 1, 2: 2, 3: 2, 4: 3}[level] and p['level'] == level


@pytest.mark.parametrize('text, answer, right', [
    ('3 + 4 = 7\n#### 7', 7, 1.0),
    ('#### 7', 7, 1.0),
    ('3 + 4 = 7\n#### 7\n', 7, 1.0),  # a trailing newline is no other line
    ('#### 1,000', 1000, 1.0),  # GSM8K's thousands
    ('#### -3', -3, 1.0),
    ('3 + 4 = 7\n#### 8', 7, 0.0),  # wrong
    ('3 + 4 = 7', 7, 0.0),  # no final line
    ('#### 7\nso the answer is 7', 7, 0.0),  # the answer is not the final line
    ('#### 7 apples', 7, 0.0),
    ('####7', 7, 0.0),
    ('#### 7.0', 7, 0.0),
    ('#### 77', 7, 0.0),
    ('the answer: 7', 7, 0.0),
    ('', 7, 0.0),
])
def test_the_checker_reads_the_final_line_exactly(text, answer, right):
    assert arith.check(text, answer) == right


# -- GRPO's pieces -------------------------------------------------------------

def test_group_advantages_sum_to_zero_and_vanish_when_rewards_are_equal():
    rewards = torch.tensor([[1., 0., 0., 1., 1., 0.], [0., 0., 0., 0., 0., 0.], [1., 1., 1., 1., 1., 1.],
                            [0.3, -1.2, 2.0, 0.0, 0.5, 0.1]])
    adv = rl.group_advantages(rewards)
    assert torch.allclose(adv.sum(1), torch.zeros(4), atol=1e-5)
    assert torch.equal(adv[1], torch.zeros(6)) and torch.equal(adv[2], torch.zeros(6))
    for g in (0, 3):  # normalized: the group's rewards over their std, a better answer a larger advantage
        assert torch.allclose(adv[g].std(unbiased=False), torch.tensor(1.0), atol=1e-4)
        assert torch.equal(adv[g].argsort(), rewards[g].argsort())


def tiny_gpt(vocab_size, block_size=32, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16))


def test_the_loss_touches_only_the_sampled_answer_tokens():
    model = tiny_gpt(20)
    prompts, answers = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[10, 11], [12, 13, 14, 15], [16]]
    speakers = [np.zeros(len(p) + len(a), dtype=np.uint8) for p, a in zip(prompts, answers)]
    adv = torch.tensor([0.5, -1.5, 2.0])
    x, y, s, w = rl.policy_batch(prompts, answers, speakers, adv)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        assert x[i, :len(p) + len(a) - 1].tolist() == (p + a)[:-1]
        assert y[i].tolist() == [-1] * (len(p) - 1) + a + [-1] * (x.size(1) - len(p) - len(a) + 1)
        assert torch.allclose(w[i][y[i] >= 0], adv[i] / 7) and not w[i][y[i] < 0].any()
    logits, loss = model(x, y, s, w)
    logp = logits.log_softmax(-1)
    brute = sum(-adv[i] / 7 * logp[i, len(p) - 1 + j, t] for i, (p, a) in enumerate(zip(prompts, answers)) for j, t in enumerate(a))
    assert torch.allclose(loss, brute, atol=1e-6)
    # the gradient reaches the prompt's tokens only through the answers' probabilities: another prompt target
    # or a padding target changes nothing
    y2 = y.clone()
    y2[y2 < 0] = 3
    w2 = w.clone()
    assert torch.allclose(model(x, y2, s, w2)[1], loss, atol=1e-6)


def test_rollouts_stop_at_a_stop_token_and_share_a_batch_by_prompt_length():
    model = tiny_gpt(12)
    prompts = [[1, 2], [3, 4, 5], [1, 2], [6]]
    speakers = [np.zeros(len(p), dtype=np.uint8) for p in prompts]
    g = torch.Generator().manual_seed(0)
    answers = rl.rollout(model, prompts, speakers, 10, 1.0, {0, 7}, g)
    for a in answers:
        assert 1 <= len(a) <= 10 and not set(a[:-1]) & {0, 7}  # cut right after the first stop, if one came
    again = rl.rollout(model, prompts, speakers, 10, 1.0, {0, 7}, torch.Generator().manual_seed(0))
    assert answers == again  # its own generator: the same draws
    greedy = rl.rollout(model, prompts, speakers, 10, 0, {0, 7})
    assert greedy[0] == greedy[2]  # the same prompt, greedy: the same answer


def test_a_few_rl_steps_teach_a_tiny_model_to_answer_seven():
    """The toy task: reward 1 for an answer that is the digit 7. The policy gradient alone must raise the reward."""
    tok = char_tokenizer('0123456789', SPECIAL_TOKENS)
    model, seven = tiny_gpt(tok.vocab_size, seed=1), tok.encode('7')
    prompt = [tok.bos, tok.special('<|user|>')] + tok.encode('12') + [tok.special('<|assistant|>')]
    speakers, stop = [np.zeros(len(prompt), dtype=np.uint8)] * 32, rl.stops(tok)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def reward():
        answers = rl.rollout(model, [prompt] * 32, speakers, 3, 1.0, stop, g)
        return answers, torch.tensor([float([t for t in a if t not in stop] == seven) for a in answers])
    start = np.mean([reward()[1].mean().item() for _ in range(5)])
    assert start < 0.2  # a low start: one of 17 tokens, then a stop
    for _ in range(60):
        answers, r = reward()
        x, y, s, w = rl.policy_batch([prompt] * 32, answers, [np.zeros(len(prompt) + 3)] * 32, rl.group_advantages(r.view(4, 8)).view(-1))
        _, loss = model(x, y, s, w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = np.mean([reward()[1].mean().item() for _ in range(5)])
    assert end > start + 0.3, (start, end)


def test_backward_answers_are_read_in_reading_order():
    tok = char_tokenizer('#0123456789 +=\n', SPECIAL_TOKENS)
    written = rl.reference(tok, '3 + 4 = 7\n#### 7', backward=True)  # as a backward model writes it: answer first
    assert tok.decode(written[:-1]) == '7 ####\n7 = 4 + 3' and written[-1] == tok.special('<|assistant|>')
    assert arith.check(rl.answer_text(tok, written, backward=True), 7) == 1.0
    assert arith.check(rl.answer_text(tok, written, backward=False), 7) == 0.0  # read the wrong way it's no answer
    # the backward prompt: the question, reversed, then the role token the answer comes before
    ids, _ = rl.prompt(tok, '12', backward=True, marker=False, max_len=20)
    assert ids == [tok.bos] + tok.encode('21') + [tok.special('<|user|>')]


# -- through train.py --------------------------------------------------------------------

@pytest.fixture(scope='module')
def arith_data(workdir):
    proc = run('prepare.arith', '--train_per_level=300', '--test_per_level=4', f'--out={workdir / "data" / "arith_tiny"}')
    assert proc.returncode == 0, proc.stderr
    return workdir


@pytest.fixture(scope='module')
def sft_run(arith_data):
    """A backward model that has learned some of the task (~20 s): RL needs answers that are sometimes right."""
    out = arith_data / 'rl-sft'
    proc = run('train.py', '--dataset=arith_tiny', f'--out_dir={out}', *RL_TINY, '--batch_size=16', '--max_iters=300',
               '--eval_interval=300', '--learning_rate=3e-3', '--direction=backward', cwd=arith_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def rl_train(workdir, out, *args, check=True):
    proc = run('train.py', f'--out_dir={out}', *RL_TINY, *RL_ARGS, *args, cwd=workdir)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_rl_resumes_exactly_and_logs_its_reward(arith_data, sft_run, tmp_path):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    rl_train(arith_data, straight, f'--init_from={sft_run}', '--max_iters=8', '--eval_interval=4')
    rl_train(arith_data, resumed, f'--init_from={sft_run}', '--max_iters=4', '--eval_interval=4')
    rl_train(arith_data, resumed, '--init_from=resume', '--max_iters=8', '--eval_interval=4')
    a, b = train_losses(straight), train_losses(resumed)
    assert sorted(b) == list(range(1, 9)) and any(a[i] != 0 for i in range(1, 9))  # some answers were right
    assert [a[i] for i in range(5, 9)] == [b[i] for i in range(5, 9)]
    # the same answers were sampled after the resume (a tiny model's groups can all be wrong, and its losses 0, there)
    rows, again = ([r for r in read_log(run) if 'loss' in r] for run in (straight, resumed))
    assert [r['answer_tokens'] for r in rows[4:]] == [r['answer_tokens'] for r in again[-4:]]
    assert all(0 <= r['reward'] <= 1 and 0 < r['answer_tokens'] <= 48 and 0 <= r['signal'] <= 1 for r in rows)
    evals = [r for r in read_log(straight) if 'val_loss' in r]
    assert [r['iter'] for r in evals] == [0, 4, 8] and all(0 <= r['val_pass1'] <= 1 for r in evals)
    ckpt = load_checkpoint(str(straight))
    assert ckpt['direction'] == 'backward' and ckpt['parent'] == str(sft_run)  # inherited from the sft parent


def test_rl_with_a_kl_leash_logs_the_kl(arith_data, sft_run, tmp_path):
    args = "--data_args={'samples': 4, 'max_new_tokens': 48, 'levels': [1], 'eval_problems': 4, 'kl': 0.1}"
    rl_train(arith_data, tmp_path, f'--init_from={sft_run}', '--max_iters=3', '--eval_interval=3', args)
    kls = [r['kl'] for r in read_log(tmp_path) if 'kl' in r]
    assert kls[0] == pytest.approx(0.0, abs=1e-4)  # the first rollouts are the parent's own
    assert any(abs(k) > 0 for k in kls[1:])  # then the policy moves away


@pytest.mark.parametrize('args, message', [
    (["--data_args={'samples': 3}"], "data_args samples=3 must divide batch_size=16"),
    (["--data_args={'sample': 4}"], "data_source 'rollouts' does not take data_args"),
    (["--data_args={'samples': 4, 'levels': [9]}"], "has no problems at levels [9]"),
    (['--data_args=4'], "config key 'data_args' expects dict"),
    (["--data_args={'samples': 4, 'temperature': 0}"], "data_args needs temperature > 0"),
])
def test_bad_rl_settings_say_one_line(arith_data, sft_run, tmp_path, args, message):
    proc = rl_train(arith_data, tmp_path, f'--init_from={sft_run}', '--max_iters=1', *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / 'ckpt.pt').exists()


def test_rollouts_need_prepared_problems(arith_data, sft_run, tmp_path):
    proc = rl_train(arith_data, tmp_path, f'--init_from={sft_run}', '--dataset=chars', check=False)
    assert proc.returncode != 0 and 'prepare them first with python -m prepare.arith' in proc.stderr


def test_experiment_runs_sft_then_rl_and_rl_py_compares_them(arith_data):
    args = [a for a in RL_TINY if not a.startswith('--warmup')] + ['--batch_size=8', '--max_iters=2', '--eval_interval=2',
                                                                    '--warmup_iters=0', '--dataset=arith_tiny', '--evaluate=False']
    proc = run('projects.backward.lineage', '--recipe=arith', '--phases=sft,rl', '--direction=bidirectional', '--name=ar',
               *args, "--data_args={'samples': 4, 'max_new_tokens': 48, 'eval_problems': 4}", cwd=arith_data)
    # data_args reaches the sft phase too, whose token stream takes no such thing: the lineage stops there
    assert proc.returncode != 0 and "does not take data_args" in proc.stderr
    proc = run('projects.backward.lineage', '--recipe=arith', '--phases=sft,rl', '--direction=bidirectional', '--name=ar', *args,
               cwd=arith_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = arith_data / 'experiments'
    config = json.loads((exp / 'ar-rl' / 'config.json').read_text())
    assert config['phase'] == 'rl' and config['direction'] == 'bidirectional' and config['data_source'] == 'rollouts'
    assert json.loads((exp / 'ar-rl' / 'parent_link.json').read_text())['parent'] == str(exp / 'ar-sft')
    log = read_log(exp / 'ar-rl')
    assert {'val_pass1/forward', 'val_pass1/backward'} <= set(log[0])  # a bidirectional model is measured both ways
    proc = run('projects.rl.eval', f'--runs={exp / "ar-rl"}', '--per_level=2', '--k=2', '--k_per_level=1', '--out=res',
               cwd=arith_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((arith_data / 'res.json').read_text())
    r = res['results'][0]
    assert set(r['parent']) == set(r['rl']) == {'forward', 'backward'} and 'control' not in r
    assert [p['level'] for p in res['tests']] == [1, 1, 2, 2, 3, 3, 4, 4]
    for role in ('parent', 'rl'):
        for way in ('forward', 'backward'):
            m = r[role][way]
            assert len(m['right']) == 8 and set(m['right']) <= {0, 1} and len(m['passk']) == 4 and m['length'] >= 0
    assert (arith_data / 'rl_curves.png').stat().st_size > 1000
    assert '| bidirectional | backward | all | 1 |' in (arith_data / 'res.md').read_text()


def test_eval_pairs_rl_with_its_control_and_parent_on_the_same_problems(arith_data):
    """projects/rl/eval.py's paired tests count each problem where exactly one of two models is right, pooled over
    the plan's seeds, and its floors score the same test problems."""
    exp = arith_data / 'experiments'
    args = [a for a in RL_TINY if not a.startswith('--warmup')] + ['--batch_size=8', '--eval_interval=2',
                                                                    '--warmup_iters=0', '--dataset=arith_tiny']
    runs = {}
    for seed in (1, 2):
        sft, rl_run, ctl = exp / f'pe-s{seed}-sft', exp / f'pe-s{seed}-rl', exp / f'pe-s{seed}-ctl'
        for out, extra in ((sft, ['--max_iters=30', '--direction=forward']), (ctl, [f'--init_from={sft}', '--max_iters=2']),
                           (rl_run, [f'--init_from={sft}', '--max_iters=2', '--data_source=rollouts',
                                     "--data_args={'samples': 4, 'max_new_tokens': 48, 'eval_problems': 4}"])):
            proc = run('train.py', f'--out_dir={out}', *args, f'--seed={seed}', *extra, cwd=arith_data)
            assert proc.returncode == 0, proc.stderr[-3000:]
        runs[f'forward-s{seed}'] = {'direction': 'forward', 'seed': seed, 'parent': str(sft), 'rl': str(rl_run),
                                    'control': str(ctl)}
    (arith_data / 'plan.json').write_text(json.dumps({'runs': runs}))
    proc = run('projects.rl.eval', '--plan=plan.json', '--per_level=3', '--k_per_level=0', '--out=pe', cwd=arith_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((arith_data / 'pe.json').read_text())
    tests = res['tests']
    assert len(tests) == 12 and 'passk' not in res['results'][0]['rl']['forward']
    for row in res['paired']:
        m = [t['level'] <= 2 or row['levels'] == 'all' for t in tests]
        a = np.concatenate([np.array(r['rl']['forward']['right'])[m] for r in res['results']]).astype(bool)
        b = np.concatenate([np.array(r[row['b']]['forward']['right'])[m] for r in res['results']]).astype(bool)
        assert row['items'] == len(a) == 2 * sum(m)  # pooled over the two seeds
        assert (row['mcnemar']['a_only'], row['mcnemar']['b_only']) == ((a & ~b).sum(), (b & ~a).sum())
        assert row['bootstrap']['diff'] == pytest.approx(a.mean() - b.mean())
    assert {(row['levels'], row['b']) for row in res['paired']} == {('all', 'control'), ('all', 'parent'),
                                                                    ('1-2', 'control'), ('1-2', 'parent')}
    train = rl.read_problems(str(arith_data / 'data' / 'arith_tiny'), 'train')
    common = arith.most_common_answers(train)
    assert res['floors']['most common train answer'] == [int(common[t['level']] == t['answer']) for t in tests]
    assert res['floors']['last number in the question'] == [int(arith.last_number(t['question']) == t['answer'])
                                                             for t in tests]
    assert '| forward | forward | all | 2 |' in (arith_data / 'pe.md').read_text()


def test_a_recipe_without_the_phase_says_one_line(arith_data):
    proc = run('projects.backward.lineage', '--phases=sft,rl', cwd=arith_data)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("recipe 'lineage' has no rl phase")
    assert '--recipe=arith' in proc.stderr


@pytest.mark.parametrize('offline', [{}, {'HF_HUB_OFFLINE': '1', 'HF_HOME': 'nowhere'}], ids=['no-network', 'hub-offline'])
def test_gsm8k_offline_says_one_line(tmp_path, offline):
    import subprocess
    import sys
    from helpers import REPO
    proc = subprocess.run([sys.executable, '-m', 'prepare.arith', '--gsm8k=True', f'--out={tmp_path / "g"}'], cwd=REPO,
                          env={**ENV, **offline}, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        pytest.skip('GSM8K was reachable here')
    assert len(proc.stderr.strip().splitlines()) == 1 and 'python -m prepare.arith' in proc.stderr, proc.stderr
    assert not (tmp_path / 'g').exists()
