"""
Evaluate forward, backward and bidirectional LMs on the same held-out text, in both reading directions:
$ python -m projects.backward.eval --out_dir=out-fw
$ python -m projects.backward.eval --out_dir=out-fw,out-bw --tasks=loss          # several: one direction-transfer table
1. loss: bits per byte on the held-out text read forward and read backward (each document reversed, BOS first),
   and the mean NLL per context position bucket (the "arrow of time" gap).
2. next_turn: which of 4 turns comes next in a held-out chitchat conversation (3 distractors by the same role,
   of similar length, from other conversations); arc_easy: ARC-Easy test questions (online, needs `datasets`).
   An option's score is the joint log-likelihood of prompt + option as the model reads them (score_options).
Writes per-example predictions (<task>.<reading direction>.jsonl), summary.json and summary.md to eval_dir.
"""

import os
import sys
import json
import math
import random
from bisect import bisect_left, bisect_right

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import configure, die, setup_device, load_checkpoint, build_model, cannot
from model import sequence_logprobs
from tokenizer import Tokenizer, orient, render_conversation

# -----------------------------------------------------------------------------
out_dir = 'out'  # a run's directory (its ckpt.pt) or a checkpoint file; several, comma-separated, for one table
dataset = ''  # data/<dataset> whose test.bin the loss reads (val.bin if it has none); '' for the checkpoint's own
eval_tokens: '[1, inf)' = 50_000  # held-out tokens scored per reading direction
position_tokens: '[0, inf)' = 0  # > 0: also this many held-out tokens scored at every context length, both ways (paired)
batch_size: '[1, inf)' = 16  # windows per forward pass in the loss
tasks = 'loss,next_turn'  # comma-separated: loss, next_turn, arc_easy (online, needs `pip install datasets`)
mc_items: '[1, inf)' = 200  # items per multiple-choice task
seed: '[0, 9.2e18]' = 1337  # picks the multiple-choice items and their distractors
eval_dir = ''  # where the outputs go; '' for <out_dir>/evaluations (several out_dirs: <eval_dir>/<run name>)
device = 'auto'  # 'auto' | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'
threads: '[0, inf)' = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else the cores idle at start
# -----------------------------------------------------------------------------
TASKS = ('loss', 'next_turn', 'arc_easy')
WAYS = ('forward', 'backward')  # reading directions

# -----------------------------------------------------------------------------
# loss in bits per byte, on the same tokens read forward and backward


def held_out_span(tokens, bos, n):
    """The first n targets' worth of the held-out stream, cut back to whole documents where it holds several, so
    that both directions read complete documents and the same tokens."""
    span = np.asarray(tokens[:n + 1], dtype=np.int64)
    starts = np.flatnonzero(span == bos) if bos is not None and len(tokens) > n + 1 else []
    return span[:starts[-1]] if len(starts) > 1 else span


def windows(ids, T):
    """(x, y), each (N, T): windows of T + 1 tokens that overlap by one, so every token but the first is a
    target exactly once, whichever way the span is read; the last window is padded (targets -1)."""
    n = -(-(len(ids) - 1) // T)
    padded = np.full(n * T + 1, -1, dtype=np.int64)
    padded[:len(ids)] = ids
    x, y = padded[:-1].reshape(n, T), padded[1:].reshape(n, T)
    return np.maximum(x, 0), y  # a padded input is never a target's context: any id will do


@torch.no_grad()
def token_nll(model, x, y, batch_size):
    """Per-target NLL in nats (N, T), 0 where the target is -1."""
    dev, out = next(model.parameters()).device, []
    for i in tqdm(range(0, len(x), batch_size), desc='loss', leave=False, disable=None):
        xb, yb = (torch.from_numpy(a[i:i + batch_size]).to(dev) for a in (x, y))
        logits, _ = model(xb, yb)  # (B, T, V): targets make the model return every position's logits
        nll = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), ignore_index=-1, reduction='none')
        out.append(nll.view(yb.shape).cpu())
    return torch.cat(out).numpy()


def loss_summary(nll, y, byte_lengths):
    """Bits per byte over the targets that are text (special tokens have 0 bytes: not counted), and the mean
    NLL per bucket of context positions [1, 2), [2, 4), [4, 8), ... (position = tokens before the target)."""
    nbytes = np.where(y >= 0, byte_lengths[np.maximum(y, 0)], 0)
    text = nbytes > 0
    T = y.shape[1]
    bucket = np.broadcast_to([p.bit_length() - 1 for p in range(1, T + 1)], y.shape)  # floor(log2(position))
    buckets = []
    for b in range(T.bit_length()):
        counted = text & (bucket == b)
        if counted.any():
            buckets.append({'positions': f'[{2**b}, {min(2**(b + 1), T + 1)})', 'tokens': int(counted.sum()),
                            'nll': float(nll[counted].mean())})
    return {'bpb': float(nll[text].sum() / (math.log(2) * nbytes.sum())), 'nll': float(nll[text].mean()),
            'tokens': int(text.sum()), 'bytes': int(nbytes.sum()), 'buckets': buckets}


