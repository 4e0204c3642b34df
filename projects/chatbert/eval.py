"""
ChatBERT's results table (projects/chatbert/README.md): every approach on one held-out test set, the table the source's paper
left blank. Rows: BM25 retrieval (no model), the GPT baseline, ChatBERT-ED, ChatBERT-RA, ChatBERT-IMR at several
refinement step counts, and FIB (the IMR model filling templates made from the test replies).
$ python -m projects.chatbert.eval        # -> projects/chatbert/chatbert_results.md, .json, .png (~10 min, 2 CPU cores)
The test set: held-out (history, reply) pairs of chitchat's test conversations (splits.py: no run trained, selected
without), one per conversation, the reply short enough for every model to score whole (response_len - 1 tokens).
Every generating row replies greedily (temperature 0), so the table is reproducible.
Train the runs first: python train.py config/chatbert_{gpt,ed,ra,imr}.py
Mine FIB templates from the training replies: python -m projects.chatbert.eval --templates=20
"""

import json
import math
import os
import re
import sys
from collections import Counter

import torch

import convmetrics
import teacher
from common import build_model, configure, die, load_checkpoint, setup_device
from engine import BM25Chat, chat_for
from splits import split_conversations
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
runs = {'GPT': 'out-chatbert-gpt', 'ED': 'out-chatbert-ed', 'RA': 'out-chatbert-ra', 'IMR': 'out-chatbert-imr'}
ckpt_name = 'best.pt'  # each run's best checkpoint by val loss (keep_best), else its ckpt.pt
n_pairs: '[20, inf)' = 300
imr_steps = [1, 2, 4, 8, 16, 32]  # refinement steps; 32 is one token a step
imr_blocks: '[1, inf)' = 8  # the same again in this many semi-autoregressive blocks (LLaDA), for steps >= blocks
fib_iterations: '[1, inf)' = 4  # Mask-Predict iterations per fill
keep_words: '[1, inf)' = 100  # a template keeps the training replies' most frequent words and blanks the rest
templates: '[0, inf)' = 0  # > 0: print this many of the most frequent reply templates and stop
max_new_tokens: '[1, inf)' = 32
seed: '[0, 9.2e18]' = 0
out = 'projects/chatbert/chatbert_results'  # .md, .json, .png: where the project's README reads them
device = 'cpu'
threads: '[0, inf)' = 0
# -----------------------------------------------------------------------------


