"""
One web chat for every nanolab model (README "Web chat"): a FastAPI server and one self-contained page
(chat_web.html: no CDN, works offline), replies streamed as they form, as server-sent events.
$ python chat_web.py --out_dir=out-quickstart          # then open http://127.0.0.1:8000
$ python chat_web.py --out_dir=out-quickstart --load_clients=8 --load_requests=5   # a load test on 127.0.0.1
Endpoints where nanochat's chat_web.py has them, and two more:
  GET  /                  the page
  GET  /health            the model: kind, direction, parameters, and what the page can do with it
  POST /chat/completions  {"messages": [{"role": "user"|"assistant", "content": "..."}, ...]} and optionally
                          "temperature", "top_k", "max_tokens", "seed", "direction" (a bidirectional model's way for
                          this turn) and "settings" (the kind's chat settings, e.g. {"steps": 8}) -> an event stream
                          of {"text": the reply so far}, ending with {"done": true} (or {"error": why}; a reply cut at
                          --max_seconds ends {"done": true, "note": why})
  POST /rewrite           {"draft": "..."} and the same sampling fields -> the rewrite, streamed the same way
  POST /candidates        {"messages": [...], "k": 5} -> {"candidates": [[score, text], ...]} (a retrieval model)
The reply is chat.py's (the kind's engine.Chat: the same rendering, truncation and stopping), and what the page
offers comes from what that Chat declares (its features and settings), never from the kind's name. Messages are in
reading order; backward, the newest message is the first, and the reply comes before it. One reply is generated at
a time (a lock); a client that disconnects stops its generation at the next token.
No request can hold the server: every field and setting is bounded before a reply starts (a 400 that says which and
why; the kind's settings by its Chat's options, as in chat.py), a body over --max_body_bytes is a 413 before it is read
whole (one still arriving after BODY_SECONDS a 408), a reply ends at --max_seconds with a note, and whatever a
generation raises ends that reply with an error event (and one line in the server's log). What is slow to make for a
model (ChatBERT-RA's response pool) is made at start, never under the lock.
"""

import os
import sys
import json
import time
import asyncio
import threading
import traceback
from contextlib import nullcontext
from typing import Literal

import torch

from common import configure, die, setup_device, load_checkpoint, build_model, cannot, make_hint, need
from engine import cannot_chat, chat_for
from tokenizer import Tokenizer, reading

# -----------------------------------------------------------------------------
out_dir = 'out'  # a run's directory, or the path of a checkpoint file
host = '127.0.0.1'  # only this machine; --host=0.0.0.0 serves the network (mind who can reach it)
port: '[1, 65535]' = 8000
max_new_tokens: '[1, inf)' = 256  # the most a reply may have: a request's max_tokens is capped by it
temperature: '[0, inf)' = 0.7  # a request's default; 0 = greedy
top_k: '[0, inf)' = 50
top_p: '(0, 1]' = 0.95
max_message_chars: '[1, inf)' = 2000  # the longest message (or draft) a request may hold
max_messages: '[1, inf)' = 64  # the longest history a request may hold
max_seconds: '(0, inf)' = 60.0  # a reply still being generated after this long ends there, with a note
max_body_bytes: '[1, inf)' = 65536  # a request body over this is refused (413) before it is read whole
seed: '[0, 9223372036854775807]' = 1337  # a request's default: the same seed and history give chat.py's reply
device = 'auto'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'
threads: '[0, inf)' = 0
load_clients: '[0, inf)' = 0  # > 0: instead of serving, a load test: this many clients at once, on 127.0.0.1 only
load_requests: '[1, inf)' = 5  # the load test's requests per client, one after another
# -----------------------------------------------------------------------------
HERE = os.path.dirname(os.path.abspath(__file__))
ARROWS = {'forward': '→', 'backward': '←', 'bidirectional': '↔'}
BODY_SECONDS = 10  # a request body still arriving after this long is a 408: a slow sender holds its connection, no more


def abilities(bot, name):
    """What the page can do with this checkpoint (bot: its engine.Chat): chat (chat.py's test), rewrite (a lineage tuned
    on rewrite pairs), list candidates (a retriever), and the kind's own chat settings. Dies if it can do none of them."""
    why_not = cannot_chat(bot.tok, bot.ckpt, name)
    can = {'chat': not why_not,
           'rewrite': 'rewrite' in bot.features and 'rewrite' in (bot.ckpt.get('formats') or []),
           'candidates': not why_not and 'candidates' in bot.features,
           'settings': {k: [t.__name__, what, rule] for k, (t, rule, what) in bot.settings.items()}}
    if not (can['chat'] or can['rewrite']):
        die(f"not supported by this checkpoint: {why_not}")
    return can