def text_loss(model, tok, span, backward, marker, batch_size):
    x, y = windows(orient(span, tok, backward, marker), model.config.block_size)
    return loss_summary(token_nll(model, x, y, batch_size), y, tok.byte_lengths())

# -----------------------------------------------------------------------------
# the loss at every context length, on the same tokens both ways: the arrow of time by position, paired


def oriented_positions(span, tok, backward, marker):
    """(ids, pos): span as a model of that reading reads it, and pos[i], where span's token i sits in ids."""
    ids, where = orient(span, tok, backward, marker, mask=np.arange(1, len(span) + 1))  # 0: an inserted marker
    pos = np.empty(len(span), dtype=np.int64)
    pos[where[where > 0] - 1] = np.flatnonzero(where > 0)
    return ids, pos


def position_targets(span, tok, T, n):
    """The first n text tokens of span (in span order) that have at least T tokens before them read forward and
    read backward, so that every context length 1..T exists for each of them both ways: the same targets for
    every model and reading."""
    ok = tok.byte_lengths()[span] > 0
    for backward in (False, True):
        ok &= oriented_positions(span, tok, backward, False)[1] >= T  # a marker only moves tokens later
    return np.flatnonzero(ok)[:n]


@torch.no_grad()
def nll_by_context(model, tok, span, targets, backward, marker, batch_size):
    """(len(targets), T): each target's NLL given exactly c tokens before it as this reading orders the text,
    for c = 1..T (column c - 1). Stride-1 windows: the window that starts c tokens before a target predicts it
    at position c - 1, so one pass over the windows gives every target at every context length."""
    T = model.config.block_size
    ids, pos = oriented_positions(span, tok, backward, marker)
    p = pos[targets]
    first = p.min() - T  # the first window any target needs
    starts = np.arange(first, p.max())
    x = np.stack([ids[s:s + T] for s in starts])
    y = np.stack([ids[s + 1:s + T + 1] for s in starts])
    nll = token_nll(model, x, y, batch_size)  # (windows, T)
    c = np.arange(1, T + 1)
    return nll[p[:, None] - c[None, :] - first, c[None, :] - 1]


def position_summary(nll):
    """Mean NLL per context length, bucketed as loss_summary buckets positions (c = 1, [2, 4), [4, 8), ...)."""
    T = nll.shape[1]
    return [{'positions': f'[{2**b}, {min(2**(b + 1), T + 1)})', 'nll': float(nll[:, 2**b - 1:min(2**(b + 1), T + 1) - 1].mean())}
            for b in range(T.bit_length())]

# -----------------------------------------------------------------------------
# multiple choice


@torch.no_grad()
def score_options(model, tok, direction, backward, prompt_ids, options_ids):
    """The joint log-likelihood of prompt + option as the model reads it (read backward: BOS, the option
    reversed, then the prompt reversed; a bidirectional model after its marker), summed over every token after
    BOS and the marker. prompt_ids starts with BOS. Read forward, log P(prompt) is common to all options, so
    this ranks them as log P(option | prompt) does; read backward it is the equivalent that the model can
    compute. A prompt too long for the block loses its oldest tokens after BOS, the same for every option."""
    marker = direction == 'bidirectional'
    head = 1 + marker  # BOS and the marker are given, not scored
    room = model.config.block_size + 1 - marker - max(map(len, options_ids))  # +1: the last token is no input
    if room < 1:
        raise ValueError(f"an option of {max(map(len, options_ids))} tokens does not fit the block")
    prompt = list(prompt_ids[:1]) + list(prompt_ids[max(1, len(prompt_ids) - room + 1):])
    seqs = [orient(prompt + list(opt), tok, backward, marker) for opt in options_ids]
    return sequence_logprobs(model, seqs, [head] * len(seqs))


