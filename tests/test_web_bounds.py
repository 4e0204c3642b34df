"""Issue 20: no request can hold the web chat, and a temperature near zero is greedy. Whatever a generation raises
ends that reply with an error event and the next request is served; a reply ends at --max_seconds with a note; every
field and kind setting is bounded before a reply starts (a 400 that says why, chat.py's check too); a body over
--max_body_bytes is a 413 before it is read whole; ChatBERT-RA's pool is made at start; no OpenAPI schema."""
import json
import re
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import torch

import chat_web
from engine import CHATS, chat_for
from helpers import REPO, run
from model import sample_next, tempered
from test_chat_web import ckpt_of, client, events, say, tiny_chatbert, tiny_gpt

HI = [say('hello')]


@contextmanager
def served(app):
    """The app on a free port of 127.0.0.1 under uvicorn (one event loop, real sockets), until the block ends."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=0, log_level='critical'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ask(url, body, timeout=10):
    """The events of one chat request."""
    resp = httpx.post(f'{url}/chat/completions', json=body, timeout=timeout)
    assert resp.status_code == 200, resp.text
    return chat_web.read_events(resp.text.splitlines())


def served_quickly(url):
    """A second request, with the real reply_stream: answered within a second."""
    t0 = time.perf_counter()
    got = ask(url, {'messages': HI, 'max_tokens': 2, 'temperature': 0}, timeout=5)
    return got[-1] == {'done': True} and time.perf_counter() - t0 < 1.0


# -----------------------------------------------------------------------------
# whatever a generation raises, and however long it runs, the server goes on


@pytest.mark.parametrize('error', [RuntimeError('injected'), MemoryError(), KeyError('x'), ZeroDivisionError('1/0')],
                         ids=lambda e: type(e).__name__)
def test_any_exception_ends_the_reply_with_an_error_and_the_next_is_served(chat_tok, monkeypatch, capsys, error):
    bot = chat_for(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    real = bot.reply_stream

    def failing(*a, **k):
        yield 'half a rep'
        raise error
    app = chat_web.make_app(bot, 'tiny')
    with served(app) as url:
        monkeypatch.setattr(bot, 'reply_stream', failing)
        got = ask(url, {'messages': HI}, timeout=5)
        assert got[0] == {'text': 'half a rep'} and type(error).__name__ in got[-1]['error']
        monkeypatch.setattr(bot, 'reply_stream', real)
        assert served_quickly(url)
    logged = [line for line in capsys.readouterr().err.splitlines() if line.startswith('chat_web:')]
    assert len(logged) == 1 and f'a reply failed: {type(error).__name__}' in logged[0] and 'test_web_bounds.py' in logged[0]


def test_a_reply_ends_at_the_deadline_with_a_note_and_the_next_is_served(chat_tok, monkeypatch):
    monkeypatch.setattr(chat_web, 'max_seconds', 0.5)
    bot = chat_for(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    real, made = bot.reply_stream, []

    def endless(*a, **k):
        while True:
            made.append(1)
            time.sleep(0.02)
            yield 'x' * len(made)
    app = chat_web.make_app(bot, 'tiny')
    with served(app) as url:
        monkeypatch.setattr(bot, 'reply_stream', endless)
        t0 = time.perf_counter()
        got = ask(url, {'messages': HI})
        assert time.perf_counter() - t0 < 2 and got[-1]['done'] and '0.5 s' in got[-1]['note']
        assert 'text' in got[-2]  # what it had written by then
        n = len(made)
        time.sleep(0.2)
        assert len(made) <= n + 1  # and the generation stopped
        monkeypatch.setattr(bot, 'reply_stream', real)
        assert served_quickly(url)


def test_a_step_that_outlasts_the_deadline_is_let_go_and_the_next_is_served(chat_tok, monkeypatch, capsys):
    """A single step longer than a whole reply may take (nothing can stop a thread mid-step): the reply ends at the
    deadline, the server waits max_seconds more for the step, then lets it finish alone and serves the next request."""
    monkeypatch.setattr(chat_web, 'max_seconds', 0.3)
    bot = chat_for(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    real = bot.reply_stream

    def stuck(*a, **k):
        yield 'thinking'
        time.sleep(3)
        yield 'never sent'
    app = chat_web.make_app(bot, 'tiny')
    with served(app) as url:
        monkeypatch.setattr(bot, 'reply_stream', stuck)
        got = ask(url, {'messages': HI})
        assert got == [{'text': 'thinking'}, {'done': True, 'note': got[-1]['note']}] and '0.3 s at most' in got[-1]['note']
        monkeypatch.setattr(bot, 'reply_stream', real)
        t0 = time.perf_counter()
        assert ask(url, {'messages': HI, 'max_tokens': 2})[-1] == {'done': True} and time.perf_counter() - t0 < 1.5
    assert 'left to finish alone' in capsys.readouterr().err


# -----------------------------------------------------------------------------
# every field and setting bounded before a reply starts: a 400 with the reason, and nothing generated

BOUNDS = [  # (id, kind, the request's fields beyond the messages, a part of the reason)
    ('temperature-inf', 'gpt', b'"temperature": 1e400', 'temperature: Input should be a finite number'),
    ('temperature-nan', 'gpt', b'"temperature": NaN', 'temperature: Input should be a finite number'),
    ('temperature-negative', 'gpt', b'"temperature": -1e-300', 'temperature'),
    ('temperature-text', 'gpt', b'"temperature": "hot"', 'temperature'),
    ('top_k-huge', 'gpt', b'"top_k": 100000000000000000000000000000', 'top_k: Input should be less than or equal to 2147483647'),
    ('top_k-negative', 'gpt', b'"top_k": -1', 'top_k'),
    ('max_tokens-huge', 'gpt', b'"max_tokens": 1e30', 'max_tokens'),
    ('seed-2**64', 'gpt', b'"seed": 18446744073709551616', 'seed: Input should be less than or equal to 9223372036854775807'),
    ('seed-2**63', 'gpt', b'"seed": 9223372036854775808', 'seed'),
    ('seed-negative', 'gpt', b'"seed": -1', 'seed'),
    ('seed-float', 'gpt', b'"seed": 1.5', 'seed'),
    ('gpt-takes-no-settings', 'gpt', b'"settings": {"steps": 3}', "unknown settings ['steps']; this model takes none"),
    ('steps-100000', 'chatbert_imr', b'"settings": {"steps": 100000}', 'steps must be in [0, 16], got 100000'),
    ('steps-negative', 'chatbert_imr', b'"settings": {"steps": -1}', 'steps must be in [0, 16]'),
    ('steps-text', 'chatbert_imr', b'"settings": {"steps": "many"}', 'steps takes a int'),
    ('steps-inf', 'chatbert_imr', b'"settings": {"steps": 1e400}', 'steps takes a int'),
    ('blocks-0', 'chatbert_imr', b'"settings": {"blocks": 0}', 'blocks must be in [1, 16], got 0'),
    ('blocks-1000', 'chatbert_imr', b'"settings": {"blocks": "1000"}', 'blocks must be in [1, 16], got 1000'),
    ('template-10**15-blanks', 'chatbert_imr', b'"settings": {"template": "I think ___{1000000000000000}"}',
     'template: the template takes 100000000000000'),
    ('template-10**1980-blanks', 'chatbert_imr', b'"settings": {"template": "I think ___{' + b'9' * 1980 + b'}"}',
     'template: a blank ___{99999999...} of 1980 digits is longer than any reply'),
    ('template-many-blanks', 'chatbert_imr', b'"settings": {"template": "' + b'___ ' * 40 + b'"}', 'a reply has room for 15'),
    ('template-no-blank', 'chatbert_imr', b'"settings": {"template": "no blanks here"}', 'template: a template needs at least one blank'),
    ('template-blank-0', 'chatbert_imr', b'"settings": {"template": "I think ___{0}"}', 'template: a blank ___{n} needs n >= 1'),
    ('template-long', 'chatbert_imr', b'"settings": {"template": "' + b'x' * 2001 + b'"}', 'settings: Value error, template may have at most 2000 characters'),
    ('setting-unknown', 'chatbert_imr', b'"settings": {"stepz": 3}', "unknown settings ['stepz']; this model takes ['blocks', 'steps', 'template']"),
]


@pytest.mark.parametrize('kind, fields, reason', [b[1:] for b in BOUNDS], ids=[b[0] for b in BOUNDS])
def test_a_field_or_setting_out_of_bounds_is_a_400_before_anything_is_generated(chat_tok, monkeypatch, kind, fields, reason):
    model = tiny_gpt(chat_tok) if kind == 'gpt' else tiny_chatbert(kind, chat_tok)
    monkeypatch.setattr(CHATS[kind], 'reply_stream', lambda *a, **k: pytest.fail('generation started'))
    body = b'{"messages": [{"role": "user", "content": "hello"}], ' + fields + b'}'
    resp = client(model, chat_tok, ckpt_of(kind)).post('/chat/completions', content=body,
                                                       headers={'Content-Type': 'application/json'})
    assert resp.status_code == 400 and reason in resp.json()['error'], resp.text


def test_settings_in_bounds_still_reply(chat_tok):
    c = client(tiny_chatbert('chatbert_imr', chat_tok), chat_tok, ckpt_of('chatbert_imr'))
    for settings in ({'steps': 16, 'blocks': 16}, {'steps': '0', 'blocks': '1'}, {'template': 'I think ___{10}'}):
        assert events(c.post('/chat/completions', json={'messages': HI, 'settings': settings}))[-1] == {'done': True}


def test_the_page_learns_each_settings_bounds(chat_tok):
    h = client(tiny_chatbert('chatbert_imr', chat_tok), chat_tok, ckpt_of('chatbert_imr')).get('/health').json()
    assert h['settings']['steps'][0] == 'int' and h['settings']['steps'][2] == '[0, 16]' and h['settings']['template'][2] is None


# -----------------------------------------------------------------------------
# request bodies


@pytest.mark.parametrize('how', ['content-length', 'chunked'])
def test_a_body_over_the_limit_is_a_413(chat_tok, monkeypatch, how):
    monkeypatch.setattr(chat_web, 'max_body_bytes', 1000)
    c = client(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    body = json.dumps({'messages': [say('x' * 990)]}).encode()
    content = body if how == 'content-length' else iter([body[:500], body[500:]])  # a generator: no Content-Length
    resp = c.post('/chat/completions', content=content, headers={'Content-Type': 'application/json'})
    assert resp.status_code == 413 and 'over 1,000 bytes' in resp.json()['error']
    small = c.post('/chat/completions', json={'messages': HI, 'max_tokens': 2})  # under it: served
    assert small.status_code == 200 and events(small)[-1] == {'done': True}


def test_a_body_refused_by_its_length_is_never_read():
    """The middleware answers a Content-Length over the limit without reading a byte of the body."""
    sent, read = [], []

    async def receive():
        read.append(1)
        return {'type': 'http.request', 'body': b'x' * 100, 'more_body': True}

    async def send(message):
        sent.append(message)
    app = chat_web.limit_body(lambda *a: pytest.fail('the app was called'))
    scope = {'type': 'http', 'method': 'POST', 'path': '/chat/completions',
             'headers': [(b'content-length', str(100 * 2**20).encode())]}
    import asyncio
    asyncio.run(app(scope, receive, send))
    assert sent[0]['status'] == 413 and not read


def test_a_body_that_arrives_too_slowly_is_a_408(chat_tok, monkeypatch):
    """slowloris: a body a byte at a time holds its connection for BODY_SECONDS, not the server."""
    monkeypatch.setattr(chat_web, 'BODY_SECONDS', 0.5)

    def slow():
        yield b'{"messages": ['
        time.sleep(1.0)
        yield b']}'
    with served(chat_web.make_app(chat_for(tiny_gpt(chat_tok), chat_tok, ckpt_of()), 'tiny')) as url:
        t0 = time.perf_counter()
        out = {}
        thread = threading.Thread(target=lambda: out.update(r=httpx.post(f'{url}/chat/completions', content=slow(), timeout=5)))
        thread.start()
        time.sleep(0.1)
        assert served_quickly(url)  # meanwhile, others are served
        thread.join()
        assert out['r'].status_code == 408 and 'took over 0.5 s' in out['r'].json()['error']
        assert time.perf_counter() - t0 < 3


# -----------------------------------------------------------------------------
# no API schema, and ChatBERT-RA's pool made at start


@pytest.mark.parametrize('path', ['/openapi.json', '/docs', '/redoc'])
def test_no_api_pages_are_served(chat_tok, path):
    assert client(tiny_gpt(chat_tok), chat_tok, ckpt_of()).get(path).status_code == 404


def test_ra_makes_its_pool_at_start_not_under_the_first_request(chat_tok, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = tiny_chatbert('chatbert_ra', chat_tok)
    ckpt = {**ckpt_of('chatbert_ra'), 'path': str(tmp_path / 'ckpt.pt'), 'iter_num': 1, 'best_val_loss': 1.0,
            'config': {'dataset': 'toy'}}  # a saved checkpoint's: its pool is made from data/toy, beside ckpt.pt
    rows, _ = chat_for(model, chat_tok, ckpt).responses(['hi there', 'good, thanks', 'see you later'])
    (tmp_path / 'data' / 'toy').mkdir(parents=True)
    np.save(tmp_path / 'data' / 'toy' / 'train_response.npy', rows.numpy().astype(np.uint16))
    c = client(model, chat_tok, ckpt)
    assert 'embedding' in capsys.readouterr().out and (tmp_path / 'ckpt_pool.faiss').is_file()  # made, and said so
    monkeypatch.setattr('retrieval.ResponsePool.for_checkpoint', lambda *a: pytest.fail('made under a request'))
    assert events(c.post('/chat/completions', json={'messages': HI}))[-1] == {'done': True}


# -----------------------------------------------------------------------------
# sampling: a temperature near zero is greedy, and no setting makes NaN probabilities


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize('temperature', [1e-38, 1e-45, 1e-300, 5e-324])
@pytest.mark.parametrize('top_k, top_p', [(None, None), (5, None), (None, 0.9), (3, 0.5), (10**9, 1.0)])
def test_a_temperature_near_zero_is_greedy(dtype, temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = (torch.randn(8, 300) * 5).to(dtype)
    logits[0, :100] = -float('inf')  # banned tokens, as IMR bans some
    logits[1, :2] = logits[1].max() + 1  # a tie at the top: greedy picks either, argmax the first
    assert not tempered(logits, temperature).isnan().any()
    got = sample_next(logits.clone(), temperature, top_k, top_p)
    assert (logits == logits.max(-1, keepdim=True).values).gather(1, got).all()  # the best, or one of the best
    assert got[0] == logits[0].argmax() and got[1] in (0, 1)


@pytest.mark.parametrize('temperature', [1e-5, 0.7, 1.0, 1e38, 1e300])
def test_no_temperature_makes_nan_probabilities(temperature):
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 5
    logits[0, 10:] = -float('inf')
    logits[1] = 3.0  # all equal
    for top_k, top_p in ((None, None), (1, None), (None, 1e-9), (5, 0.5)):
        assert not tempered(logits, temperature).isnan().any()
        got = sample_next(logits.clone(), temperature, top_k, top_p)
        assert torch.isfinite(logits.gather(1, got)).all()  # never a banned token


@pytest.mark.parametrize('temperature', [1e-300, 5e-324])
def test_imr_refinement_near_zero_is_its_greedy_refinement(chat_tok, temperature):
    model = tiny_chatbert('chatbert_imr', chat_tok)
    context, mask = chat_for(model, chat_tok).context([('user', 'hello')]), chat_tok.special('<|mask|>')
    greedy = list(model.refine(context, 16, mask, steps=4, temperature=0))[-1]
    assert torch.equal(list(model.refine(context, 16, mask, steps=4, temperature=temperature))[-1], greedy)


# -----------------------------------------------------------------------------
# the scripts: sample.py and chat.py at a temperature near zero, chat.py's REPL bounded by the same check


@pytest.mark.parametrize('script, stdin', [('sample.py', None), ('chat.py', 'hello\n/quit\n')])
def test_the_scripts_sample_greedily_at_a_temperature_near_zero(chat_run, script, stdin):
    near = run(script, f'--out_dir={chat_run}', '--device=cpu', '--temperature=1e-300', '--max_new_tokens=6',
               *(['--start=hello', '--num_samples=1'] if script == 'sample.py' else []), stdin=stdin)
    zero = run(script, f'--out_dir={chat_run}', '--device=cpu', '--temperature=0', '--max_new_tokens=6',
               *(['--start=hello', '--num_samples=1'] if script == 'sample.py' else []), stdin=stdin)
    assert near.returncode == 0 and 'Traceback' not in near.stderr, near.stderr
    strip = lambda out: [line for line in out.splitlines() if not re.match(r'config:|\d+ tokens in', line)]
    assert strip(near.stdout) == strip(zero.stdout)  # greedy, as 0 is



def test_chat_py_refuses_a_setting_out_of_bounds_in_one_line_and_goes_on(imr_run, tmp_path):
    said = ['/template I think ___{1000000000000000}', '/template ___{' + '9' * 5000 + '}', '/steps 100000', '/blocks 0', '/steps 1e400',
            '/template ' + '___ ' * 20, '/steps 4', 'hello', '/quit']
    proc = run('chat.py', f'--out_dir={imr_run}', '--device=cpu', stdin='\n'.join(said) + '\n', cwd=tmp_path)
    assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    notes = re.findall(r'You: (\(.*\))', proc.stdout)
    assert notes[:7] == [
        '(/template: the template takes 1000000000000005 tokens with its blanks; a reply has room for 7)',
        '(/template: a blank ___{99999999...} of 5000 digits is longer than any reply)',
        '(/steps must be in [0, 8], got 100000: refinement steps; 0 or 8: one token a step)',
        '(/blocks must be in [1, 8], got 0: semi-autoregressive blocks, filled left to right; 1: the whole reply at once)',
        '(/steps takes a int: refinement steps; 0 or 8: one token a step)',
        '(/template: the template takes 20 tokens with its blanks; a reply has room for 7)',
        '(steps = 4: refinement steps; 0 or 8: one token a step)'], notes
    assert 'Bot: ' in proc.stdout  # and it chats on


# -----------------------------------------------------------------------------
# the page: a refusal or an error shows its reason, a note shows, a stream cut short says so (its stream() in node)

NODE = shutil.which('node')
PAGE_STREAM_CASES = '''
const stream = eval('(' + require('fs').readFileSync(0, 'utf8') + ')');
async function check(resp) {
  global.fetch = async () => resp;
  try { return await stream('/x', {}, () => {}); } catch (e) { return 'threw: ' + e.message; }
}
(async () => console.log(JSON.stringify([
  await check(new Response(JSON.stringify({error: 'seed: Input should be less than or equal to 9223372036854775807'}), {status: 400})),
  await check(new Response(JSON.stringify({error: 'the request body is over 65,536 bytes'}), {status: 413})),
  await check(new Response('data: {"text": "hi"}\\n\\ndata: {"done": true, "note": "cut at the limit"}\\n\\n')),
  await check(new Response('data: {"text": "hi"}\\n\\ndata: {"error": "the reply failed (RuntimeError)"}\\n\\n')),
  await check(new Response('data: {"text": "hi"}\\n\\n')),
])))();
'''


@pytest.mark.skipif(not NODE, reason="no node here to run the page's script")
def test_the_page_says_why_a_request_was_refused_or_cut():
    page = (REPO / 'chat_web.html').read_text(encoding='utf-8')
    source = re.search(r'async function stream[\s\S]*?\n}\n', page)[0]
    proc = subprocess.run([NODE, '-e', PAGE_STREAM_CASES], input=source, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        'threw: seed: Input should be less than or equal to 9223372036854775807',
        'threw: the request body is over 65,536 bytes',
        ['hi', 'cut at the limit'],
        'threw: the reply failed (RuntimeError)',
        'threw: the connection ended before the reply did']