def log_failure(what, e):
    """One line in the server's log for an exception nobody expected: what failed, with what, and where."""
    frames = traceback.extract_tb(e.__traceback__)
    at = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ''
    print(f"chat_web: {what} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}{at}", file=sys.stderr, flush=True)


def limit_body(app):
    """ASGI middleware: a request's body is read here, whole, before the app sees it, and refused if it is over
    max_body_bytes (a 413 by its Content-Length before a byte is read; a chunked one as soon as it passes the limit) or
    still arriving after BODY_SECONDS (a 408). The app then reads it from memory."""
    from starlette.responses import JSONResponse

    async def limited(scope, receive, send):
        if scope['type'] != 'http':
            return await app(scope, receive, send)
        refuse = lambda status, why: JSONResponse({'error': why}, status_code=status)(scope, receive, send)
        too_large = f"the request body is over {max_body_bytes:,} bytes (chat_web.py --max_body_bytes)"
        length = dict(scope['headers']).get(b'content-length', b'')
        if length.isdigit() and int(length) > max_body_bytes:
            return await refuse(413, too_large)
        chunks, size, more, until = [], 0, True, time.monotonic() + BODY_SECONDS
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, until - time.monotonic()))
            except asyncio.TimeoutError:
                return await refuse(408, f"the request body took over {BODY_SECONDS} s to arrive")
            if message['type'] != 'http.request':
                return  # the client went away
            chunks.append(message.get('body', b''))
            size, more = size + len(chunks[-1]), message.get('more_body', False)
            if size > max_body_bytes:
                return await refuse(413, too_large)
        body = [{'type': 'http.request', 'body': b''.join(chunks), 'more_body': False}]

        async def replay():  # the body, then what the client does next (going away, say)
            return body.pop() if body else await receive()
        await app(scope, replay, send)
    return limited


