"""
vibejam's measurement (projects/vibejam/README.md): each person's rewrite models against the rules a model must beat,
on that person's test text, with the features that show a caricature and a style measure a caricature cannot win.
$ python -m projects.vibejam.eval              # -> projects/vibejam/vibejam_results.md/.json/.png
$ python -m projects.vibejam.eval --message="how was your weekend?"   # the quickstart GPT's reply beside its vibejam rewrite
$ python -m projects.vibejam.eval --earlier=FILE   # the earlier runs' outputs in FILE against the inverse rule -> vibejam_earlier.md
--earlier: the earlier vibejam_results.json (git show 9b25303:projects/vibejam/vibejam_results.json > FILE) kept every
output of its 4,000-iteration char and BPE rewrite runs (two seeds each) on 300 pieces of person 1's text in
chitchat's test conversations; those still test text here (copies of trained-on conversations left out) are scored,
with their own drafts, against the inverse rule fitted for this table. Their best.pt was
chosen on val pairs that held those test conversations, so those outputs are selected on test: an upper bound.
People: prepare.common.SENDERS, the three most prolific chitchat senders; rewrite_runs lists each person's runs
(seeds), comma-separated, the people separated by ';' in SENDERS' order (config/vibejam_rewrite.py trains them).
Split (splits.py, by conversation id, as prepare.vibejam's): test pieces are the person's text in chitchat's test
conversations, cut into pieces of a few consecutive messages (at most max_chars), each piece's draft made by
prepare/common.py's corrupt() with the default noise and a fixed seed; the val conversations' pieces, made the same
way, choose the best rule; the style classifiers train on train conversations and are checked on val ones.
Rows: the originals; the floors: copy the draft, strip final periods, the inverse of the corruption's deterministic
parts (fitted on the person's train text); each rewrite run (seeds: mean ± sample std).
  content   chrF (sacrebleu): corpus chrF, and per-piece sentence chrF (mean, bootstrap interval over pieces); closer,
            the share of pieces whose rewrite is closer to the original than its draft (sentence chrF); and sentence
            chrF with final periods stripped from hypothesis and reference (what is left when the one-feature tell
            is taken out)
  claim     the best rule on val, subtracted piece by piece from the model's scores averaged over its seeds:
            stats.paired_bootstrap over test pieces
  features  per piece, averaged: final periods and lower-case starts (share of lines), contractions and haha/lol
            (per 100 words), characters a line
  style     two classifiers (scikit-learn, character 1-4-grams, logistic regression), person vs other senders:
            raw, and blind, which reads the text lower-cased with . ! ? removed, so neither case nor final periods can
            tell it anything; each checked on val (accuracy, Brier, reliability) and on test against false positives:
            other senders' test pieces, corrupted the same way and rewritten by the person's models
Fluency (a judge GPT's perplexity) and Layer 2 (another model's replies, rewritten) are not measured: no judge or
draft model run fits this one-core budget.
"""

import os
import re
import sys
import json
import random

import numpy as np
from tqdm import tqdm

from splits import split_keys
from stats import bootstrap_ci, fmt_ci, fmt_diff, mean_std, paired_bootstrap
from common import configure, die, setup_device, load_checkpoint, build_model, make_hint, need
from engine import chat_for
from tokenizer import Tokenizer

