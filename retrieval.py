"""
Retrieval: texts found by their vectors. ResponsePool holds every distinct training response, embedded once by a
ChatBERT-RA model (model_chatbert.ChatBERTRA) and searched with a Faiss index; it is saved beside the checkpoint,
so later chats load it in a second (engine.RAChat answers from it). projects/approximator/embed.py searches lines.
"""
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from common import die, need


class ResponsePool:
    """Unit vectors of texts (ChatBERT-RA's responses, projects/approximator/embed.py's lines) in an exact inner-product index (cosine:
    the vectors are unit length), and the texts."""

    def __init__(self, index, texts):
        self.index, self.texts = index, texts

    @classmethod
    def of(cls, vectors, texts):
        """The pool of (N, C) float32 unit vectors and their N texts."""
        # not the core's: ChatBERT-RA's (the approximator's embed and eval name their own list)
        faiss = need('faiss', 'projects/chatbert/requirements.txt')
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, list(texts))

    @classmethod
    def load(cls, path):
        """(pool, stamp) saved at path.faiss/.json by save."""
        faiss = need('faiss', 'projects/chatbert/requirements.txt')
        with open(path + '.json') as f:
            saved = json.load(f)
        return cls(faiss.read_index(path + '.faiss'), saved['texts']), saved['stamp']

    def search(self, queries, k):
        """(scores, ids), each (Q, k), of the k best responses for each query vector (Q, C), best first."""
        scores, ids = self.index.search(np.ascontiguousarray(queries.detach().float().cpu().numpy()), k)
        return torch.from_numpy(scores), torch.from_numpy(ids)

    @classmethod
    @torch.no_grad()
    def build(cls, model, tok, responses, stops, batch_size=512):
        """The pool of response rows (N, response_len), as prepare/chatbert.py laid them out: duplicates once, and
        only whole responses (a row with one of the stops, its end token: one cut to response_len would end
        mid-sentence); each text is its row up to that token."""
        rows = np.unique(np.asarray(responses), axis=0)
        rows = rows[np.isin(rows, sorted(stops)).any(1)]
        vectors = []
        for i in tqdm(range(0, len(rows), batch_size), desc='embedding the response pool', disable=None):
            vectors.append(model.encode(torch.from_numpy(rows[i:i + batch_size].astype(np.int64)).to(model.device())).float().cpu())
        texts = [tok.decode([t for t in row[:next(j for j, t in enumerate(row) if t in stops)]])
                 for row in rows.tolist()]
        return cls.of(torch.cat(vectors).numpy(), texts)

    def save(self, path, stamp):
        """path.faiss and path.json (the texts and the stamp of the checkpoint that embedded them), each atomically."""
        faiss = need('faiss', 'projects/chatbert/requirements.txt')
        faiss.write_index(self.index, path + '.faiss.tmp')
        os.replace(path + '.faiss.tmp', path + '.faiss')
        with open(path + '.json.tmp', 'w') as f:
            json.dump({'stamp': stamp, 'texts': self.texts}, f)
        os.replace(path + '.json.tmp', path + '.json')

    @classmethod
    def for_checkpoint(cls, model, tok, ckpt, stops):
        """The pool beside ckpt (<run>/<ckpt name>_pool.faiss/.json), built from the run's training responses
        the first time, and again if the checkpoint has changed since."""
        path = os.path.splitext(ckpt['path'])[0] + '_pool'
        stamp = {'iter': ckpt['iter_num'], 'val_loss': ckpt['best_val_loss']}
        if os.path.isfile(path + '.json') and os.path.isfile(path + '.faiss'):
            pool, saved = cls.load(path)
            if saved == stamp:
                return pool
        data = os.path.join('data', ckpt['config']['dataset'], 'train_response.npy')
        if not os.path.isfile(data):
            die(f"{ckpt['path']} retrieves among its training responses, and {data} is missing: prepare it again "
                f"(python -m prepare.chatbert) from the folder you trained in")
        print(f"(embedding {data}'s responses into {path}.faiss, once for this checkpoint: a minute or two on a CPU)", flush=True)
        pool = cls.build(model, tok, np.load(data, mmap_mode='r'), stops)
        pool.save(path, stamp)
        print(f"(embedded {len(pool.texts):,} responses)")
        return pool