def make_app(bot, name, autocast=None):
    """The FastAPI app that serves one model, bot: its engine.Chat (chat_for(model, tok, ckpt)); name: where it came
    from. The settings it reads (limits, defaults) are this module's globals. What is slow to make for the model
    (bot.prepare(): ChatBERT-RA's response pool) is made here, at start."""
    need('fastapi', 'requirements-web.txt')  # the server is not the core's: one line if it isn't installed
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, Field, field_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException

    can = abilities(bot, name)
    if can['chat']:
        bot.prepare()  # before any request: never under the lock, where it would hold every other reply
    model, tok, ckpt = bot.model, bot.tok, bot.ckpt
    way = ckpt['direction']
    lock = asyncio.Lock()  # one generation at a time: they share the model (and the global RNG a seed sets)
    app = FastAPI(title='nanolab chat', docs_url=None, redoc_url=None, openapi_url=None)  # no API pages to serve
    app.add_middleware(limit_body)

    class Message(BaseModel):
        role: Literal['user', 'assistant']
        content: str = Field(max_length=max_message_chars)

    class Sampling(BaseModel):  # every field bounded here: what is out of bounds is a 400 before a reply starts
        temperature: float | None = Field(None, ge=0, allow_inf_nan=False)  # near 0 is greedy (model.sample_next)
        top_k: int | None = Field(None, ge=0, le=2**31 - 1)  # past the vocabulary (or a retriever's pool): all of it
        max_tokens: int | None = Field(None, ge=1, le=2**31 - 1)  # and capped by --max_new_tokens
        seed: int | None = Field(None, ge=0, le=2**63 - 1)  # torch.manual_seed takes up to 2**64 - 1

    class ChatRequest(Sampling):
        messages: list[Message] = Field(max_length=max_messages)
        direction: Literal['forward', 'backward'] | None = None
        settings: dict[str, str | int | float] = {}  # the kind's, each checked by its Chat's options (engine.py)

        @field_validator('settings')
        @classmethod
        def short_texts(cls, settings):
            long = [k for k, v in settings.items() if isinstance(v, str) and len(v) > max_message_chars]
            if long:
                raise ValueError(f"{long[0]} may have at most {max_message_chars} characters, as a message may")
            return settings

    class RewriteRequest(Sampling):
        draft: str = Field(max_length=max_message_chars)

    class CandidatesRequest(BaseModel):
        messages: list[Message] = Field(max_length=max_messages)
        k: int = Field(5, ge=1, le=100)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        """A 400 with a reason: the body isn't a JSON object, or one line per field that's wrong, e.g.
        "messages.0.content: String should have at most 2000 characters"."""
        errors = exc.errors()
        if any(e['type'] == 'json_invalid' or tuple(e['loc']) == ('body',) for e in errors):
            why = 'the body must be a JSON object, e.g. {"messages": [{"role": "user", "content": "hi"}]}'
        else:
            why = '; '.join('.'.join(str(p) for p in e['loc'][1:]) + ': ' + e['msg'] for e in errors)
        return JSONResponse({'error': why}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        """Every other refusal like the ones above, {"error": why}; a body that won't parse says why (a latin-1 byte,
        a number of 5,000 digits, JSON nested too deep)."""
        cause = exc.__cause__ if exc.status_code == 400 else None
        why = f"the body isn't JSON this server can read: {' '.join(str(cause).split())[:200]}" if cause else exc.detail
        return JSONResponse({'error': why}, status_code=exc.status_code, headers=exc.headers)

    def refuse(what):
        return JSONResponse({'error': what}, status_code=400)

    def history_of(messages):
        """[(role, text)] of the messages, empty ones left out; a reason instead if there is nothing to answer."""
        history = [(m.role, m.content.strip()) for m in messages if m.content.strip()]
        if not history:
            return None, "no message to answer: say something"
        try:
            for _, text in history:
                tok.encode(text)
        except ValueError as e:  # a character a char-level model never saw
            return None, f"{e}; say it another way"
        return history, ''

    def knobs(req):
        return dict(temperature=temperature if req.temperature is None else req.temperature,
                    top_k=top_k if req.top_k is None else req.top_k, top_p=top_p,
                    max_new_tokens=min(req.max_tokens or max_new_tokens, max_new_tokens))

    def stream(request, replies, rng_seed):
        """The event stream of a reply generator (text so far, each time it changes), generated in a thread that
        stops when the client goes away or at the deadline (max_seconds, then a last event with a note). Whatever the
        generation raises ends the reply with an error event; the lock is let go in every case."""
        async def events():
            async with lock:
                loop, queue, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
                put = lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)

                def work():
                    try:
                        torch.manual_seed(rng_seed)
                        with autocast or nullcontext():
                            for text in replies():
                                if stop.is_set():
                                    return
                                put({'text': text})
                        put({'done': True})
                    except ValueError as e:  # what the model can't do with this request, e.g. a draft too long
                        put({'error': str(e)})
                    except Exception as e:  # a bug: said once in the server's log, and the server goes on
                        log_failure('a reply', e)
                        put({'error': f"the reply failed ({type(e).__name__}); the server's log says where"})
                worker = threading.Thread(target=work, daemon=True)
                worker.start()
                deadline = time.monotonic() + max_seconds
                try:
                    while True:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            note = f"cut here: a reply may take {max_seconds:g} s at most (--max_seconds)"
                            yield sse({'done': True, 'note': note})
                            break
                        try:
                            event = await asyncio.wait_for(queue.get(), timeout=min(1.0, left))
                        except asyncio.TimeoutError:  # a slow step: still there?
                            if await request.is_disconnected():
                                break
                            continue
                        yield sse(event)
                        if 'done' in event or 'error' in event:
                            break
                finally:
                    stop.set()  # a client gone mid-reply (or the deadline) stops the generation at its next step
                    await asyncio.to_thread(worker.join, max_seconds)
                    if worker.is_alive():  # a step longer than a whole reply may take: let go of it, not the server
                        print(f"chat_web: a reply's step ran past {max_seconds:g} s after its end; left to finish alone",
                              file=sys.stderr, flush=True)
        return StreamingResponse(events(), media_type='text/event-stream', headers={'Cache-Control': 'no-cache'})

    @app.get('/', response_class=HTMLResponse)
    async def page():
        with open(os.path.join(HERE, 'chat_web.html'), encoding='utf-8') as f:
            return f.read()

    @app.get('/health')
    async def health():
        return {'status': 'ok', 'out_dir': name, 'kind': ckpt['model_kind'], 'direction': way, 'arrow': ARROWS[way],
                'parameters': model.get_num_params(), 'formats': ckpt.get('formats') or [],
                'max_new_tokens': max_new_tokens, 'max_message_chars': max_message_chars, 'max_messages': max_messages,
                **can}

    @app.post('/chat/completions')
    async def completions(req: ChatRequest, request: Request):
        if not can['chat']:
            return refuse(f"not supported by this checkpoint: {cannot_chat(tok, ckpt, name)}")
        history, why = history_of(req.messages)
        if why:
            return refuse(why)
        try:
            settings = bot.options(req.settings)  # the kind's bounds: the same check as chat.py's
            backward, marker = reading(way, req.direction or '')
        except ValueError as e:
            return refuse(str(e))
        if history[0 if backward else -1][0] != 'user':
            return refuse("the message to answer must be the user's: the newest one (the first one, backward)")
        return stream(request, lambda: bot.reply_stream(history, **knobs(req), backward=backward, marker=marker, **settings),
                      seed if req.seed is None else req.seed)

    @app.post('/rewrite')
    async def rewrite(req: RewriteRequest, request: Request):
        if not can['rewrite']:
            return refuse(f"not supported by this checkpoint: {name} was never fine-tuned on rewrite pairs (vibejam)")
        draft, why = history_of([Message(role='user', content=req.draft)])
        if why:
            return refuse(why)
        k = knobs(req)
        return stream(request, lambda: bot.rewrite_stream(draft[0][1], k['max_new_tokens'], k['temperature'], k['top_k'],
                                                          k['top_p']), seed if req.seed is None else req.seed)

    @app.post('/candidates')
    async def candidates(req: CandidatesRequest):
        if not can['candidates']:
            return refuse(f"not supported by this checkpoint: {name} generates its replies, it has no candidates to list")
        history, why = history_of(req.messages)
        if why:
            return refuse(why)
        async with lock:
            try:
                found = await asyncio.to_thread(bot.candidates, history, req.k)
            except Exception as e:  # a bug: said once in the server's log, and the server goes on
                log_failure('a candidates list', e)
                return JSONResponse({'error': f"listing candidates failed ({type(e).__name__})"}, status_code=500)
        return {'candidates': [[round(s, 4), t] for s, t in found]}

    return app