def next_turn_items(convs, tok, block_size, n, seed, plain=False):
    """n items from conversations [(role, text), ...]: a turn (not the first) after the turns before it (the
    oldest dropped to fit the block), against 3 turns (not first turns) by the same role from other conversations of the nearest
    token lengths (within 30%), so length gives nothing away. All 4 end with the token that ends this turn (the
    next turn's role token, or BOS), so the ending gives nothing away either. Deterministic given the seed.
    plain=True renders them as a model trained on plain text (prepare.chitchat --format=plain) read them: turns
    joined by newlines, no role tokens; an option then ends with its newline (or BOS, if it ends the conversation)."""
    role_id = {r: tok.special(f'<|{r}|>') for r in ('user', 'assistant')}
    enc = [[tok.encode(text) for _, text in turns] for turns in convs]

    def render(context, role):  # the prompt: the turns before, and what starts the next one
        if plain:
            return [tok.bos] + tok.encode('\n'.join(text for _, text in context) + '\n')
        return render_conversation(tok, context) + [role_id[role]]
    # distractors are never a conversation's first turn, as the answer never is: openers ("hi, how are you?") are
    # far likelier than any reply, and would pull a model below chance
    pool = {r: sorted((len(enc[c][i]), c, i) for c, turns in enumerate(convs) for i, (role, _) in enumerate(turns)
                      if role == r and i > 0) for r in role_id}
    lengths = {r: [p[0] for p in pool[r]] for r in role_id}
    slots = [(c, i) for c, turns in enumerate(convs) for i in range(1, len(turns))]
    rng = random.Random(seed)
    rng.shuffle(slots)
    items = []
    for c, i in slots:
        if len(items) == n:
            break
        (role, text), L = convs[c][i], len(enc[c][i])
        if not 0 < L < block_size // 2:  # options take at most half the block; the context has the rest
            continue
        for k in range(int(0.3 * L) + 1):  # the nearest lengths first: a sum of log-probs favours short options
            lo, hi = bisect_left(lengths[role], L - k), bisect_right(lengths[role], min(L + k, block_size // 2 - 1))
            # distinct texts only: two equal options would make an item ambiguous ("lol" is in many conversations)
            others = {convs[d][j][1]: (d, j) for _, d, j in pool[role][lo:hi] if d != c and convs[d][j][1] != text}
            if len(others) >= 3:
                break
        else:
            continue
        sources = [(c, i)] + rng.sample(list(others.values()), 3)
        rng.shuffle(sources)
        last = i + 1 == len(convs[c])
        if plain:
            options = [tok.encode(convs[d][j][1]) + [tok.bos] if last else tok.encode(convs[d][j][1] + '\n') for d, j in sources]
        else:
            options = [enc[d][j] + [tok.bos if last else role_id[convs[c][i + 1][0]]] for d, j in sources]
        context = convs[c][:i]
        prompt = render(context, role)
        # the oldest turns go until prompt + option fit the block with room for a marker; a single turn still
        # too long loses its oldest tokens in score_options
        while len(prompt) > block_size - max(map(len, options)) and len(context) > 1:
            context = context[1:]
            prompt = render(context, role)
        items.append({'id': f'{c}.{i}', 'prompt': prompt, 'options': options, 'answer': sources.index((c, i)),
                      'texts': [convs[d][j][1] for d, j in sources], 'sources': sources})
    return items


def overlap_floor(items):
    """The accuracy of a rule with no model: pick the option that shares the most distinct tokens with the prompt
    (ties: the first). The floor a likelihood should beat, and a check that the items carry signal."""
    picks = [max(range(len(it['options'])), key=lambda k: len(set(it['options'][k]) & set(it['prompt']))) for it in items]
    return float(np.mean([p == it['answer'] for p, it in zip(picks, items)]))


def arc_items(tok, n, seed):
    """ARC-Easy test questions as items, or one line saying why they can't be had."""
    try:
        from datasets import load_dataset
    except ImportError:
        return "the `datasets` package is not installed (pip install datasets)"
    from prepare.common import hub_unreachable
    if hub_unreachable():
        return hub_unreachable()
    try:
        rows = load_dataset('allenai/ai2_arc', 'ARC-Easy', split='test')
    except Exception as e:  # offline, the hub's errors come in many types
        return f"allenai/ai2_arc could not be loaded ({type(e).__name__}; offline?)"
    order = random.Random(seed).sample(range(len(rows)), min(n, len(rows)))
    return [{'id': r['id'], 'prompt': [tok.bos] + tok.encode(f"Question: {r['question']}\nAnswer:"),
             'options': [tok.encode(' ' + t) for t in r['choices']['text']], 'texts': r['choices']['text'],
             'answer': r['choices']['label'].index(r['answerKey'])} for r in map(rows.__getitem__, order)]


def task_items(task, tok, block_size, n, seed, plain=False):
    """A task's items, or why it is skipped. plain: the model read its conversations as plain text."""
    if task == 'next_turn':
        if None in (tok.bos, tok.special('<|user|>'), tok.special('<|assistant|>')):
            return f"the {tok.kind} tokenizer has no <|bos|>, <|user|>, <|assistant|>: not a chat model"
        try:
            from splits import split_conversations
            return next_turn_items(split_conversations()['test'], tok, block_size, n, seed, plain)
        except ImportError:
            return "the chitchat-dataset package is not installed (pip install -r requirements.txt)"
        except ValueError as e:  # a char tokenizer of other text (the arithmetic task's) lacks chitchat's characters
            return f"the {tok.kind} tokenizer can't write chitchat's conversations ({e}): not a chitchat model"
    if tok.bos is None:
        return f"the {tok.kind} tokenizer has no <|bos|> to start a question from"
    return arc_items(tok, n, seed)


def run_mc(task, items, model, tok, direction, out):
    """Accuracy per reading direction (the model's own; both for a bidirectional one); each prediction goes to
    <out>/<task>.<way>.jsonl."""
    acc = {}
    for way in WAYS if direction == 'bidirectional' else (direction,):
        with open(os.path.join(out, f'{task}.{way}.jsonl'), 'w') as f:
            hits = 0
            for it in tqdm(items, desc=f'{task} read {way}', leave=False, disable=None):
                scores = score_options(model, tok, direction, way == 'backward', it['prompt'], it['options'])
                pred = int(np.argmax(scores))
                hits += pred == it['answer']
                f.write(json.dumps({'id': it['id'], 'answer': it['answer'], 'pred': pred,
                                    'correct': pred == it['answer'], 'scores': scores, 'options': it['texts']}) + '\n')
        acc[way] = hits / len(items)
        chance = np.mean([1 / len(it['options']) for it in items])
        print(f"{task} read {way}: accuracy {acc[way]:.3f} over {len(items)} items (chance {chance:.2f})")
    return acc

# -----------------------------------------------------------------------------
# the summary tables


def transfer_table(summaries):
    """One row per model: its direction, bpb on forward and on backward text, MC accuracy per reading direction."""
    mc = list(dict.fromkeys(t for s in summaries for t in s['mc']))
    head = ['model', 'direction', 'bpb forward text', 'bpb backward text'] + [f'{t} read {w}' for t in mc for w in WAYS]
    rows = [[s['model'], s['direction']] + [f"{s['loss'][w]['bpb']:.4f}" if w in s['loss'] else '-' for w in WAYS]
            + [f"{s['mc'][t][w]:.3f}" if w in s['mc'].get(t, {}) else '-' for t in mc for w in WAYS] for s in summaries]
    return '\n'.join('| ' + ' | '.join(r) + ' |' for r in [head, ['---'] * len(head)] + rows)


def arrow_table(loss):
    """Mean NLL per context bucket, read forward and backward: the arrow of time is their gap."""
    rows = ['| context positions | NLL forward text | NLL backward text | backward - forward |', '| --- | --- | --- | --- |']
    for f, b in zip(loss['forward']['buckets'], loss['backward']['buckets']):
        rows.append(f"| {f['positions']} | {f['nll']:.4f} | {b['nll']:.4f} | {b['nll'] - f['nll']:+.4f} |")
    return '\n'.join(rows)


def check_data(ckpt):
    """A one-line stop, before anything is written, if the loss has no held-out text this model can read."""
    d = ckpt['data_dir']
    if not all(os.path.isfile(os.path.join(d, f)) for f in ('val.bin', 'meta.json', 'tokenizer.json')):
        die(f"no prepared data in {d} (val.bin, meta.json, tokenizer.json) for {ckpt['path']}; pass --dataset")
    if not os.path.isfile(os.path.join(d, 'test.bin')):
        print(f"note: {d} has no test.bin (prepared before splits.py); the loss reads val.bin, which runs select on")
    if Tokenizer.load(os.path.join(d, 'tokenizer.json')).info != ckpt['tokenizer']:
        die(f"{d} was made with another tokenizer than {ckpt['path']}'s model; pass --dataset")


def evaluate(ckpt, several):
    """Every task on one checkpoint; writes its predictions and summary, returns the summary."""
    name = os.path.basename(os.path.dirname(os.path.abspath(ckpt['path'])))  # the run's directory
    out = eval_dir or os.path.join(os.path.dirname(ckpt['path']), 'evaluations')
    out = os.path.join(out, name) if eval_dir and several else out
    model = build_model(ckpt).to(device).eval()
    tok, direction, data_dir = Tokenizer(ckpt['tokenizer']), ckpt['direction'], ckpt['data_dir']
    s = {'model': name, 'checkpoint': ckpt['path'], 'direction': direction, 'iter_num': ckpt.get('iter_num'),
         'dataset': data_dir, 'loss': {}, 'mc': {}, 'skipped': {}}
    print(f"{name}: a {direction} model at iter {ckpt.get('iter_num')}, on {data_dir}; writing {out}")
    os.makedirs(out, exist_ok=True)
    with autocast:
        if 'loss' in task_list:
            # test: the text no run trained or selected on (val picked best.pt)
            s['split'] = 'test' if os.path.isfile(os.path.join(data_dir, 'test.bin')) else 'val'
            with open(os.path.join(data_dir, 'meta.json')) as f:
                held = np.memmap(os.path.join(data_dir, f"{s['split']}.bin"), dtype=json.load(f)['dtype'], mode='r')
            span = held_out_span(held, tok.bos, eval_tokens)
            for way in WAYS:  # a bidirectional model reads each way behind that way's marker
                loss = s['loss'][way] = text_loss(model, tok, span, way == 'backward', direction == 'bidirectional', batch_size)
                print(f"{way} text: {loss['bpb']:.4f} bits per byte ({loss['tokens']:,} tokens, {loss['bytes']:,} bytes)")
            if position_tokens:  # paired: the same targets, every context length, each way the model reads
                targets = position_targets(np.asarray(held, dtype=np.int64), tok, model.config.block_size, position_tokens)
                s['positions'] = {'targets': len(targets)}
                for way in WAYS if direction == 'bidirectional' else (direction,):
                    nll = nll_by_context(model, tok, np.asarray(held, dtype=np.int64), targets, way == 'backward',
                                         direction == 'bidirectional', batch_size)
                    np.save(os.path.join(out, f'positions.{way}.npy'), nll.astype(np.float32))
                    s['positions'][way] = position_summary(nll)
                    print(f"{way} reading, {len(targets):,} targets at every context length: NLL {nll.mean():.4f}")
        for task, items in ckpt['items'].items():
            if isinstance(items, str) or not items:
                s['skipped'][task] = items or "no item fits the model's block"
                print(f"{task}: skipped, {s['skipped'][task]}")
                continue
            s['mc'][task] = run_mc(task, items, model, tok, direction, out)
            s.setdefault('mc_floor', {})[task] = overlap_floor(items)  # the same items with no model
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2)
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write(transfer_table([s]) + '\n' + (f"\n{arrow_table(s['loss'])}\n" if s['loss'] else ''))
    return s


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    task_list = list(dict.fromkeys(tasks.split(',')))
    if not set(task_list) <= set(TASKS):
        die(f"--tasks={tasks}: the tasks are {', '.join(TASKS)}, comma-separated")
    *_, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
    # every check before anything is written: each checkpoint loads, and its held-out text is there and fits it
    ckpts = [load_checkpoint(p) for p in out_dir.split(',') if p]
    for ckpt in ckpts:
        if why := cannot(ckpt, 'score', ckpt['path']):  # the kind first: its data and tokenizer are no text to score
            die(why)
        ckpt['data_dir'] = os.path.join('data', dataset or ckpt['config']['dataset'])
        if 'loss' in task_list:
            check_data(ckpt)
        # the multiple-choice items, or why this model can't do a task (skipped); a model that can do none stops here
        tok = Tokenizer(ckpt['tokenizer'])
        meta = os.path.join(ckpt['data_dir'], 'meta.json')
        plain = os.path.isfile(meta) and json.load(open(meta)).get('format') == 'plain'  # trained without role tokens
        ckpt['items'] = {t: task_items(t, tok, ckpt['model_args'].get('block_size', 0), mc_items, seed, plain)
                         for t in task_list if t != 'loss'}
        undoable = [f"{t}: {i or 'no item fits the block'}" for t, i in ckpt['items'].items() if isinstance(i, str) or not i]
        if 'loss' not in task_list and len(undoable) == len(ckpt['items']):
            die(f"{ckpt['path']} can do none of --tasks={tasks} ({'; '.join(undoable)}); evaluate it on its own held-out text with --tasks=loss")
    summaries = [evaluate(ckpt, len(ckpts) > 1) for ckpt in ckpts]
    if len(summaries) > 1:
        print(f"\ndirection transfer:\n{transfer_table(summaries)}")