def load(run):
    """The run's Chat (engine.chat_for): its model, tokenizer and checkpoint."""
    path = os.path.join(run, ckpt_name)
    ckpt = load_checkpoint(path if os.path.isfile(path) else run)
    return chat_for(build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer']), ckpt)


def template_of(text, keep):
    """text with every run of words not in keep (lowercased) as one ___ blank: 'i like pizza a lot' -> 'i like ___ a lot'."""
    out = []
    for word in text.split():
        if word.lower() in keep:
            out.append(word)
        elif not out or out[-1] != '___':
            out.append('___')
    return ' '.join(out)


def frequent_words(convs, n):
    return {w for w, _ in Counter(w.lower() for turns in convs for _, t in turns for w in t.split()).most_common(n)}


def row(name, res, **extra):
    return {'approach': name, **extra, **{k: v for k, v in res.items() if k != 'samples'}, 'samples': res.get('samples', [])}


COLUMNS = [('params_M', 'params (M)', '{:.2f}'), ('ms_per_reply', 'ms/reply', '{:.0f}'),
           ('response_nll', 'response NLL', '{}'), ('response_ppl', 'ppl', '{}'), ('hits@1/20', 'R@1/20', '{:.3f}'),
           ('mrr', 'MRR', '{:.3f}'), ('bleu2', 'BLEU-2', '{:.2f}'), ('chrf', 'chrF', '{:.2f}'), ('f1', 'F1', '{:.3f}'),
           ('distinct_1', 'dist-1', '{:.3f}'), ('distinct_2', 'dist-2', '{:.3f}'), ('entropy', 'entropy', '{:.2f}'),
           ('gen_ppl', 'gen ppl (GPT)', '{:.1f}'), ('coherence', 'coherence', '{:.3f}')]


def markdown(rows, n, reference):
    lines = ['| approach | ' + ' | '.join(h for _, h, _ in COLUMNS) + ' |', '|---' * (len(COLUMNS) + 1) + '|']
    for r in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            if key in ('response_nll', 'response_ppl') and v is not None:  # IMR's: the ELBO's upper bound
                v = ('≤ ' if r.get('bound') else '') + (f'{v:.3f}' if key == 'response_nll' else f'{v:.1f}')
            if key == 'hits@1/20' and v is not None:  # a share of n pairs: its binomial standard error
                v = f"{v:.3f} ± {math.sqrt(v * (1 - v) / n):.3f}"
            cells.append('—' if v is None else v if isinstance(v, str) else fmt.format(v))
        lines.append(f"| {r['approach']} | " + ' | '.join(cells) + ' |')
    lines.append(f"\n{n} held-out pairs; R@1/20 (± its standard error over the pairs) and MRR rank the true reply "
                 f"among 20 (19 from other test pairs); the "
                 f"human replies' coherence is {reference:.3f}. ≤: IMR's ELBO, an upper bound on its NLL.")
    return '\n'.join(lines)


def plot(rows, path, reference):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for blocks, style in zip(sorted({r['blocks'] for r in rows if r.get('steps')}), ('o-', 's--')):
        imr = [r for r in rows if r.get('steps') and r['blocks'] == blocks]
        for color, (key, label) in enumerate((('chrf', 'chrF'), ('coherence', 'coherence x 100'), ('entropy', 'entropy x 10'))):
            a.plot([r['steps'] for r in imr], [r[key] * {'chrf': 1, 'coherence': 100, 'entropy': 10}[key] for r in imr],
                   style, color=f'C{color}', label=f"{label}, {blocks} block{'s' if blocks > 1 else ''}")
    a.set_xscale('log', base=2)
    a.set_xlabel('IMR refinement steps (32 = one token a step)')
    a.set_title('ChatBERT-IMR: quality against refinement steps')
    a.legend(fontsize=8)
    named = [r for r in rows if 'chrf' in r]
    y = range(len(named))
    b.barh([i + 0.2 for i in y], [r['chrf'] for r in named], 0.4, label='chrF')
    b.barh([i - 0.2 for i in y], [100 * r['coherence'] for r in named], 0.4, label='coherence x 100')
    b.axvline(100 * reference, color='gray', ls='--', label='human replies\' coherence x 100')
    b.set_yticks(list(y), [r['approach'] for r in named])
    b.invert_yaxis()
    b.set_title('every approach, same test pairs')
    b.legend(loc='upper center', bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    setup_device(device, 'float32', threads)
    if set(runs) != {'GPT', 'ED', 'RA', 'IMR'}:  # the table compares them all, each against the GPT's judgement
        die(f"--runs names one run for each of GPT, ED, RA and IMR, got {', '.join(runs) or 'none'}")
    missing = [r for r in runs.values() if not os.path.isdir(r)]
    if missing and not templates:
        die(f"no run in {', '.join(missing)}: train them first, e.g. python train.py config/chatbert_ed.py")
    convs = split_conversations()
    train_convs, test_convs = convs['train'], convs['test']
    keep = frequent_words(train_convs, keep_words)
    if templates:
        shapes = Counter(template_of(t, keep) for turns in train_convs for _, t in turns)
        for shape, count in [(s, c) for s, c in shapes.most_common() if '___' in s and s.strip('_ ')][:templates]:
            print(f"{count:6,}  {shape}")
        sys.exit(0)
    bots = {name: load(run) for name, run in runs.items()}
    tok = bots['GPT'].tok
    if any(b.tok.info != tok.info for b in bots.values()):
        die("the runs were trained with different tokenizers: prepare data/chatbert with --tokenizer=data/chitchat")
    L = bots['IMR'].model.config.response_len
    candidates = convmetrics.pairs(test_convs, len(test_convs), seed)
    pairs = [(h, r) for h, r in candidates if len(tok.encode(r)) + 1 <= L][:n_pairs]
    print(f"{len(pairs)} held-out pairs whose reply fits {L - 1} tokens (of {len(candidates)}, one per conversation)")
    minilm = teacher.load()
    judge = convmetrics.scorer(bots['GPT'])

    def measure(name, bot, score=None, likelihood=True, **settings):
        print(f"-- {name}")
        torch.manual_seed(seed)
        reply = convmetrics.replier(bot, max_new_tokens, 0.0, **settings)
        res = convmetrics.evaluate(pairs, score, reply, minilm, seed=seed, likelihood=likelihood, judge=judge)
        if 'response_ppl' in res:
            res['response_nll'] = math.log(res['response_ppl'])
        params = bot.model.get_num_params() / 1e6 if bot.model is not None else None  # BM25 has none
        print('   ' + ', '.join(f"{k} {v:.3f}" for k, v in res.items() if isinstance(v, float)))
        return row(name, res, params_M=params)

    results = [measure('BM25 (demo)', BM25Chat(train_convs))]
    for name in ('GPT', 'ED', 'RA'):
        bots[name].prepare()  # RA's pool: embedded (once, then saved) before the replies are timed
        results.append(measure(name, bots[name], convmetrics.scorer(bots[name]), likelihood=name != 'RA'))
    imr = bots['IMR']
    imr_score = convmetrics.scorer(imr)
    for blocks in sorted({1, imr_blocks}):
        for steps in [s for s in imr_steps if s >= blocks]:
            # the scores depend on neither: ranked once, with the first row
            first = blocks == 1 and steps == imr_steps[0]
            results.append(measure(f'IMR, {steps} steps' + (f', {blocks} blocks' if blocks > 1 else ''), imr,
                                   imr_score if first else None, steps=steps, blocks=blocks))
            results[-1].update(steps=steps, blocks=blocks, bound=first)
    # FIB: the IMR model fills templates made from the test replies (their frequent words kept, the rest blanked)
    items = [(h, r, template_of(r, keep)) for h, r in pairs]
    items = [(h, r, t) for h, r, t in items if '___' in t and t.strip('_ ')]
    fib_pairs = [(h, r) for h, r, _ in items]
    fill = {tuple(map(tuple, h)): t for h, _, t in items}
    print(f"-- FIB on {len(items)} templated test replies, e.g. {items[0][2]!r}")
    for name, settings in ((f'FIB: IMR fills the template ({len(items)} items)', {}),
                           (f'template alone, blanks dropped ({len(items)} items)', None)):
        if settings is None:
            reply = lambda h: re.sub(r'\s*___\s*', ' ', fill[tuple(map(tuple, h))]).strip()  # noqa: E731
        else:
            reply = lambda h: imr.reply(h, max_new_tokens, 0.0, None, None,  # noqa: E731
                                        template=fill[tuple(map(tuple, h))])
        res = convmetrics.evaluate(fib_pairs, None, reply, minilm, seed=seed, judge=judge)
        results.append(row(name, res, params_M=imr.model.get_num_params() / 1e6 if settings is not None else None, items=len(items)))
        print('   ' + ', '.join(f"{k} {v:.3f}" for k, v in res.items() if isinstance(v, float)))
    reference = convmetrics.coherence([h for h, _ in pairs], [r for _, r in pairs], minilm)
    table = markdown(results, len(pairs), reference)
    print(table)
    with open(out + '.md', 'w') as f:
        f.write(table + '\n')
    with open(out + '.json', 'w') as f:
        json.dump({'n_pairs': len(pairs), 'coherence_reference': reference, 'runs': runs, 'rows': results}, f, indent=1)
    plot(results, out + '.png', reference)
    print(f"wrote {out}.md, {out}.json, {out}.png")
