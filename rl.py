"""
RL on a verifiable task (arith.py's word problems), the last phase of a lineage: base -> mid -> sft -> rl.
The phase is train.py with data_source='rollouts' (data.Rollouts): each micro-batch samples k answers to each of
a few problems from the model being trained (KV-cached generation), scores them with the checker, and weighs
every sampled token's -log p by its answer's advantage, the reward normalized within its group of k (a simplified
GRPO, as nanochat's chat_rl: on-policy, one update per batch, so no ratio or clipping). Optionally, a KL penalty
to the SFT parent comes off the reward. The pieces live here; the loop, checkpoints, DDP and logs are train.py's.

    python -m prepare.arith
    python experiment.py --recipe=arith --phases=sft,rl --direction=backward --name=arith-bw
    python rl.py --runs=experiments/arith-fw-rl,experiments/arith-bw-rl     # pass@1, pass@k: before vs after RL

This file's command line measures RL runs against their parents (the SFT each started from): pass@1 (greedy) and
pass@k (k samples at a temperature) on the test problems, per level and per reading direction (a bidirectional
model both ways), the mean answer length, with runs of the same direction pooled as seeds (mean ± std); and it
plots the reward during RL. Writes rl_results.json, rl_results.md and rl_curves.png.
"""

import json
import os
import sys
from contextlib import nullcontext

import numpy as np
import torch

import arith
from tokenizer import render_prompt, speaker_ids

# -----------------------------------------------------------------------------
runs = ''  # comma-separated RL runs (experiment dirs); each is compared with its parent, the SFT it started from
per_level: '[1, inf)' = 100  # test problems per level
k: '[1, inf)' = 8  # samples per problem for pass@k
temperature: '(0, inf)' = 1.0  # for pass@k's samples
max_new_tokens: '[1, inf)' = 64
out = 'rl_results'  # out.json and out.md (and rl_curves.png beside them)
seed: '[0, 9.2e18]' = 1337
threads: '[0, inf)' = 0
# -----------------------------------------------------------------------------


def prompt(tok, question, backward, marker, max_len):
    """(ids, speakers) of the prompt for an answer to question, as a model of that direction reads it: chat.py's
    prompt for a reply (forward: after the question; backward: before it, written from its last line up)."""
    ids = render_prompt(tok, [('user', question)], max_len, backward, marker)
    return ids, speaker_ids(ids, tok, backward)


def stops(tok):
    """The ids that end an answer: the turn tokens (chat.py's end of a reply, either direction)."""
    return tok.turn_ends


def answer_text(tok, ids, backward):
    """The text of a sampled answer (its ids, perhaps ending with a stop id), in reading order."""
    ids = [t for t in ids if t not in stops(tok)]
    return tok.decode(ids[::-1] if backward else ids)


def reference(tok, solution, backward):
    """The ids of a worked solution as the model writes it: its tokens (reversed, backward) and the turn token
    that ends the answer (as the SFT data's mask teaches: the token after the span)."""
    ids = tok.encode(solution)
    return ids[::-1] + [tok.special('<|assistant|>')] if backward else ids + [tok.special('<|user|>')]


