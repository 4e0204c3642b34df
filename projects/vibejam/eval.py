"""
vibejam's measurement (projects/vibejam/README.md): rewrites of the person's held-out text, on the three axes that
style-transfer work reports, and the "Layer 2" path (another model's draft, rewritten in the person's style).
$ python -m projects.vibejam.eval              # -> projects/vibejam/vibejam_results.md/.json/.png (~10 min on 2 cores)
$ python -m projects.vibejam.eval --message="how was your weekend?"   # the quickstart GPT's reply beside its vibejam rewrite
Test text: the person's messages in chitchat's held-out conversations (held out of the style models, the fluency
judge and the draft model alike), cut into pieces of a few consecutive messages (at most max_chars), each piece's
draft made by prepare/common.py's corrupt() with the default noise and a fixed seed. For each row:
  content  chrF (sacrebleu) of its texts against the originals; copy, the share left exactly as the draft; edit,
           the mean normalized Levenshtein distance from the draft (how much the model changed)
  style    the share a classifier (scikit-learn, character 1-4-grams) assigns to the person; it is trained on
           chitchat's training conversations to tell the person's pieces from other senders'
  fluency  perplexity per token under the judge, a GPT trained on all of chitchat's training conversations
Rows: the originals, the drafts, each style model prompted zero-shot with the rewrite layout, and each rewrite-
tuned run (runs of one kind and tokenizer, e.g. two seeds, give mean ± std).
"""

import os
import sys
import json
import random

import numpy as np
import torch
from tqdm import tqdm

from stats import mean_std
from common import configure, die, setup_device, load_checkpoint, build_model, make_hint, need
from engine import chat_for
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
style_runs = 'out-vibejam-char,out-vibejam-bpe'  # style models, prompted zero-shot (the source's untrained prompt)
rewrite_runs = 'out-vibejam-rewrite-char,out-vibejam-rewrite-bpe'  # rewrite-tuned runs (comma-separated; seeds too)
judge = 'out-chatbert-gpt'  # fluency: a GPT trained on chitchat's training conversations
draft_from = 'out-quickstart'  # Layer 2: the model whose chat replies get rewritten
n_test: '[10, inf)' = 300  # held-out pieces of the person's text
n_layer2: '[0, inf)' = 100  # held-out contexts the draft model replies to
max_chars: '[10, inf)' = 100  # a piece's length, as the rewrite pairs' (prepare/vibejam.py --max_chars)
temperature: '[0, inf)' = 0.0  # rewrites are greedy, so a table is reproducible
seed: '[0, 9.2e18]' = 1337
device = 'cpu'
threads: '[0, inf)' = 0
message = ''  # instead of the table: the draft model's reply to this message, and its rewrite by each rewrite run
out = 'projects/vibejam/vibejam_results'  # -> .json, .md, .png: where the project's README reads them
# -----------------------------------------------------------------------------
HELD_OUT = 0.05  # prepare.chitchat's val share: its val conversations are held out of every model here


def runs(*keys):
    """The runs these config keys name (comma-separated); one clear line for the first that isn't there, with what
    makes it and the key that named it (before any work)."""
    named = [(key, r) for key in keys for r in globals()[key].split(',') if r]
    for key, run in named:
        if not os.path.exists(run):
            how = make_hint(run, 'train it first (projects/vibejam/README.md lists the commands)')
            die(f"no run {run}: {how}, or set --{key} to runs you have")
    return [r for _, r in named]


def load(run):
    """(model, tokenizer, checkpoint) of a run's best.pt (ckpt.pt without one)."""
    path = os.path.join(run, 'best.pt') if os.path.isfile(os.path.join(run, 'best.pt')) else run
    ckpt = load_checkpoint(path, device)
    return build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer']), ckpt


def test_pieces(n, seed):
    """[(original, draft)]: n pieces of the person's held-out messages and the draft corrupt() makes of each."""
    from prepare.common import NOISE, chitchat_documents, chunks, corrupt, is_val
    docs = chitchat_documents()
    held = [c for cid in sorted(docs) if is_val(cid, HELD_OUT) for c in chunks(docs[cid], max_chars) if len(c) <= max_chars]
    random.Random(seed).shuffle(held)
    rng = random.Random(seed)
    pairs = [(c, corrupt(c, rng, **NOISE)) for c in held]
    return [(c, d) for c, d in pairs if d.strip()][:n]


def sender_pieces():
    """{split: (texts, labels)}: chitchat pieces (max_chars), 1 the person's and 0 any other sender's, as many of
    each, from the training conversations ('train') and the held-out ones ('test')."""
    import chitchat_dataset
    from prepare.common import SENDER, chunks, is_val
    pieces = {'train': ([], []), 'test': ([], [])}
    for cid, conv in chitchat_dataset.Dataset().items():
        by_sender = {}
        for turn in conv['messages']:
            for m in turn:
                by_sender.setdefault(m['sender'], []).append(m['text'])
        texts, labels = pieces['test' if is_val(cid, HELD_OUT) else 'train']
        for sender, lines in by_sender.items():
            for c in chunks('\n'.join(lines), max_chars):
                texts.append(c)
                labels.append(int(sender == SENDER))
    rng = random.Random(seed)
    for split, (texts, labels) in pieces.items():  # balance: every piece of the person's, as many others'
        mine = [i for i, y in enumerate(labels) if y]
        others = rng.sample([i for i, y in enumerate(labels) if not y], len(mine))
        keep = sorted(mine + others)
        pieces[split] = ([texts[i] for i in keep], [labels[i] for i in keep])
    return pieces


