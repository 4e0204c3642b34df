"""
RL on a verifiable task (arith.py's word problems), the last phase of a lineage: base -> mid -> sft -> rl.
The phase is train.py with data_source='rollouts' (dataloader.Rollouts): each micro-batch samples k answers to each of
a few problems from the model being trained (KV-cached generation), scores them with the checker, and weighs
every sampled token's -log p by its answer's advantage, the reward normalized within its group of k (a simplified
GRPO, as nanochat's chat_rl: on-policy, one update per batch, so no ratio or clipping). Optionally, a KL penalty
to the SFT parent comes off the reward. The pieces live here; the loop, checkpoints, DDP and logs are train.py's.

    python -m prepare.arith
    python -m projects.backward.lineage --recipe=arith --phases=sft,rl --direction=backward --name=arith-bw
    python -m projects.rl.eval --runs=experiments/arith-fw-rl,experiments/arith-bw-rl   # pass@1, pass@k: before vs after RL

"""

import json
import os
from contextlib import nullcontext

import numpy as np
import torch

import arith
from tokenizer import render_prompt, speaker_ids


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


def read_problems(data_dir, split):
    """The problems of a prepared task dir (prepare/arith.py): [{question, solution, answer, level}]."""
    path = os.path.join(data_dir, f'problems_{split}.jsonl')
    if not os.path.isfile(path):
        from common import die
        die(f"{data_dir} has no {split} problems ({path}): prepare them with python -m prepare.arith")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