def sse(event):
    """One server-sent event of a dict."""
    return f"data: {json.dumps(event)}\n\n"


def read_events(lines):
    """The events of a server-sent event stream's lines, as dicts."""
    return [json.loads(line[len('data: '):]) for line in lines if line.startswith('data: ')]


def run_load_test(app, clients, requests):
    """clients threads, each sending `requests` chat requests one after another to the app served on 127.0.0.1 (a
    free port); returns completed and failed counts and the latency percentiles (whole reply, first text)."""
    httpx, uvicorn = need('httpx', 'requirements-web.txt'), need('uvicorn', 'requirements-web.txt')
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=0, log_level='warning'))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    messages = ["hi, how are you?", "what do you do for fun?", "tell me about your weekend", "do you like music?"]
    results = []

    def client(c):
        with httpx.Client(timeout=600) as http:
            for r in range(requests):
                body = {'messages': [{'role': 'user', 'content': messages[(c + r) % len(messages)]}], 'seed': c * 1000 + r}
                t0, first, ok = time.perf_counter(), None, False
                try:
                    with http.stream('POST', f"{url}/chat/completions", json=body) as resp:
                        for line in resp.iter_lines():  # line by line, as they arrive
                            for event in read_events([line]):
                                if first is None:  # the first event: the first text, or the end of an empty reply
                                    first = time.perf_counter()
                                ok = ok or bool(event.get('done'))
                except httpx.HTTPError:
                    pass
                results.append((ok, time.perf_counter() - t0, (first or time.perf_counter()) - t0))
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server.should_exit = True
    done = sorted(s for ok, s, _ in results if ok)
    firsts = sorted(f for ok, _, f in results if ok)
    pct = lambda xs, q: round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None
    return {'clients': clients, 'requests_each': requests, 'completed': len(done), 'failed': len(results) - len(done),
            'wall_s': round(wall, 2), 'requests_per_s': round(len(done) / wall, 2),
            **{f'latency_p{int(q * 100)}_s': pct(done, q) for q in (0.5, 0.9, 0.99)},
            **{f'first_text_p{int(q * 100)}_s': pct(firsts, q) for q in (0.5, 0.9, 0.99)}}


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    *_, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
    if not os.path.exists(out_dir):
        die(f"no run at {out_dir}: {make_hint(out_dir, 'train one first (python train.py config/quickstart.py), or pass --out_dir=RUN')}")
    ckpt = load_checkpoint(out_dir, device)
    if why := cannot(ckpt, 'chat', out_dir):  # before its tokenizer is built: an approximator's is no chat tokenizer
        die(f"not supported by this checkpoint: {why}")
    model, tok = build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer'])
    app = make_app(chat_for(model, tok, ckpt), out_dir, autocast)
    if load_clients:
        res = run_load_test(app, load_clients, load_requests)
        print(json.dumps(res, indent=2))
        os.makedirs('bench', exist_ok=True)
        with open(os.path.join('bench', 'chat_web_load.json'), 'w') as f:
            json.dump({'out_dir': out_dir, 'max_new_tokens': max_new_tokens, **res}, f, indent=2)
        sys.exit()
    uvicorn = need('uvicorn', 'requirements-web.txt')
    print(f"serving {out_dir} ({ckpt['model_kind']}, {ARROWS[ckpt['direction']]} {ckpt['direction']}) on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level='warning')
