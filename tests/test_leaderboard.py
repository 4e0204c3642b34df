"""projects/leaderboard/eval.py: a backward model's ranking score against a brute-force pass over the reversed
conversation, and the leaderboard end to end on tiny runs (floors, a forward and a bidirectional model)."""
import json

import pytest
import torch

from engine import chat_for
from helpers import run
from model import GPT, GPTConfig
from projects.leaderboard import eval as lb
from tokenizer import orient, render_conversation


@pytest.mark.parametrize('marker', [False, True])
def test_history_given_reply_is_the_backward_log_prob_of_the_history(chat_tok, marker):
    torch.manual_seed(0)
    tok = chat_tok
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32)).eval()
    torch.nn.init.normal_(model.transformer.wte.weight, std=1.0)  # peaked logits: an off-by-one would show
    history, replies = [('user', 'hi, how are you?'), ('assistant', 'good'), ('user', 'nice')], ['ok', 'me too, thanks']
    got = lb.history_given_reply(chat_for(model, tok), marker)(history, replies)
    for (lp, n), r in zip(got, replies):
        reply = tok.encode(r) + [tok.special('<|user|>')]
        ids = orient(render_conversation(tok, history) + [tok.special('<|assistant|>')] + reply, tok, True, marker)
        x = torch.tensor(ids)[None]
        with torch.no_grad():
            logits, _ = model(x, x)
        logp = logits[0, :-1].log_softmax(-1).gather(1, x[0, 1:, None])[:, 0]
        start = 1 + marker + len(reply)  # the reply (read first) is given; the history after it is scored
        assert lp == pytest.approx(logp[start - 1:].sum().item(), abs=1e-4) and n == len(ids) - start
    assert got[0][1] == got[1][1]  # the same history tokens for every candidate: sums rank them


@pytest.mark.slow  # minutes: BM25 over every training conversation, the teacher, two tiny models
def test_leaderboard_end_to_end(workdir, chat_run, bidir_chat_run, tmp_path):
    out = tmp_path / 'lb'
    proc = run('projects.leaderboard.eval', f'--models=tiny={chat_run},bi={bidir_chat_run},gone=nowhere',
               '--n_pairs=20', '--n_boot=100', '--max_new_tokens=4', f'--out={out}', cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'gone is left out: no run at nowhere' in proc.stdout
    got = json.loads((tmp_path / 'lb.json').read_text())
    rows = {r['name']: r for r in got['rows']}
    assert [r['floor'] for r in got['rows']] == [True] * 4 + [False] * 3
    assert set(rows) >= {'tiny', 'bi (read forward)', 'bi (read backward: ranks by P(history | reply))'}
    for r in got['rows']:  # every interval holds its number
        for k, (lo, hi) in r['intervals'].items():
            assert lo - 1e-9 <= r[k] <= hi + 1e-9, (r['name'], k)
    assert rows['tiny']['response_ppl'] > 1 and 'chrf' not in rows['bi (read backward: ranks by P(history | reply))']
    echo = rows['floor: copy the last turn']
    assert echo['coherence'] == max(r['coherence'] for r in got['rows'] if 'coherence' in r)  # echo wins coherence
    md = (tmp_path / 'lb.md').read_text()
    assert md.count('\n| ') >= 8 and 'tiny − floor:' in md
    (tmp_path / 'lb.md').unlink()  # written again from the JSON alone, scoring nothing
    proc = run('projects.leaderboard.eval', '--tables_only=True', f'--out={out}', cwd=workdir)
    assert proc.returncode == 0 and (tmp_path / 'lb.md').read_text() == md, proc.stderr[-2000:]
