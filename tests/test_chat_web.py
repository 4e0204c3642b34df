"""chat_web.py's API: replies stream as chat.py's, every model kind through what it provides, /health, bad input
answered with a 400 and a reason, the limits, one generation at a time, and a client that leaves stops its reply."""
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

import chat_web
from common import MODELS, build_model, load_checkpoint
from engine import GPTChat, IMRChat, chat_for
from helpers import run
from model import GPT, GPTConfig
from tokenizer import Tokenizer


def ckpt_of(kind='gpt', direction='forward', formats=('chat',)):
    """What make_app reads of a checkpoint."""
    return {'model_kind': kind, 'direction': direction, 'formats': list(formats)}


def tiny_gpt(tok, block_size=64):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)).eval()


def tiny_chatbert(kind, tok):
    config_cls, model_cls = MODELS[kind]
    torch.manual_seed(0)
    return model_cls(config_cls(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, causal=False,
                                response_len=16, pad_id=tok.special('<|pad|>'))).eval()


def client(model, tok, ckpt, name='tiny'):
    return TestClient(chat_web.make_app(chat_for(model, tok, ckpt), name))


def events(resp):
    assert resp.status_code == 200 and resp.headers['content-type'].startswith('text/event-stream'), resp.text
    return chat_web.read_events(resp.text.splitlines())


def say(text, role='user'):
    return {'role': role, 'content': text}


