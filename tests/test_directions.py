"""Backward and bidirectional models end to end: checkpoints carry the direction, fine-tuning inherits it,
sample.py and chat.py read and write in it (a backward model writes what came before, shown in reading order)."""

from common import load_checkpoint
from engine import chat_for
from helpers import run, train
from test_chat import HISTORY, scripted, tiny_chat_model
from tokenizer import orient, reading, render_conversation


def test_a_backward_checkpoint_loads_with_its_direction(workdir, char_data, tmp_path):
    train(workdir, tmp_path, '--max_iters=2', '--eval_interval=2', '--direction=backward')
    ckpt = load_checkpoint(str(tmp_path))
    assert ckpt['direction'] == 'backward' and ckpt['config']['direction'] == 'backward'


def test_fine_tuning_inherits_the_direction_and_refuses_another(workdir, bidir_chat_run, tmp_path):
    train(workdir, tmp_path / 'child', f'--init_from={bidir_chat_run}', '--max_iters=12', '--eval_interval=12', dataset='chat')
    assert load_checkpoint(str(tmp_path / 'child'))['direction'] == 'bidirectional'
    proc = train(workdir, tmp_path / 'other', f'--init_from={bidir_chat_run}', '--direction=forward', '--max_iters=12',
                 dataset='chat', check=False)
    assert proc.returncode != 0 and "conflicts with" in proc.stderr and "direction='bidirectional'" in proc.stderr
    assert not (tmp_path / 'other').exists()


def test_reading_directions():
    assert reading('forward') == (False, False) and reading('backward') == (True, False)
    assert reading('bidirectional') == (False, True) and reading('bidirectional', 'backward') == (True, True)
    for model, asked in (('forward', 'backward'), ('backward', 'forward')):
        try:
            reading(model, asked)
            assert False, 'a one-way model must refuse the other way'
        except ValueError as e:
            assert f'trained {model} only' in str(e)


def test_backward_reply_prompt_is_the_reversed_conversation_and_the_reply_is_in_reading_order(chat_tok):
    # the model writes 'fine thanks' right to left: the tokens of its reading order, reversed, then a turn token
    reply_ids = chat_tok.encode('fine thanks')
    model = scripted(tiny_chat_model(chat_tok, block_size=256), reply_ids[::-1] + [chat_tok.special('<|assistant|>')])
    replies = list(chat_for(model, chat_tok).reply_stream(HISTORY, 20, 0.0, None, None, backward=True, marker=True))
    assert replies[-1] == 'fine thanks'
    assert all(replies[-1].endswith(r) for r in replies)  # it grew at its start
    expected = orient(render_conversation(chat_tok, HISTORY), chat_tok, backward=True, marker=True).tolist()
    assert model.prompts[0] == expected
    assert expected[:2] == [chat_tok.bos, chat_tok.special('<|backward|>')]


def test_backward_prompt_drops_the_newest_turns_first(chat_tok):
    model = scripted(tiny_chat_model(chat_tok, block_size=48), chat_tok.encode('ok'))
    list(chat_for(model, chat_tok).reply_stream(HISTORY, 16, 0.0, None, None, backward=True))
    text = chat_tok.decode(model.prompts[0][::-1])  # read back in reading order
    assert 'first question about apples'[::-1] not in chat_tok.decode(model.prompts[0])  # sanity: tokens, not chars
    assert 'apples' in text and 'plums' not in text  # the oldest turn is next to the reply; the newest went first
    assert len(model.prompts[0]) <= 48 - 16


def test_chat_switches_direction_per_turn(bidir_chat_run):
    proc = run('chat.py', f'--out_dir={bidir_chat_run}', '--device=cpu', '--max_new_tokens=6',
               stdin='/backward\nthe end\n/forward\nhello\n/quit\n')
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '↔ bidirectional' in out and '/forward, /backward' in out
    assert '(now backward' in out and '(now forward' in out and out.count('Bot:') == 2
    assert '(the conversation in reading order:)' in out and '  user: the end' in out


def test_a_forward_chat_refuses_backward(chat_run):
    proc = run('chat.py', f'--out_dir={chat_run}', '--device=cpu', '--max_new_tokens=4', stdin='/backward\nhi\n/quit\n')
    assert proc.returncode == 0 and "(this model was trained forward only; it can't read backward)" in proc.stdout
    assert proc.stdout.count('Bot:') == 1


def test_backward_sample_prints_what_came_before_the_start(workdir, char_data, tmp_path):
    train(workdir, tmp_path, '--max_iters=2', '--eval_interval=2', '--direction=backward')
    proc = run('sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--num_samples=2', '--max_new_tokens=10',
               '--start=ROMEO:')
    assert proc.returncode == 0, proc.stderr
    out = ''.join(line for line in proc.stdout.splitlines(keepends=True) if not line.startswith('config: '))
    samples = out.split('\n---------------\n')[:2]
    # 10 characters written before the start, then the start itself, in reading order
    assert all(s.endswith('ROMEO:') and len(s) > len('ROMEO:') for s in samples), samples
    proc = run('sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--direction=forward')
    assert proc.returncode != 0 and "trained backward only" in proc.stderr