# -----------------------------------------------------------------------------
# person p's runs (p = 1, 2, 3: prepare.common.SENDERS[p - 1]), one per seed; ';' between people
rewrite_runs = ';'.join(','.join(f'out-vibejam-rewrite-bpe-p{p}-{s}' for s in (1337, 1338, 1339)) for p in (1, 2, 3))
n_test: '[10, inf)' = 200  # test pieces of each person's text (all of them if fewer)
n_other: '[0, inf)' = 100  # other senders' test pieces each person's models rewrite (the false-positive check)
max_clf: '[100, inf)' = 6000  # at most this many of each class's train pieces for a style classifier
max_chars: '[10, inf)' = 100  # a piece's length, as the rewrite pairs' (prepare/vibejam.py --max_chars)
temperature: '[0, inf)' = 0.0  # rewrites are greedy, so a table is reproducible
seed: '[0, 9.2e18]' = 1337
device = 'cpu'
threads: '[0, inf)' = 0
draft_from = 'out-quickstart'  # --message: the model whose chat reply gets rewritten
message = ''  # instead of the table: the draft model's reply to this message, and its rewrite by each rewrite run
out = 'projects/vibejam/vibejam_results'  # -> .json, .md, .png: where the project's README reads them
earlier = ''  # instead of the table: the earlier (pre-issue-22) results JSON, whose rewrite outputs are compared with
# this table's inverse rule on person 1's test pieces (no model run): git show 9b25303:projects/vibejam/vibejam_results.json
earlier_out = 'projects/vibejam/vibejam_earlier'  # -> .json, .md
# -----------------------------------------------------------------------------


def runs(*keys):
    """The runs these config keys name (comma- or ';'-separated); one clear line for the first that isn't there, with
    what makes it and the key that named it (before any work)."""
    named = [(key, r) for key in keys for r in re.split('[,;]', globals()[key]) if r]
    for key, run in named:
        if not os.path.exists(run):
            how = make_hint(run, 'train it first (projects/vibejam/README.md lists the commands)')
            die(f"no run {run}: {how}, or set --{key} to runs you have")
    return [r for _, r in named]


def people():
    """{person (1-based, as in SENDERS): [run, ...]} of rewrite_runs."""
    runs('rewrite_runs')
    return {p: [r for r in group.split(',') if r] for p, group in enumerate(rewrite_runs.split(';'), 1)}


def load(run):
    """(model, tokenizer) of a run's best.pt (ckpt.pt without one)."""
    path = os.path.join(run, 'best.pt') if os.path.isfile(os.path.join(run, 'best.pt')) else run
    ckpt = load_checkpoint(path, device)
    if 'rewrite' not in ckpt.get('formats', []):
        die(f"{run} was never fine-tuned on rewrite pairs: fine-tune it with config/vibejam_rewrite.py")
    return build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer'])


# -----------------------------------------------------------------------------
# pieces: the person's text and other senders', by split

def sender_texts():
    """{split: {sender: [document, ...]}}: every sender's messages of each conversation (a line each), by the split
    of the conversation id (splits.split_of, as prepare.vibejam splits a person's documents). chitchat holds 928
    exact copies of conversations under other ids: a val or test conversation with a copy in an earlier split (train,
    then val) is left out, so no piece read for a choice or the table is text the models trained on."""
    import chitchat_dataset
    convs = chitchat_dataset.Dataset()
    out, seen = {}, set()
    for split, cids in split_keys(sorted(convs)).items():  # train, val, test: in that order
        by = out.setdefault(split, {})
        for cid in cids:
            text = '\n'.join(m['text'] for turn in convs[cid]['messages'] for m in turn)
            if split != 'train' and text in seen:
                continue
            seen.add(text)
            lines = {}
            for turn in convs[cid]['messages']:
                for m in turn:
                    lines.setdefault(m['sender'], []).append(m['text'])
            for sender, ls in lines.items():
                by.setdefault(sender, []).append('\n'.join(ls))
    return out


def pieces_of(docs):
    from prepare.common import chunks
    return [c for d in docs for c in chunks(d, max_chars) if len(c) <= max_chars]


def with_drafts(texts, n, rng_seed):
    """[(original, draft)] of up to n of the texts (shuffled with rng_seed), each draft corrupt()'s, empty ones out."""
    from prepare.common import NOISE, corrupt
    texts = list(texts)
    random.Random(rng_seed).shuffle(texts)
    rng = random.Random(rng_seed)
    pairs = [(c, corrupt(c, rng, **NOISE)) for c in texts[:2 * n]]
    return [(c, d) for c, d in pairs if d.strip()][:n]