def style_classifier():
    """A scikit-learn pipeline that tells the person's pieces (1) from other senders' (0), and its accuracy on the
    held-out conversations' pieces."""
    need('sklearn', 'projects/vibejam/requirements.txt')  # one line if it isn't installed
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    pieces = sender_pieces()
    clf = make_pipeline(TfidfVectorizer(analyzer='char', ngram_range=(1, 4), lowercase=False, sublinear_tf=True, min_df=2),
                        LogisticRegression(C=4.0, max_iter=2000))
    clf.fit(*pieces['train'])
    return clf, float(clf.score(*pieces['test']))


def rewrite(model, tok, draft):
    """The model's rewrite of a draft (the text before its end marker), at most twice the draft's tokens."""
    n = len(tok.encode(draft))
    text = ''
    limit = min(model.config.block_size - n - 16, 2 * n + 16)
    for text in chat_for(model, tok).rewrite_stream(draft, limit, temperature, None, None):
        pass
    return text.strip()


def fluency(judge_chat, texts, batch=64):
    """Perplexity per token of the texts under the judge (its engine.Chat), each scored as a reply that opens a
    conversation."""
    lp = n = 0
    for i in range(0, len(texts), batch):
        for l, k in judge_chat.score_replies([], texts[i:i + batch]):
            lp, n = lp + l, n + k
    return float(np.exp(-lp / n))


def measure(texts, drafts, refs, clf, judge_chat):
    """One row's metrics of texts (a model's outputs) against the drafts they came from and the references (the
    originals, or None where there are none: Layer 2)."""
    need('rapidfuzz', 'projects/vibejam/requirements.txt')
    from rapidfuzz.distance import Levenshtein
    import convmetrics
    row = {'style': float(np.mean(clf.predict(texts))), 'ppl': fluency(judge_chat, texts),
           'copy': float(np.mean([t == d.strip() for t, d in zip(texts, drafts)])),
           'edit': float(np.mean([Levenshtein.normalized_distance(t, d) for t, d in zip(texts, drafts)]))}
    row['chrf'] = convmetrics.chrf(texts, refs) if refs is not None else None
    # the share of pieces whose rewrite is closer to the original than its draft was (sentence chrF)
    row['closer'] = float(np.mean([convmetrics.chrf([t], [r]) > convmetrics.chrf([d], [r])
                                   for t, d, r in zip(texts, drafts, refs)])) if refs is not None else None
    row['chrf_draft'] = convmetrics.chrf(texts, drafts)  # how much of the draft's content it keeps
    return row


def run_rows(runs, zero_shot, drafts):
    """{label: [outputs of each run]} of the runs' rewrites of the drafts, the runs grouped by label."""
    out = {}
    for run in runs:
        model, tok, ckpt = load(run)
        if not zero_shot and 'rewrite' not in ckpt.get('formats', []):
            die(f"{run} was never fine-tuned on rewrite pairs: list it in style_runs, or fine-tune it with config/vibejam_rewrite.py")
        label = f"{'zero-shot style model' if zero_shot else 'rewrite-tuned'} ({tok.kind})"
        texts = [rewrite(model, tok, d) for d in tqdm(drafts, desc=f'{run} rewrites', leave=False, disable=None)]
        out.setdefault(label, []).append((run, texts))
    return out


def summarize(rows):
    """{label: {metric: its value, or mean ± std over the row's runs}} for the table."""
    digits = {'chrf': 1, 'chrf_draft': 1, 'ppl': 1}
    table = {}
    for label, runs in rows.items():
        table[label if len(runs) == 1 else f"{label}, {len(runs)} seeds"] = {k: '-' if runs[0][k] is None else f"{runs[0][k]:.{digits.get(k, 3)}f}" if len(runs) == 1
                        else mean_std([r[k] for r in runs], digits.get(k, 3)) for k in runs[0]}
    return table


def markdown(table, cols, names):
    lines = ['| row | ' + ' | '.join(names) + ' |', '|---' * (len(cols) + 1) + '|']
    lines += [f"| {label} | " + ' | '.join(str(m[c]) for c in cols) + ' |' for label, m in table.items()]
    return '\n'.join(lines)


def layer2_drafts(n):
    """[(history, draft)]: the draft model's greedy replies where the person speaks next in held-out conversations,
    each history the turns before; only drafts every rewrite run's tokenizer can encode are kept."""
    import convmetrics
    from prepare.common import split_conversations
    model, tok, _ = load(draft_from)
    pairs = convmetrics.pairs(split_conversations(HELD_OUT)[1], 4 * n, seed)
    reply = convmetrics.replier(chat_for(model, tok), max_new_tokens=24, temperature=0.8, top_k=50)
    torch.manual_seed(seed)
    drafts = [(h, reply(h).strip()) for h, _ in tqdm(pairs[:2 * n], desc='drafts', leave=False, disable=None)]
    toks = [load(r)[1] for r in runs('rewrite_runs')]

    def fits(d):
        try:
            return d and len(d) <= max_chars and all(t.encode(d) for t in toks)
        except ValueError:  # a character the person's char vocabulary lacks
            return False
    return [(h, d) for h, d in drafts if fits(d)][:n]