@torch.no_grad()
def rollout(model, prompts, speakers, max_new_tokens, temperature, stop, generator=None, max_rows=256, autocast=None):
    """The answers sampled after each prompt (temperature 0: greedy), each cut after its first stop id. Prompts of
    one length share a batch (k samples of one problem, or a test set's equal-length questions)."""
    was_training = model.training
    model.eval()
    dev, answers, by_len = model.device(), [None] * len(prompts), {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for n, rows in sorted(by_len.items()):
        for c in range(0, len(rows), max_rows):
            chunk = rows[c:c + max_rows]
            x = torch.tensor([prompts[i] for i in chunk], device=dev)
            # each new token is the assistant's (speaker 2), as in training; kinds without speakers ignore it
            s = torch.tensor(np.array([np.append(speakers[i], 2) for i in chunk]).astype(np.int64), device=dev)
            with autocast or nullcontext():
                y = model.generate(x, max_new_tokens, temperature, stop=stop, speakers=s, generator=generator)
            for i, g in zip(chunk, y[:, n:].tolist()):
                cut = next((j + 1 for j, t in enumerate(g) if t in stop), len(g))
                answers[i] = g[:cut]
    model.train(was_training)
    return answers


def attempt(model, tok, picks, marker, max_new_tokens, temperature, generator=None, autocast=None):
    """Ask the model each [(problem, backward)] pick (temperature 0: greedy) and check its answer in reading order.
    Returns the prompts, their speakers, the sampled answers (ids) and their rewards (a tensor): what RL trains on
    and what every evaluation counts."""
    ps = [prompt(tok, p['question'], b, marker, model.config.block_size - max_new_tokens) for p, b in picks]
    prompts, speakers = [i for i, _ in ps], [s for _, s in ps]
    answers = rollout(model, prompts, speakers, max_new_tokens, temperature, stops(tok), generator, autocast=autocast)
    rewards = torch.tensor([arith.check(answer_text(tok, a, b), p['answer']) for a, (p, b) in zip(answers, picks)])
    return prompts, speakers, answers, rewards


def group_advantages(rewards, eps=1e-6):
    """GRPO's advantages of rewards (groups, k): each reward minus its group's mean, over the group's std. Every
    group's sum is 0, and a group whose rewards are all equal (all right, all wrong) has none: nothing to learn."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    return centered / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)


def policy_batch(prompts, answers, speakers, advantages):
    """(x, y, speakers, weights) for the policy gradient: each row a prompt and its sampled answer, right-padded.
    Targets only on the answer's tokens (its stop id too: when to stop was sampled), each weighted by its answer's
    advantage over the batch's answer tokens, so GPT.forward's sum(weight x -log p) is the mean token's
    -advantage x log p, whose gradient is REINFORCE's."""
    seqs = [p + a for p, a in zip(prompts, answers)]
    T, n_tokens = max(map(len, seqs)) - 1, sum(map(len, answers))
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y, s, w = torch.full_like(x, -1), torch.zeros_like(x), torch.zeros(len(seqs), T)
    for i, (p, seq) in enumerate(zip(prompts, seqs)):
        x[i, :len(seq) - 1] = torch.tensor(seq[:-1])
        y[i, len(p) - 1:len(seq) - 1] = torch.tensor(seq[len(p):])
        w[i, len(p) - 1:len(seq) - 1] = float(advantages[i]) / n_tokens
        s[i, :len(seq) - 1] = torch.from_numpy(np.asarray(speakers[i][:len(seq) - 1], dtype=np.int64))
    return x, y, s, w


# -----------------------------------------------------------------------------
# the command line: pass@k before and after RL

def load_run(path, device):
    from common import build_model, load_checkpoint
    from tokenizer import Tokenizer
    ckpt = load_checkpoint(path, device)
    model = build_model(ckpt).to(device).eval()
    return model, Tokenizer(ckpt['tokenizer']), ckpt


def evaluate(model, tok, tests, backward, marker, gen):
    """{level: {pass1, passk, length}} and 'all' of one model read one way, on tests [{question, answer, level}]."""
    picks = [(p, backward) for p in tests]
    _, _, greedy, right = attempt(model, tok, picks, marker, max_new_tokens, 0)
    _, _, _, sampled = attempt(model, tok, [pick for pick in picks for _ in range(k)], marker, max_new_tokens, temperature, gen)
    best = sampled.view(len(tests), k).max(1).values
    rows = [(p['level'], right[j].item(), best[j].item(), len(answer_text(tok, greedy[j], backward))) for j, p in enumerate(tests)]
    out = {}
    for level in sorted({r[0] for r in rows}) + ['all']:
        mine = np.array([r[1:] for r in rows if level in ('all', r[0])], dtype=float)
        out[str(level)] = {'pass1': mine[:, 0].mean(), f'pass{k}': mine[:, 1].mean(), 'length': mine[:, 2].mean()}
    return out


def measure(run, tests, device):
    """{reading direction: evaluate(...)} of a run: both ways for a bidirectional model, else its own."""
    model, tok, ckpt = load_run(run, device)
    ways = ['forward', 'backward'] if ckpt['direction'] == 'bidirectional' else [ckpt['direction']]
    gen = torch.Generator(device=device).manual_seed(seed)
    return {w: evaluate(model, tok, tests, w == 'backward', ckpt['direction'] == 'bidirectional', gen) for w in ways}, ckpt


def spread(xs):
    return f"{100 * np.mean(xs):.1f} ± {100 * np.std(xs):.1f}" if len(xs) > 1 else f"{100 * xs[0]:.1f}"


def table(results):
    """Markdown: one row per (model direction, reading direction, level), before -> after, mean ± std over the RL
    runs (seeds) and over their distinct sft parents."""
    lines = [f"| model | reads | level | RL runs | pass@1 SFT | pass@1 RL | pass@{k} SFT | pass@{k} RL | answer chars SFT | RL |",
             '|---|---|---|---|---|---|---|---|---|---|']
    groups = {}
    for r in results:
        groups.setdefault(r['direction'], []).append(r)
    for direction, rs in groups.items():
        for way in rs[0]['after']:
            for level in rs[0]['after'][way]:
                # before: each distinct parent once (RL seeds from one sft run share it); after: each RL run
                get = lambda when, m: [r[when][way][level][m] for r in (rs if when == 'after' else
                                                                         {r['parent']: r for r in rs}.values())]
                lines.append(f"| {direction} | {way} | {level} | {len(rs)} | {spread(get('before', 'pass1'))} | "
                             f"{spread(get('after', 'pass1'))} | {spread(get('before', f'pass{k}'))} | "
                             f"{spread(get('after', f'pass{k}'))} | {np.mean(get('before', 'length')):.1f} | "
                             f"{np.mean(get('after', 'length')):.1f} |")
    return '\n'.join(lines)


def plot(results, path):
    """The reward (mean of the training rollouts) and the greedy test pass@1 during each RL run."""
    import matplotlib
    from common import read_log
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {'forward': 'tab:blue', 'backward': 'tab:red', 'bidirectional': 'tab:purple'}
    for r in results:
        log = read_log(os.path.join(r['run'], 'log.jsonl'))
        name = os.path.basename(os.path.normpath(r['run']))
        train = [(e['iter'], e['reward']) for e in log if 'reward' in e]
        axes[0].plot(*zip(*train), color=colors.get(r['direction']), alpha=0.8, label=name)
        for key in sorted({k for e in log for k in e if k.startswith('val_pass1')}):  # a bidirectional run: both ways
            evals = [(e['iter'], e[key]) for e in log if key in e]
            axes[1].plot(*zip(*evals), color=colors.get(r['direction']), alpha=0.8, ls='--' if 'backward' in key else '-',
                         label=name + key.removeprefix('val_pass1').replace('/', ', read '))
    axes[0].set(title='reward of the training rollouts', xlabel='RL iteration', ylabel='mean reward')
    axes[1].set(title='greedy pass@1 on test problems (during RL)', xlabel='RL iteration', ylabel='pass@1')
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    from common import configure, die, load_checkpoint, set_threads
    from tqdm import tqdm
    configure(globals(), sys.argv[1:])
    set_threads(threads, 'cpu')
    chosen = [r for r in runs.split(',') if r]
    if not chosen:
        die("name the RL runs to measure: python rl.py --runs=experiments/arith-fw-rl,...")
    for r in chosen:
        if not os.path.isfile(os.path.join(r, 'ckpt.pt')):
            die(f"{r} holds no checkpoint; pass RL runs, e.g. experiments/arith-fw-rl")
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    results = []
    for r in tqdm(chosen, desc='runs'):
        ckpt = load_checkpoint(r)
        if not ckpt.get('parent') or not os.path.isfile(os.path.join(ckpt['parent'], 'ckpt.pt')):
            die(f"{r} has no parent run to compare with (it should be an RL run started from an SFT run)")
        data_dir = os.path.join('data', ckpt['config']['dataset'])
        tests = read_problems(data_dir, 'test')  # every level: what RL on the easy ones does to the hard ones too
        tests = [p for level in sorted({p['level'] for p in tests}) for p in [q for q in tests if q['level'] == level][:per_level]]
        after, _ = measure(r, tests, device)
        before, _ = measure(ckpt['parent'], tests, device)
        results.append({'run': r, 'parent': ckpt['parent'], 'direction': ckpt['direction'], 'before': before, 'after': after})
    md = table(results)
    print(md)
    with open(f'{out}.json', 'w') as f:
        json.dump({'k': k, 'temperature': temperature, 'per_level': per_level, 'results': results}, f, indent=1)
    with open(f'{out}.md', 'w') as f:
        f.write(md + '\n')
    plot(results, os.path.join(os.path.dirname(out) or '.', 'rl_curves.png'))
    print(f"wrote {out}.json, {out}.md and rl_curves.png")


def read_problems(data_dir, split):
    """The problems of a prepared task dir (prepare/arith.py): [{question, solution, answer, level}]."""
    path = os.path.join(data_dir, f'problems_{split}.jsonl')
    if not os.path.isfile(path):
        from common import die
        die(f"{data_dir} has no {split} problems ({path}): prepare them with python -m prepare.arith")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == '__main__':
    main()