def person_pieces(texts, sender, n, rng_seed):
    """{'val': [(original, draft)], 'test': ..., 'other': [(original, draft)] of other senders' test pieces}."""
    others = [t for s, docs in texts['test'].items() if s != sender for t in pieces_of(docs)]
    return {'val': with_drafts(pieces_of(texts['val'].get(sender, [])), 10 ** 9, rng_seed),
            'test': with_drafts(pieces_of(texts['test'][sender]), n, rng_seed),
            'other': with_drafts(others, n_other, rng_seed + 1)}


# -----------------------------------------------------------------------------
# the rules: what a model must beat

def strip_periods(text):
    """Each line's one final period removed (an ellipsis kept): the corruption's most common trace."""
    return '\n'.join(line[:-1] if line.endswith('.') and not line.endswith('..') else line for line in text.split('\n'))


def count(text, phrase):
    return len(re.findall(rf"(?<![\w']){re.escape(phrase)}(?![\w'])", text, flags=re.IGNORECASE))


def fit_inverse(train_text):
    """The inverse of corrupt()'s deterministic parts, fitted on the person's train text: [(neutral, casual)]
    replacements, each kept only where the person writes the casual form more often than the neutral one (longest
    first), and whether to lower-case line starts and strip final periods (what most of their lines do)."""
    from prepare.common import EXPAND, NEUTRAL
    swaps = {}
    for table in (EXPAND, NEUTRAL):  # contractions back first, then the casual words ("do not" -> "don't" -> "dont")
        for casual, neutral in table.items():
            casual = 'I' + casual[1:] if casual.startswith("i'") else casual  # EXPAND's keys are lower case
            if neutral and count(train_text, casual) > max(count(train_text, neutral), swaps.get(neutral, ('', 0))[1]):
                swaps[neutral] = (casual, count(train_text, casual))
    lines = [l for l in train_text.split('\n') if l.strip()]
    starts = [l[0] for l in lines if l[0].isalpha()]
    return {'swaps': sorted(((n, c) for n, (c, _) in swaps.items()), key=lambda x: -len(x[0])),
            'lower': float(np.mean([s.islower() for s in starts])) > 0.5,
            'strip': float(np.mean([l.endswith('.') for l in lines])) < 0.5}


def inverse(text, fitted):
    """A draft with fit_inverse's rule applied: the corruption's deterministic parts undone where they can be."""
    for neutral, casual in fitted['swaps']:
        def keep_case(m):  # "I am" -> "I'm", "Yes" -> "Yeah": a capital first letter stays one
            return casual[0].upper() + casual[1:] if m.group(0)[0].isupper() and m.start() == 0 else casual
        text = '\n'.join(re.sub(rf"(?<![\w']){re.escape(neutral)}(?![\w'])", keep_case, line, flags=re.IGNORECASE)
                         for line in text.split('\n'))
    if fitted['strip']:
        text = strip_periods(text)
    if fitted['lower']:
        text = '\n'.join(line if line.startswith(('I ', "I'")) or line[1:2].isupper() else line[:1].lower() + line[1:]
                          for line in text.split('\n'))  # "I", and a word in capitals ("ME TOO"), stay
    return text


# -----------------------------------------------------------------------------
# metrics

def sentence_chrf(hyps, refs):
    """Per-piece chrF (sacrebleu's sentence chrF), 0-100."""
    need('sacrebleu', 'projects/vibejam/requirements.txt')
    from sacrebleu.metrics import CHRF
    metric = CHRF()
    return np.array([metric.sentence_score(h, [r]).score for h, r in zip(hyps, refs)])


def corpus_chrf(hyps, refs):
    from sacrebleu.metrics import CHRF
    return CHRF().corpus_score(list(hyps), [list(refs)]).score


LAUGH = re.compile(r"^(?:(?:ha){2,}h?|(?:he){2,}|lo+l+|lmao+)$")