def plot(results, path):
    """Style (x) against content (y), each row a point: the trade-off every style-transfer paper draws."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, runs in results['rows'].items():
        xs, ys = [r['style'] for r in runs], [r['chrf'] for r in runs]
        ax.errorbar(np.mean(xs), np.mean(ys), xerr=np.std(xs), yerr=np.std(ys), fmt='o', capsize=3, label=label)
    ax.set_xlabel("style: share the classifier assigns to the person")
    ax.set_ylabel("content: chrF against the original")
    ax.set_title(f"vibejam rewrites of {results['n_test']} held-out pieces")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def side_by_side(msg):
    """The draft model's reply to msg, then each rewrite run's version of it."""
    runs('draft_from', 'rewrite_runs')
    model, tok, _ = load(draft_from)
    torch.manual_seed(seed)
    draft = chat_for(model, tok).reply([('user', msg)], 32, 0.8, 50, None).strip()
    print(f"{draft_from} replies:  {draft}")
    for run in runs('rewrite_runs'):
        m, t, _ = load(run)
        try:
            print(f"{run} rewrites: {rewrite(m, t, draft)}")
        except ValueError as e:
            print(f"{run} can't rewrite it: {e}")


def main():
    runs('style_runs', 'rewrite_runs', 'judge', *(['draft_from'] if n_layer2 else []))
    pieces = test_pieces(n_test, seed)
    originals, drafts = [o for o, _ in pieces], [d for _, d in pieces]
    print(f"{len(pieces)} held-out pieces; training the style classifier")
    clf, clf_acc = style_classifier()
    print(f"style classifier: {clf_acc:.3f} accuracy on held-out conversations' pieces (half the person's)")
    jc = chat_for(*load(judge)[:2])
    measured = {'original': [('-', measure(originals, drafts, originals, clf, jc))],
                'draft (the corruption)': [('-', measure(drafts, drafts, originals, clf, jc))]}
    outputs = {}
    for zero_shot, key in ((True, 'style_runs'), (False, 'rewrite_runs')):
        for label, texts in run_rows(runs(key), zero_shot, drafts).items():
            measured[label] = [(run, measure(t, drafts, originals, clf, jc)) for run, t in texts]
            outputs.update({run: t for run, t in texts})
    l2 = {}
    if n_layer2:
        l2_drafts = [d for _, d in layer2_drafts(n_layer2)]
        print(f"Layer 2: {len(l2_drafts)} replies of {draft_from}")
        l2[f'{draft_from} reply (the draft)'] = [('-', measure(l2_drafts, l2_drafts, None, clf, jc))]
        for label, texts in run_rows(runs('rewrite_runs'), False, l2_drafts).items():
            l2[label] = [(run, measure(t, l2_drafts, None, clf, jc)) for run, t in texts]
            outputs.update({f'{run} (Layer 2)': list(zip(l2_drafts, t)) for run, t in texts})
    results = {'n_test': len(pieces), 'classifier_accuracy': clf_acc, 'judge': judge, 'draft_from': draft_from,
               'rows': {k: [m for _, m in v] for k, v in measured.items()}, 'runs': {k: [r for r, _ in v] for k, v in measured.items()},
               'layer2': {k: [m for _, m in v] for k, v in l2.items()}, 'pieces': pieces,
               'outputs': outputs}
    cols = ['chrf', 'closer', 'copy', 'edit', 'style', 'ppl']
    names = ['chrF vs original ↑', 'closer than draft ↑', 'copy rate', 'edit from draft', 'style (person) ↑', f'ppl ({judge}) ↓']
    md = (f"vibejam on {len(pieces)} held-out pieces of the person's text (≤ {max_chars} characters), greedy "
          f"rewrites; style classifier accuracy {clf_acc:.3f} on held-out pieces; runs of one row: mean ± std.\n\n"
          f"{markdown(summarize(results['rows']), cols, names)}\n\n"
          f"Layer 2: {len(l2_drafts) if n_layer2 else 0} replies of {draft_from} to held-out contexts, rewritten.\n\n"
          f"{markdown(summarize(results['layer2']), ['chrf_draft', 'copy', 'edit', 'style', 'ppl'], ['chrF vs draft', 'copy rate', 'edit from draft', 'style (person) ↑', f'ppl ({judge}) ↓'])}\n")
    with open(f'{out}.json', 'w') as f:
        json.dump(results, f, indent=2)
    with open(f'{out}.md', 'w') as f:
        f.write(md)
    plot(results, f'{out}.png')
    print(md)
    print(f"wrote {out}.json, {out}.md, {out}.png")


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    setup_device(device, 'float32', threads)
    if message:
        side_by_side(message)
    else:
        main()
