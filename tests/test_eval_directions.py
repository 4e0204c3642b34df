"""projects/backward/eval.py: bits per byte on UTF-8 bytes, the same tokens scored in both directions, the multiple-choice
wrapper against scoring reversed text by hand, next_turn items, and the script end to end on tiny trained runs."""
import importlib.util
import json
import math
import random

import numpy as np
import pytest

from prepare.common import hub_unreachable
import torch

from projects.backward import eval as ev
from helpers import run, train
from model import GPT, GPTConfig
from tokenizer import char_tokenizer, render_conversation

DOCS = ['héllo wörld', 'naïve café: €5', 'ok 日本']  # multi-byte characters: bytes > characters


class Unigram(torch.nn.Module):
    """A fake LM whose next-token distribution ignores the context, so each target's NLL is known."""

    def __init__(self, logits, block_size):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)
        self.config = GPTConfig(block_size=block_size)

    def forward(self, idx, targets=None):
        return self.logits.expand(*idx.shape, -1), None


def char_docs():
    tok = char_tokenizer(''.join(DOCS), specials=('<|bos|>', '<|forward|>', '<|backward|>'))
    return tok, np.array([i for d in DOCS for i in [tok.bos] + tok.encode(d)])


@pytest.mark.parametrize('backward', [False, True])
@pytest.mark.parametrize('marker', [False, True])
def test_bits_per_byte_is_on_utf8_bytes_of_the_text_tokens(backward, marker):
    tok, ids = char_docs()
    logits = torch.randn(tok.vocab_size, generator=torch.Generator().manual_seed(0))
    nll = -logits.log_softmax(-1)
    n_bytes = len(''.join(DOCS).encode('utf-8'))
    want = sum(nll[i].item() for i in tok.encode(''.join(DOCS))) / (math.log(2) * n_bytes)  # BOS, markers: not text
    # block 5 over 3 documents: windows cross documents and the last one is padded; every text token counts once,
    # read either way, so a context-free model gets exactly the same bpb forward and backward
    got = ev.text_loss(Unigram(logits, block_size=5), tok, ids, backward, marker, batch_size=2)
    assert got['bytes'] == n_bytes > len(''.join(DOCS)) and got['tokens'] == len(''.join(DOCS))
    assert got['bpb'] == pytest.approx(want, rel=1e-6)
    assert [b['positions'] for b in got['buckets']] == ['[1, 2)', '[2, 4)', '[4, 6)']
    assert sum(b['tokens'] for b in got['buckets']) == got['tokens']