def features(text):
    """One text's style features: the shares of its lines that end with a period and that start lower-case, its
    contractions and laughs (haha, lol, lmao) per 100 words, and its characters a line."""
    lines = [l for l in text.split('\n') if l.strip()] or ['']
    words = text.split()
    letters = [l.strip()[0] for l in lines if l.strip() and l.strip()[0].isalpha()]
    per100 = lambda k: 100 * k / max(1, len(words))
    return {'final_period': float(np.mean([l.rstrip().endswith('.') for l in lines])),
            'lower_start': float(np.mean([c.islower() for c in letters])) if letters else 0.0,
            'contractions': per100(len(re.findall(r"[A-Za-z]'[A-Za-z]", text))),
            'laughs': per100(sum(bool(LAUGH.match(w.strip('.,!?').lower())) for w in words)),
            'chars_per_line': float(np.mean([len(l) for l in lines]))}


FEATURES = ['final_period', 'lower_start', 'contractions', 'laughs', 'chars_per_line']


def scores(texts, drafts, refs, clfs):
    """Per-piece scores of texts (one row's outputs) against their drafts and originals: sentence chrF, closer
    (than the draft), chrF with final periods stripped from both sides, each style classifier's call (1 = the
    person), and the features."""
    chrf = sentence_chrf(texts, refs)
    out = {'chrf': chrf, 'closer': (chrf > sentence_chrf(drafts, refs)).astype(float),
           'chrf_nodot': sentence_chrf([strip_periods(t) for t in texts], [strip_periods(r) for r in refs])}
    for name, clf in clfs.items():
        out[f'style_{name}'] = np.asarray(clf.predict(texts), dtype=float)
    feats = [features(t) for t in texts]
    out.update({f: np.array([x[f] for x in feats]) for f in FEATURES})
    return out


# -----------------------------------------------------------------------------
# the style classifiers

def blind(text):
    """What the blind classifier reads: lower-cased, . ! ? removed (no case, no final punctuation to count)."""
    return re.sub(r'[.!?]', '', text.lower())


def style_classifiers(texts, sender):
    """{'raw': pipeline, 'blind': pipeline}, each telling the person's pieces (1) from other senders' (0), trained on
    the train conversations' pieces (as many of each, at most max_clf), and their checks on the val ones."""
    need('sklearn', 'projects/vibejam/requirements.txt')
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    data = {}
    rng = random.Random(seed)
    for split in ('train', 'val'):
        mine = pieces_of(texts[split].get(sender, []))
        others = [t for s, docs in texts[split].items() if s != sender for t in pieces_of(docs)]
        k = min(len(mine), len(others), max_clf)
        xs = rng.sample(mine, k) + rng.sample(others, k)
        data[split] = (xs, [1] * k + [0] * k)
    clfs, checks = {}, {}
    for name, pre in (('raw', None), ('blind', blind)):
        clf = make_pipeline(TfidfVectorizer(analyzer='char', ngram_range=(1, 4), lowercase=False, sublinear_tf=True,
                                            min_df=2, preprocessor=pre),
                            LogisticRegression(C=4.0, max_iter=2000))
        clf.fit(*data['train'])
        clfs[name], checks[name] = clf, calibration(clf, *data['val'])
    return clfs, checks


def calibration(clf, xs, ys):
    """Accuracy (with its bootstrap interval), Brier score, and a reliability table (10 bins of the predicted
    probability: how many pieces, their mean prediction, the share that are the person's) of clf on (xs, ys)."""
    p, ys = clf.predict_proba(xs)[:, 1], np.array(ys)
    right = ((p > 0.5) == ys).astype(float)
    bins = np.minimum((p * 10).astype(int), 9)
    table = [{'bin': f"{b / 10:.1f}-{(b + 1) / 10:.1f}", 'n': int((bins == b).sum()), 'predicted': float(p[bins == b].mean()),
              'observed': float(ys[bins == b].mean())} for b in range(10) if (bins == b).any()]
    return {'n': len(ys), 'accuracy': float(right.mean()), 'accuracy_ci': bootstrap_ci(right),
            'brier': float(np.mean((p - ys) ** 2)), 'brier_ci': bootstrap_ci((p - ys) ** 2), 'reliability': table}


# -----------------------------------------------------------------------------
# rewrites

def rewrite(model, tok, draft):
    """The model's rewrite of a draft (the text before its end marker), at most twice the draft's tokens."""
    n = len(tok.encode(draft))
    text = ''
    limit = min(model.config.block_size - n - 16, 2 * n + 16)
    for text in chat_for(model, tok).rewrite_stream(draft, limit, temperature, None, None):
        pass
    return text.strip()