def test_a_reply_streams_as_growing_text_and_ends_done(chat_tok):
    c = client(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    got = events(c.post('/chat/completions', json={'messages': [say('hello there')], 'max_tokens': 12, 'temperature': 1.0}))
    texts = [e['text'] for e in got if 'text' in e]
    assert got[-1] == {'done': True} and len(texts) >= 2
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # each event the reply so far, forward


def test_health_reports_kind_direction_and_parameters(chat_tok):
    model = tiny_gpt(chat_tok)
    for direction, arrow in (('forward', '→'), ('backward', '←'), ('bidirectional', '↔')):
        h = client(model, chat_tok, ckpt_of(direction=direction)).get('/health').json()
        assert (h['kind'], h['direction'], h['arrow'], h['parameters']) == ('gpt', direction, arrow, model.get_num_params())
        assert h['chat'] and not h['rewrite'] and not h['candidates']


def test_the_page_is_self_contained(chat_tok):
    page = client(tiny_gpt(chat_tok), chat_tok, ckpt_of()).get('/')
    assert page.status_code == 200 and '<script>' in page.text and '/chat/completions' in page.text
    assert 'http://' not in page.text and 'https://' not in page.text  # no CDN: it works offline


@pytest.mark.parametrize('direction', ['forward', 'backward', 'bidirectional'])
def test_the_page_and_chat_py_give_the_same_reply(chat_run, direction, bidir_chat_run):
    """The same seed and history: the same reply from the server as from chat.py's CLI (its first reply)."""
    out = bidir_chat_run if direction == 'bidirectional' else chat_run
    ckpt = load_checkpoint(str(out), 'cpu')
    ckpt = {**ckpt, 'direction': 'backward'} if direction == 'backward' else ckpt  # the same model read backward
    model, tok = build_model(ckpt).eval(), Tokenizer(ckpt['tokenizer'])
    body = {'messages': [say('hello')], 'seed': 7, 'temperature': 0.9, 'top_k': 20, 'max_tokens': 10}
    web = [e['text'] for e in events(client(model, tok, ckpt).post('/chat/completions', json=body)) if 'text' in e]
    torch.manual_seed(7)
    backward = direction == 'backward'
    cli = chat_for(model, tok, ckpt).reply([('user', 'hello')], 10, 0.9, 20, chat_web.top_p, backward=backward,
                                           marker=direction == 'bidirectional')
    assert (web[-1] if web else '') == cli
    if direction == 'forward':  # and chat.py itself, as a user runs it
        proc = run('chat.py', f'--out_dir={out}', '--device=cpu', '--seed=7', '--temperature=0.9', '--top_k=20',
                   '--max_new_tokens=10', stdin='hello\n/quit\n')
        assert proc.returncode == 0 and f"Bot: {cli}" in proc.stdout, proc.stdout


def test_a_bidirectional_model_takes_a_direction_per_turn(bidir_chat_run):
    ckpt = load_checkpoint(str(bidir_chat_run), 'cpu')
    model, tok = build_model(ckpt).eval(), Tokenizer(ckpt['tokenizer'])
    c = client(model, tok, ckpt)
    for way in ('forward', 'backward'):
        body = {'messages': [say('hello')], 'seed': 1, 'max_tokens': 8, 'direction': way}
        web = [e['text'] for e in events(c.post('/chat/completions', json=body)) if 'text' in e]
        torch.manual_seed(1)
        want = chat_for(model, tok, ckpt).reply([('user', 'hello')], 8, chat_web.temperature, chat_web.top_k,
                                                chat_web.top_p, backward=way == 'backward', marker=True)
        assert (web[-1] if web else '') == want
    bad = c.post('/chat/completions', json={'messages': [say('hello')], 'direction': 'sideways'})
    assert bad.status_code == 400 and 'direction' in bad.json()['error']


def test_a_backward_reply_answers_the_first_message_and_reads_in_order(chat_tok):
    model = tiny_gpt(chat_tok)
    c = client(model, chat_tok, ckpt_of(direction='backward'))
    history = [say('the ending'), say('a reply', 'assistant')]  # backward: the first message is the one to answer
    assert events(c.post('/chat/completions', json={'messages': history, 'max_tokens': 4}))[-1] == {'done': True}
    wrong = c.post('/chat/completions', json={'messages': history[::-1]})
    assert wrong.status_code == 400 and "the user's" in wrong.json()['error']


@pytest.mark.parametrize('kind', ['chatbert_ed', 'chatbert_imr', 'chatbert_ra'])
def test_every_chatbert_kind_chats_through_its_own_reply_stream(kind, chat_tok):
    from retrieval import ResponsePool
    model = tiny_chatbert(kind, chat_tok)
    bot = chat_for(model, chat_tok, ckpt_of(kind))
    if kind == 'chatbert_ra':  # its pool, of a few responses
        rows, _ = bot.responses(['hi there', 'good, thanks', 'see you later'])
        bot.pool = ResponsePool.build(model, chat_tok, rows.numpy(), bot.stops)
    c = TestClient(chat_web.make_app(bot, 'tiny'))
    h = c.get('/health').json()
    assert h['kind'] == kind and h['candidates'] == (kind == 'chatbert_ra')
    assert set(h['settings']) == set(bot.settings)
    body = {'messages': [say('hello')], 'seed': 3, 'temperature': 0}
    texts = [e['text'] for e in events(c.post('/chat/completions', json=body)) if 'text' in e]
    torch.manual_seed(3)
    assert texts[-1] == bot.reply([('user', 'hello')], chat_web.max_new_tokens, 0, chat_web.top_k, chat_web.top_p)
    if kind == 'chatbert_imr':  # the refinement itself streams: masks first, filled in step by step
        assert IMRChat.MASK_SHOWN in texts[0] and IMRChat.MASK_SHOWN not in texts[-1] and len(texts) > 2
        filled = events(c.post('/chat/completions', json={**body, 'settings': {'template': 'I think ___ is good'}}))
        assert filled[-1] == {'done': True} and filled[-2]['text'].startswith('I think') and filled[-2]['text'].endswith('is good')
        too_long = c.post('/chat/completions', json={**body, 'settings': {'template': 'I think ___ ' * 8}})
        assert too_long.status_code == 400 and 'a reply has room for' in too_long.json()['error']  # before it starts
        bad = c.post('/chat/completions', json={**body, 'settings': {'steps': 'many'}})
        assert bad.status_code == 400
    if kind == 'chatbert_ra':
        found = c.post('/candidates', json={'messages': [say('hello')], 'k': 2}).json()['candidates']
        assert len(found) == 2 and found[0][0] >= found[1][0] and texts[-1] == found[0][1]  # greedy: the best one
    else:
        assert c.post('/candidates', json={'messages': [say('hello')]}).status_code == 400


def test_a_rewrite_model_gets_a_rewrite_box_and_no_chat(chat_tok, monkeypatch):
    model = tiny_gpt(chat_tok)
    said = chat_tok.encode('hey you') + [chat_tok.bos] + chat_tok.encode(' never shown')
    monkeypatch.setattr(model, 'generate_stream', lambda x, *a, **k: (torch.tensor([[t]]) for t in said))
    c = client(model, chat_tok, ckpt_of(formats=('text', 'rewrite')))
    h = c.get('/health').json()
    assert h['rewrite'] and not h['chat']
    assert events(c.post('/rewrite', json={'draft': 'Hello you.'}))[-2:] == [{'text': 'hey you'}, {'done': True}]
    refused = c.post('/chat/completions', json={'messages': [say('hi')]})
    assert refused.status_code == 400 and 'not supported by this checkpoint' in refused.json()['error']
    chatty = client(tiny_gpt(chat_tok), chat_tok, ckpt_of())
    assert 'never fine-tuned on rewrite' in chatty.post('/rewrite', json={'draft': 'Hello.'}).json()['error']


def test_a_checkpoint_that_cannot_be_served_is_refused_in_one_line(char_run, chat_tok, tmp_path):
    from model_approximator import Approximator, ApproximatorConfig
    student = Approximator(ApproximatorConfig(vocab_size=10, teacher_dim=8, n_embd=8, n_head=2))
    with pytest.raises(SystemExit, match="not supported by this checkpoint: tiny's model .approximator. doesn't chat; embed with it"):
        chat_web.make_app(chat_for(student, chat_tok, ckpt_of('approximator')), 'tiny')
    proc = run('chat_web.py', f'--out_dir={char_run}', '--device=cpu', cwd=tmp_path)  # no chat tokens, no rewrite
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and 'not supported by this checkpoint' in lines[0], proc.stderr
    proc = run('chat_web.py', '--out_dir=nope', cwd=tmp_path)
    assert proc.returncode != 0 and 'no run at nope' in proc.stderr


BAD = [('not-json', b'{not json', 'must be a JSON object'),
       ('a-list', b'[1, 2]', 'must be a JSON object'),
       ('no-messages', b'{}', 'messages: Field required'),
       ('bad-role', b'{"messages": [{"role": "bot", "content": "hi"}]}', "messages.0.role"),
       ('only-empty', b'{"messages": [{"role": "user", "content": "   "}]}', 'no message to answer'),
       ('negative-temperature', b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 'temperature'),
       ('settings-not-a-dict', b'{"messages": [{"role": "user", "content": "hi"}], "settings": "x"}', 'settings: Input should be a valid dictionary'),
       ('zero-max-tokens', b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 'max_tokens'),
       ('unknown-setting', b'{"messages": [{"role": "user", "content": "hi"}], "settings": {"steps": 2}}', 'unknown settings'),
       ('answer-the-assistant', b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "the user's")]


@pytest.mark.parametrize('body, reason', [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_a_400_and_a_reason(chat_tok, body, reason):
    resp = client(tiny_gpt(chat_tok), chat_tok, ckpt_of()).post('/chat/completions', content=body,
                                                                headers={'Content-Type': 'application/json'})
    assert resp.status_code == 400 and reason in resp.json()['error'] and 'Traceback' not in resp.text


def test_limits_on_message_length_history_and_reply(chat_tok, monkeypatch):
    monkeypatch.setattr(chat_web, 'max_message_chars', 50)
    monkeypatch.setattr(chat_web, 'max_messages', 3)
    monkeypatch.setattr(chat_web, 'max_new_tokens', 5)
    model = tiny_gpt(chat_tok)
    c = client(model, chat_tok, ckpt_of())
    long = c.post('/chat/completions', json={'messages': [say('x' * 51)]})
    assert long.status_code == 400 and 'at most 50 characters' in long.json()['error']
    many = c.post('/chat/completions', json={'messages': [say('a'), say('b', 'assistant')] * 2})
    assert many.status_code == 400 and 'at most 3 items' in many.json()['error']
    asked = []
    real = model.generate_stream
    monkeypatch.setattr(model, 'generate_stream', lambda x, n, *a, **k: asked.append(n) or real(x, n, *a, **k))
    events(c.post('/chat/completions', json={'messages': [say('hi')], 'max_tokens': 1000}))
    assert asked == [5]  # capped by the server


def test_an_empty_message_in_the_history_is_left_out(chat_tok, monkeypatch):
    model = tiny_gpt(chat_tok)
    seen = []
    monkeypatch.setattr(GPTChat, 'reply_stream', lambda bot, history, **k: seen.append(history) or iter(['ok']))
    c = client(model, chat_tok, ckpt_of())
    events(c.post('/chat/completions', json={'messages': [say('hi'), say('', 'assistant'), say('there')]}))
    assert seen == [[('user', 'hi'), ('user', 'there')]]


def test_concurrent_requests_are_served_one_at_a_time_and_whole(chat_tok, monkeypatch):
    model = tiny_gpt(chat_tok)
    running, overlaps = [0], []

    def slow(bot, history, **k):  # a reply that takes a while, and notes whether another one runs beside it
        running[0] += 1
        overlaps.append(running[0])
        for i in range(5):
            time.sleep(0.01)
            yield history[-1][1] + '!' * (i + 1)
        running[0] -= 1
    monkeypatch.setattr(GPTChat, 'reply_stream', slow)
    got = {}
    with client(model, chat_tok, ckpt_of()) as c:  # one event loop for every request, as under uvicorn

        def ask(i):
            got[i] = events(c.post('/chat/completions', json={'messages': [say(f'message {i}')]}))
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert max(overlaps) == 1  # never two generations at once
    assert all(got[i][-2] == {'text': f'message {i}!!!!!'} for i in range(4))  # each its own reply, whole


def test_a_client_that_leaves_stops_the_generation(chat_tok, monkeypatch):
    import uvicorn
    import httpx
    model = tiny_gpt(chat_tok)
    made = []

    def endless(bot, history, **k):
        while True:
            made.append(1)
            time.sleep(0.005)
            yield 'x' * len(made)
    monkeypatch.setattr(GPTChat, 'reply_stream', endless)
    server = uvicorn.Server(uvicorn.Config(chat_web.make_app(chat_for(model, chat_tok, ckpt_of()), 'tiny'), host='127.0.0.1',
                                           port=0, log_level='warning'))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    with httpx.stream('POST', f'{url}/chat/completions', json={'messages': [say('hi')]}) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i > 10:
                break  # the client goes away mid-reply
    deadline = time.time() + 10
    while time.time() < deadline:  # the server notices within its 1 s poll, or at the next event it can't send
        n = len(made)
        time.sleep(0.5)
        if len(made) == n:
            break
    assert len(made) == n  # nothing more generated
    monkeypatch.setattr(GPTChat, 'reply_stream', lambda *a, **k: iter(['ok']))
    after = httpx.post(f'{url}/chat/completions', json={'messages': [say('hi')]}, timeout=5)  # the lock was let go
    assert chat_web.read_events(after.text.splitlines()) == [{'text': 'ok'}, {'done': True}]
    server.should_exit = True


def test_the_load_test_completes_every_request_and_orders_its_percentiles(chat_tok):
    app = chat_web.make_app(chat_for(tiny_gpt(chat_tok), chat_tok, ckpt_of()), 'tiny')
    res = chat_web.run_load_test(app, clients=3, requests=2)
    assert (res['completed'], res['failed']) == (6, 0)
    assert 0 < res['first_text_p50_s'] <= res['latency_p90_s'] and res['latency_p50_s'] <= res['latency_p90_s'] <= res['latency_p99_s']