def test_loss_per_token_matches_the_models_own_loss():
    # an off-by-one between logits and targets would still give a number; the model's own loss says which
    torch.manual_seed(0)
    tok, _ = char_docs()
    model = GPT(GPTConfig(block_size=8, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = np.array(tok.encode((''.join(DOCS) * 3)[:3 * 8 + 1]))  # no specials, 3 full windows
    x, y = (torch.from_numpy(ids[j:j + 24].reshape(3, 8)) for j in (0, 1))
    with torch.no_grad():
        assert ev.text_loss(model, tok, ids, False, False, batch_size=2)['nll'] == pytest.approx(model(x, y)[1].item(), rel=1e-5)


def test_held_out_span_keeps_whole_documents():
    tok, ids = char_docs()
    two_docs = 2 + len(DOCS[0]) + len(DOCS[1])
    assert ev.held_out_span(ids, tok.bos, two_docs + 2).tolist() == ids[:two_docs].tolist()
    assert ev.held_out_span(ids, tok.bos, 5).tolist() == ids[:6].tolist()  # inside the first document: a prefix
    assert ev.held_out_span(ids, tok.bos, 10_000).tolist() == ids.tolist()


def hand_score(model, ids, head):
    """Sum of log P(ids[j] | ids[:j]) for j >= head, one sequence, no batching."""
    x = torch.tensor(ids)[None]
    with torch.no_grad():
        logits, _ = model(x[:, :-1], x[:, 1:])
    logp = logits[0].log_softmax(-1)
    return sum(logp[j - 1, ids[j]].item() for j in range(head, len(ids)))


@pytest.mark.parametrize('direction, backward', [('forward', False), ('backward', True),
                                                 ('bidirectional', False), ('bidirectional', True)])
def test_score_options_equals_scoring_the_text_by_hand(chat_tok, direction, backward):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=40, vocab_size=chat_tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()
    tok, a = chat_tok, chat_tok.special('<|assistant|>')
    prompt = render_conversation(tok, [('user', 'hello'), ('assistant', 'hi! how are you?')]) + [tok.special('<|user|>')]
    options = [tok.encode(t) + [a] for t in ('good, thanks', 'me too', 'why did the chicken cross the road?')]
    scores = ev.score_options(model, tok, direction, backward, prompt, options)
    marker = [tok.special('<|backward|>' if backward else '<|forward|>')] if direction == 'bidirectional' else []
    for opt, score in zip(options, scores):
        body = prompt[1:] + opt
        ids = [tok.bos] + marker + (body[::-1] if backward else body)  # BOS, reversed option, reversed prompt
        assert score == pytest.approx(hand_score(model, ids, 1 + len(marker)), abs=1e-4)


def test_score_options_cuts_a_long_prompt_from_its_oldest_tokens(chat_tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=chat_tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = [chat_tok.bos] + chat_tok.encode('why did the chicken cross the road? to get to the other side')
    options = [chat_tok.encode(' yes'), chat_tok.encode(' no, never')]
    room = 16 + 1 - max(map(len, options))
    scores = ev.score_options(model, chat_tok, 'backward', True, prompt, options)
    kept = prompt[len(prompt) - room + 1:]  # the same prompt for every option: BOS and its newest tokens
    assert scores == pytest.approx([hand_score(model, [chat_tok.bos] + (kept + o)[::-1], 1) for o in options], abs=1e-4)


def conversations(n=16):
    rng = random.Random(0)
    words = 'tea milk night sun rain road chicken joke weather apples'.split()
    return [[(('user', 'assistant')[i % 2], ' '.join(rng.choice(words) for _ in range(rng.randint(1, 8))))
             for i in range(rng.randint(2, 7))] for _ in range(n)]


def test_next_turn_items(chat_tok):
    convs, tok = conversations(), chat_tok
    items = ev.next_turn_items(convs, tok, 64, 20, seed=1)
    assert len(items) == 20 and items == ev.next_turn_items(convs, tok, 64, 20, seed=1)  # deterministic
    assert [it['id'] for it in items] != [it['id'] for it in ev.next_turn_items(convs, tok, 64, 20, seed=2)]
    assert len({it['answer'] for it in items}) > 1  # the answer is not always in the same place
    for it in items:
        c, i = map(int, it['id'].split('.'))
        role, text = convs[c][i]
        end = tok.special(f'<|{convs[c][i + 1][0]}|>') if i + 1 < len(convs[c]) else tok.bos
        assert i > 0 and len(it['options']) == 4 and len(set(it['texts'])) == 4
        assert it['options'][it['answer']] == tok.encode(text) + [end] and it['texts'][it['answer']] == text
        assert all(o[-1] == end for o in it['options'])  # the ending gives nothing away
        L, gap = len(tok.encode(text)), 0
        for k, (d, j) in enumerate(it['sources']):
            if k != it['answer']:  # a distractor: same role, another conversation, similar length
                assert d != c and j > 0 and convs[d][j][0] == role and 0.7 * L <= len(it['options'][k]) - 1 <= 1.3 * L
                gap = max(gap, abs(len(it['options'][k]) - 1 - L))
        # of the nearest lengths: fewer than 3 candidates were nearer (a sum of log-probs favours short options)
        nearer = {t for d, turns in enumerate(convs) if d != c for r, t in turns[1:]
                  if r == role and t != text and abs(len(tok.encode(t)) - L) < gap and len(tok.encode(t)) < 32}
        assert len(nearer) < 3
        assert it['prompt'][0] == tok.bos and it['prompt'][-1] == tok.special(f'<|{role}|>')
        context = next(k for k in range(i) if it['prompt'] == render_conversation(tok, convs[c][k:i]) + [it['prompt'][-1]])
        # whole turns, as many as fit with the longest option and a marker; a single turn may not fit
        assert len(it['prompt']) + max(map(len, it['options'])) <= 64 or context == i - 1
        assert context == 0 or len(render_conversation(tok, convs[c][context - 1:i])) + max(map(len, it['options'])) > 63


def evaluate(workdir, *args):
    proc = run('projects.backward.eval', '--device=cpu', '--eval_tokens=200', *args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_end_to_end_on_a_chat_model(workdir, chat_run, tmp_path):
    out = evaluate(workdir, f'--out_dir={chat_run}', '--mc_items=4', '--tasks=loss,next_turn,arc_easy', f'--eval_dir={tmp_path}')
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['direction'] == 'forward' and set(summary['loss']) == {'forward', 'backward'}
    assert summary['loss']['forward']['bpb'] > 0 and summary['loss']['forward']['bytes'] == summary['loss']['backward']['bytes']
    rows = [json.loads(line) for line in (tmp_path / 'next_turn.forward.jsonl').read_text().splitlines()]
    assert len(rows) == 4 and all(len(r['scores']) == 4 and r['correct'] == (r['pred'] == r['answer']) for r in rows)
    assert summary['mc']['next_turn']['forward'] == sum(r['correct'] for r in rows) / 4
    assert '| model | direction | bpb forward text | bpb backward text | next_turn read forward |' in (tmp_path / 'summary.md').read_text()
    arc = [line for line in out.splitlines() if line.startswith('arc_easy')]
    assert len(arc) == 1  # skipped, or scored where `datasets` is installed and online
    if importlib.util.find_spec('datasets') is None:
        assert arc[0] == 'arc_easy: skipped, the `datasets` package is not installed (pip install datasets)'
    elif hub_unreachable():  # offline: one line, at once, not the datasets library's half minute of retries
        assert arc[0].startswith('arc_easy: skipped, the Hugging Face hub is unreachable')


@pytest.fixture(scope='module')
def char_runs(workdir, char_run):
    """The forward char run, and a backward and a bidirectional one beside it."""
    for direction in ('backward', 'bidirectional'):
        train(workdir, workdir / f'out-char-{direction}', '--max_iters=10', '--eval_interval=10', f'--direction={direction}')
    return [char_run, workdir / 'out-char-backward', workdir / 'out-char-bidirectional']


def test_several_runs_make_one_transfer_table(workdir, char_runs, tmp_path):
    out = evaluate(workdir, f"--out_dir={','.join(map(str, char_runs))}", f'--eval_dir={tmp_path}')
    assert 'next_turn: skipped, the char tokenizer has no <|bos|>, <|user|>, <|assistant|>: not a chat model' in out
    table = out.split('direction transfer:\n')[1].splitlines()
    assert table[0] == '| model | direction | bpb forward text | bpb backward text |' and len(table) == 5
    for run_dir, direction, row in zip(char_runs, ('forward', 'backward', 'bidirectional'), table[2:]):
        summary = json.loads((tmp_path / run_dir.name / 'summary.json').read_text())
        assert summary['direction'] == direction and row.startswith(f'| {run_dir.name} | {direction} |')
        # 200 targets each way; text without BOS: a bidirectional model's marker makes the first token a target too
        assert summary['loss']['forward']['tokens'] == summary['loss']['backward']['tokens'] == 200 + (direction == 'bidirectional')
        assert 'backward - forward' in (tmp_path / run_dir.name / 'summary.md').read_text()


def test_bad_tasks_stop_with_one_line_and_write_nothing(workdir, char_run, tmp_path):
    proc = run('projects.backward.eval', f'--out_dir={char_run}', '--tasks=loss,bogus', f'--eval_dir={tmp_path / "ev"}', cwd=workdir)
    assert proc.returncode == 1 and proc.stderr.strip() == '--tasks=loss,bogus: the tasks are loss, next_turn, arc_easy, comma-separated'
    proc = run('projects.backward.eval', f'--out_dir={char_run}', '--dataset=nope', f'--eval_dir={tmp_path / "ev"}', cwd=workdir)
    assert proc.returncode == 1 and 'no prepared data in data/nope' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'ev').exists()


@pytest.mark.parametrize('backward,marker', [(False, False), (True, False), (True, True)])
def test_nll_by_context_equals_scoring_each_context_alone(backward, marker):
    # brute force: for each target and each c, feed exactly the c tokens before it (as this reading orders the
    # text) and read the last position; stride-1 windows must give the same numbers
    torch.manual_seed(0)
    tok, ids = char_docs()
    ids = np.concatenate([ids] * 3)  # several documents, so that targets have T tokens before them both ways
    model = GPT(GPTConfig(block_size=6, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    targets = ev.position_targets(ids, tok, 6, n=8)
    assert len(targets) == 8 and all(tok.byte_lengths()[ids[targets]] > 0)
    got = ev.nll_by_context(model, tok, ids, targets, backward, marker, batch_size=4)
    stream, pos = ev.oriented_positions(ids, tok, backward, marker)
    assert (stream[pos] == ids).all()  # pos finds every span token in the oriented stream
    for k, t in enumerate(targets):
        for c in range(1, 7):
            x = torch.from_numpy(stream[pos[t] - c:pos[t]])[None]
            with torch.no_grad():
                logits, _ = model(x, x)
            want = -logits[0, -1].log_softmax(-1)[ids[t]].item()
            assert got[k, c - 1] == pytest.approx(want, abs=1e-5), (k, c)
    assert [b['positions'] for b in ev.position_summary(got)] == ['[1, 2)', '[2, 4)', '[4, 7)']


def test_next_turn_items_in_plain_text(chat_tok):
    # a model trained on plain conversations (turns joined by newlines) gets its items in that format
    convs, tok = conversations(), chat_tok
    items = ev.next_turn_items(convs, tok, 64, 20, seed=1, plain=True)
    chat = ev.next_turn_items(convs, tok, 64, 20, seed=1)
    assert len(items) == 20
    roles = {tok.special('<|user|>'), tok.special('<|assistant|>')}
    for it in items:
        c, i = map(int, it['id'].split('.'))
        last = i + 1 == len(convs[c])
        assert it['prompt'][0] == tok.bos and not roles & set(it['prompt'])
        assert tok.decode(it['prompt'][1:]).endswith('\n') and it['texts'][it['answer']] == convs[c][i][1]
        ends = [o[-1] == tok.bos if last else tok.decode(o).endswith('\n') for o in it['options']]
        assert all(ends)  # every option ends the same way: the ending gives nothing away
    assert any(a['prompt'] != b['prompt'] for a, b in zip(items, chat))


def test_overlap_floor_picks_the_option_that_shares_the_most_tokens():
    items = [{'prompt': [0, 5, 6, 7], 'options': [[1, 2], [5, 6], [7, 9], [3]], 'answer': 1},
             {'prompt': [0, 4], 'options': [[4, 8], [1], [2], [3]], 'answer': 2}]
    assert ev.overlap_floor(items) == 0.5  # the first item's answer shares two tokens; the second's shares none