def rewrite_all(run, drafts):
    model, tok = load(run)
    return [rewrite(model, tok, d) for d in tqdm(drafts, desc=f'{run} rewrites', leave=False, disable=None)]


# -----------------------------------------------------------------------------
# one person

def summarize(per_seed, metric):
    """A row's cell: mean and bootstrap interval over pieces for one output list; mean ± sample std over seeds."""
    xs = [s[metric] for s in per_seed]
    if len(xs) == 1:
        return {'mean': float(xs[0].mean()), 'ci': bootstrap_ci(xs[0])}
    return {'mean': float(np.mean([x.mean() for x in xs])), 'std': float(np.std([x.mean() for x in xs], ddof=1)),
            'seeds': [float(x.mean()) for x in xs], 'pooled_ci': bootstrap_ci(np.mean(xs, axis=0))}


def measure_person(p, sender, texts, runs):
    """Everything measured for one person: rows, claim, classifier checks and false positives, outputs."""
    from prepare.common import chunks
    pieces = person_pieces(texts, sender, n_test, seed)
    fitted = fit_inverse('\n'.join(c for d in texts['train'][sender] for c in chunks(d, 10 ** 9)))
    rules = {'copy the draft': lambda d: d, 'strip final periods': strip_periods,
             'inverse rule': lambda d: inverse(d, fitted)}
    # the best rule, chosen on val pieces alone: the highest mean sentence chrF
    val_o, val_d = zip(*pieces['val'])
    val_chrf = {name: float(sentence_chrf([f(d) for d in val_d], val_o).mean()) for name, f in rules.items()}
    best = max(val_chrf, key=val_chrf.get)
    print(f"person {p}: {len(pieces['test'])} test, {len(pieces['val'])} val pieces; rules on val {val_chrf}: best {best}")
    clfs, checks = style_classifiers(texts, sender)
    print(f"person {p}: style classifiers on val: " + ', '.join(f"{k} accuracy {v['accuracy']:.3f}, Brier {v['brier']:.3f}" for k, v in checks.items()))
    originals, drafts = map(list, zip(*pieces['test']))
    outputs = {'original': [originals], 'draft': [drafts]}
    outputs.update({name: [[f(d) for d in drafts]] for name, f in rules.items() if name != 'copy the draft'})
    other_o, other_d = map(list, zip(*pieces['other']))
    other_outputs = {}
    for run in runs:
        outputs.setdefault('rewrite model', []).append(rewrite_all(run, drafts))
        other_outputs.setdefault('rewrite model', []).append(rewrite_all(run, other_d))
    outputs = {('copy the draft' if k == 'draft' else k): v for k, v in outputs.items()}  # the draft is the copy rule's output
    rows = {name: [scores(o, drafts, originals, clfs) for o in outs] for name, outs in outputs.items()}
    metrics = list(rows['original'][0])
    table = {name: {m: summarize(per_seed, m) for m in metrics} for name, per_seed in rows.items()}
    model_mean = {m: np.mean([s[m] for s in rows['rewrite model']], axis=0) for m in ('chrf', 'closer', 'chrf_nodot')}
    claim = {m: paired_bootstrap(model_mean[m], rows[best][0][m]) for m in model_mean}
    per_seed_claim = [{m: paired_bootstrap(s[m], rows[best][0][m]) for m in model_mean} for s in rows['rewrite model']]
    corpus = {name: [corpus_chrf(o, originals) for o in outs] for name, outs in outputs.items()}
    # false positives: how often each classifier calls other senders' text the person's, as written, as drafts, rewritten
    fp = {}
    for name, clf in clfs.items():
        call = lambda xs: np.asarray(clf.predict(xs), dtype=float)
        fp[name] = {'person originals': summarize([{'x': call(originals)}], 'x'),
                    'person rewrites': summarize([{'x': call(o)} for o in outputs['rewrite model']], 'x'),
                    'others originals': summarize([{'x': call(other_o)}], 'x'),
                    'others drafts': summarize([{'x': call(other_d)}], 'x'),
                    'others rewritten': summarize([{'x': call(o)} for o in other_outputs['rewrite model']], 'x')}
    return {'sender': sender, 'runs': runs, 'n_test': len(originals), 'n_val': len(pieces['val']), 'n_other': len(other_o),
            'val_rule_chrf': val_chrf, 'best_rule': best, 'inverse_rule': fitted, 'classifier_val': checks,
            'table': table, 'corpus_chrf': corpus, 'claim': claim, 'claim_per_seed': per_seed_claim,
            'false_positives': fp, 'pieces': pieces['test'], 'outputs': outputs, 'other_pieces': pieces['other'],
            'other_outputs': other_outputs}


def training(run):
    """A run's training, from its log.jsonl and meta.json: val loss at the start, its lowest (best.pt's) and when,
    the iterations run and the wall time; and the run it started from (init_from)."""
    with open(os.path.join(run, 'log.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    with open(os.path.join(run, 'meta.json')) as f:
        meta = json.load(f)
    evals = [r for r in rows if 'val_loss' in r]
    best = min(evals, key=lambda r: r['val_loss'])
    return {'run': run, 'dataset': meta['config'].get('dataset'), 'init_from': meta['config'].get('init_from'),
            'seed': meta['config'].get('seed'), 'val_first': evals[0]['val_loss'], 'val_best': best['val_loss'],
            'best_iter': best['iter'], 'iters': rows[-1]['iter'], 'minutes': rows[-1]['t'] / 60}


# -----------------------------------------------------------------------------
# tables and plot

def cell(c, digits=3, scale=1.0):
    if 'std' in c:
        return f"{c['mean'] * scale:.{digits}f} ± {c['std'] * scale:.{digits}f}"
    return fmt_ci(c['mean'] * scale, c['ci'][0] * scale, c['ci'][1] * scale, digits)


def markdown(results):
    seeds_n = max(len(r['runs']) for r in results['people'].values())
    out = [f"vibejam on the test pieces of {len(results['people'])} people (≤ {max_chars} characters each, greedy "
           f"rewrites). One output: mean [95% bootstrap interval over pieces]; rewrite model: mean ± sample std over "
           f"{seeds_n} seeds. Best rule chosen on val pieces.\n"]
    for p, r in results['people'].items():
        t = r['table']
        out += [f"## Person {p} ({r['sender'][:8]}): {r['n_test']} test pieces; best rule on val: {r['best_rule']}\n",
                "| row | corpus chrF | sentence chrF | closer than draft | chrF, final periods stripped | style, blind clf | style, raw clf |",
                "|---|---|---|---|---|---|---|"]
        for name, row in t.items():
            cs = r['corpus_chrf'][name]
            corpus = f"{cs[0]:.1f}" if len(cs) == 1 else mean_std(cs, 1)
            out.append(f"| {name} | {corpus} | {cell(row['chrf'], 1)} | {cell(row['closer'])} | {cell(row['chrf_nodot'], 1)} "
                       f"| {cell(row['style_blind'])} | {cell(row['style_raw'])} |")
        c = r['claim']
        out += ["", f"Model minus {r['best_rule']}, per piece, the model's scores averaged over its seeds (paired "
                "bootstrap over pieces, p two-sided):", "",
                "| sentence chrF | closer than draft | chrF, final periods stripped |", "|---|---|---|",
                f"| {fmt_diff(c['chrf'], 2)} (p {c['chrf']['p']:.3f}) | {fmt_diff(c['closer'])} (p {c['closer']['p']:.3f}) "
                f"| {fmt_diff(c['chrf_nodot'], 2)} (p {c['chrf_nodot']['p']:.3f}) |", "",
                "Per seed, sentence chrF: " + '; '.join(fmt_diff(s['chrf'], 2) for s in r['claim_per_seed']), "",
                "Features (per piece, averaged): final periods and lower-case starts are shares of lines; contractions "
                "and haha/lol per 100 words.", "",
                "| row | final period | lower-case start | contractions | haha/lol | chars a line |", "|---|---|---|---|---|---|"]
        for name, row in t.items():
            out.append(f"| {name} | " + ' | '.join(cell(row[f], 1 if f in ('contractions', 'laughs', 'chars_per_line') else 3)
                                                  for f in FEATURES) + ' |')
        out += ["", "Style classifiers: checked on val pieces (half the person's), and the share of test text each calls the "
                "person's.", "",
                "| classifier | val accuracy | val Brier | person originals | person rewrites | others' originals | others' drafts | others rewritten by the person's model |",
                "|---|---|---|---|---|---|---|---|"]
        for name, fp in r['false_positives'].items():
            v = r['classifier_val'][name]
            out.append(f"| {name} | {fmt_ci(v['accuracy'], *v['accuracy_ci'])} | {fmt_ci(v['brier'], *v['brier_ci'])} | "
                       + ' | '.join(cell(fp[k]) for k in ('person originals', 'person rewrites', 'others originals',
                                                          'others drafts', 'others rewritten')) + ' |')
        out += ["", "Reliability on val (bins of the predicted probability: n, mean prediction, share the person's):", ""]
        for name in r['classifier_val']:
            rel = r['classifier_val'][name]['reliability']
            out.append(f"- {name}: " + '; '.join(f"{b['bin']} n={b['n']} {b['predicted']:.2f}/{b['observed']:.2f}" for b in rel))
        out.append("")
    out += ["## Training (from each run's log.jsonl; val loss per BPE token on the person's val documents or val pairs)", "",
            "| run | data | seed | val loss at start | best val loss (best.pt) | at iteration | iterations | minutes (one shared core) |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {t['run']} | {t['dataset']} | {t['seed']} | {t['val_first']:.3f} | {t['val_best']:.3f} | {t['best_iter']} | "
            f"{t['iters']} | {t['minutes']:.1f} |" for t in results['training']]
    return '\n'.join(out) + '\n'



def plot(results, path):
    """Per person: the model minus the best rule in sentence chrF, as is and with final periods stripped."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, (metric, label) in enumerate((('chrf', 'sentence chrF'), ('chrf_nodot', 'final periods stripped'))):
        for i, (p, r) in enumerate(results['people'].items()):
            c = r['claim'][metric]
            ax.errorbar(i + 0.15 * (2 * k - 1), c['diff'], yerr=[[c['diff'] - c['lo']], [c['hi'] - c['diff']]], fmt='os'[k],
                        color=f'C{k}', capsize=4, label=label if i == 0 else None)
    ax.axhline(0, color='gray', lw=1)
    ax.set_xticks(range(len(results['people'])),
                  [f"person {p}\n(vs {r['best_rule']})" for p, r in results['people'].items()], fontsize=8)
    ax.set_ylabel("rewrite model - best rule (chrF points)")
    ax.set_title("what the rewrite model adds beyond the best rule (95% paired bootstrap)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def side_by_side(msg):
    """The draft model's reply to msg, then each rewrite run's version of it."""
    import torch
    runs('draft_from', 'rewrite_runs')
    path = os.path.join(draft_from, 'best.pt') if os.path.isfile(os.path.join(draft_from, 'best.pt')) else draft_from
    ckpt = load_checkpoint(path, device)
    torch.manual_seed(seed)
    draft = chat_for(build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer'])).reply([('user', msg)], 32, 0.8, 50, None).strip()
    print(f"{draft_from} replies:  {draft}")
    for run in runs('rewrite_runs'):
        try:
            print(f"{run} rewrites: {rewrite(*load(run), draft)}")
        except ValueError as e:
            print(f"{run} can't rewrite it: {e}")


def compare_earlier():
    """The earlier (pre-issue-22) rewrite runs' committed outputs against the inverse rule, no model run: see
    --earlier above. Writes earlier_out.json/.md."""
    with open(earlier) as f:
        old = json.load(f)
    with open(f'{out}.json') as f:
        new = json.load(f)['people']['1']
    # the earlier pieces that are still person 1's test text, copies of trained-on conversations left out (sender_texts)
    still_test = set(pieces_of(sender_texts()['test'][new['sender']]))
    keep = [i for i, (o, _) in enumerate(old['pieces']) if o in still_test]
    if not keep:
        die(f"none of {earlier}'s pieces is person 1's test text: pass the earlier vibejam_results.json (see --earlier)")
    n = len(keep)
    originals, drafts = [old['pieces'][i][0] for i in keep], [old['pieces'][i][1] for i in keep]
    rule = [inverse(d, new['inverse_rule']) for d in drafts]

    def scored(texts):
        chrf = sentence_chrf(texts, originals)
        return {'chrf': chrf, 'closer': (chrf > sentence_chrf(drafts, originals)).astype(float),
                'chrf_nodot': sentence_chrf([strip_periods(t) for t in texts], [strip_periods(o) for o in originals])}
    base = scored(rule)
    rows = {}
    for kind in ('char', 'bpe'):
        runs = old['runs'][f'rewrite-tuned ({kind})']
        outs = {r: [old['outputs'][r][i] for i in keep] for r in runs}
        per_run = [scored(outs[r]) for r in runs]
        rows[kind] = {'runs': runs, 'corpus_chrf': [corpus_chrf(outs[r], originals) for r in runs],
                      'closer': [float(s['closer'].mean()) for s in per_run],
                      'minus_rule': {m: paired_bootstrap(np.mean([s[m] for s in per_run], 0), base[m]) for m in base}}
    report = {'n': n, 'rule_corpus_chrf': corpus_chrf(rule, originals), 'rule_closer': float(base['closer'].mean()),
              'rows': rows}
    md = [f"The earlier 4,000-iteration rewrite runs (their outputs in {earlier}, selected on test) against the inverse rule, "
          f"on the {n} of its {len(old['pieces'])} pieces that are still person 1's test text (copies of trained-on "
          f"conversations left out), with its drafts. Corpus chrF and closer: mean ± sample std over 2 seeds; differences: the "
          f"seeds' per-piece scores averaged, minus the rule's, paired bootstrap 95%.", "",
          "| row | corpus chrF | closer than draft | sentence chrF minus rule | closer minus rule | chrF, final periods stripped, minus rule |",
          "|---|---|---|---|---|---|",
          f"| inverse rule | {report['rule_corpus_chrf']:.1f} | {report['rule_closer']:.3f} | - | - | - |"]
    for kind, r in rows.items():
        d = r['minus_rule']
        md.append(f"| earlier rewrite-tuned ({kind}) | {mean_std(r['corpus_chrf'], 1)} | {mean_std(r['closer'], 3)} | "
                  f"{fmt_diff(d['chrf'], 2)} (p {d['chrf']['p']:.3f}) | {fmt_diff(d['closer'])} (p {d['closer']['p']:.3f}) | "
                  f"{fmt_diff(d['chrf_nodot'], 2)} (p {d['chrf_nodot']['p']:.3f}) |")
    with open(f'{earlier_out}.json', 'w') as f:
        json.dump(report, f, indent=1)
    with open(f'{earlier_out}.md', 'w') as f:
        f.write('\n'.join(md) + '\n')
    print('\n'.join(md))


def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x.tolist() if isinstance(x, np.ndarray) else float(x) if isinstance(x, np.floating) else x


def main():
    from prepare.common import SENDERS
    named = people()
    texts = sender_texts()
    results = {'max_chars': max_chars, 'rewrite_runs': rewrite_runs, 'people': {}}
    for p, runs in named.items():
        results['people'][str(p)] = measure_person(p, SENDERS[p - 1], texts, runs)
    trained = [r for rs in named.values() for r in rs]
    parents = [training(r)['init_from'] for r in trained]
    results['training'] = [training(r) for r in dict.fromkeys(parents + trained) if r and os.path.isdir(r)]
    md = markdown(results)
    with open(f'{out}.json', 'w') as f:
        json.dump(jsonable(results), f, indent=1)
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
    elif earlier:
        compare_earlier()
    else:
        main()
