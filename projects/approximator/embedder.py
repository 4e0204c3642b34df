"""
A trained BERT approximator ready to use: Embedder (its tokenizer and tables, optionally int8, an LRU cache of
vectors), export to ONNX or TorchScript, and student_encoder, the texts -> unit vectors function the evaluation
times. Shared by projects/approximator/embed.py and eval.py.
"""
import os
from collections import OrderedDict
from itertools import chain

import numpy as np
import torch

from common import build_model, cannot, die, load_checkpoint, need, read_text_file
from dataloader import pad_bags
from tokenizer import NgramTokenizer


class Embedder:
    """A student checkpoint ready to embed texts: its tokenizer, its phi/attention tables (model_approximator.Approximator.tables),
    optionally int8, and an LRU cache of vectors by text."""

    def __init__(self, ckpt, device='cpu', quantize=False, cache_size=10000):
        if why := cannot(ckpt, 'embed', ckpt['path']):
            die(why)
        self.model = build_model(ckpt).to(device).eval()
        self.tok, self.device = NgramTokenizer(ckpt['tokenizer']), device
        if self.model.mix is None:
            self.model.tables()
        if quantize:
            self.model.rho = torch.ao.quantization.quantize_dynamic(self.model.rho, {torch.nn.Linear}, dtype=torch.qint8)
        self.cache, self.cache_size = OrderedDict(), cache_size

    def bags(self, texts):
        """(B, N) entry ids of texts, -1-padded to the longest bag."""
        return pad_bags(self.tok.encode_batch(texts))

    def vectors(self, texts):
        """The model's (B, D) raw vectors of texts: by embedding_bag sums where the model has them (no padding), else
        from padded bags."""
        if not self.model.can_embed_flat():
            return self.model.embed(self.bags(texts).to(self.device))
        bags = [b[:self.model.config.block_size] for b in self.tok.encode_batch(texts)]
        offsets = np.cumsum([0] + [len(b) for b in bags[:-1]])
        ids = np.fromiter(chain.from_iterable(bags), np.int64, offsets[-1] + len(bags[-1]))
        return self.model.embed_flat(torch.from_numpy(ids).to(self.device), torch.from_numpy(offsets).to(self.device))

    @torch.no_grad()
    def embed(self, texts, batch_size=64, normalize=True):
        """(N, D) float32 vectors of texts (unit length unless normalize=False), batch by batch, cached by text."""
        texts = list(texts)
        e = np.zeros((len(texts), self.model.config.teacher_dim), dtype=np.float32)
        todo = list(range(len(texts)))
        if self.cache_size:
            todo = []
            for i, t in enumerate(texts):
                if t in self.cache:
                    self.cache.move_to_end(t)  # used now: the last to be evicted
                    e[i] = self.cache[t]
                else:
                    todo.append(i)
        for s in range(0, len(todo), batch_size):
            part = todo[s:s + batch_size]
            e[part] = self.vectors([texts[i] for i in part]).float().cpu().numpy()
            if self.cache_size:
                self.cache.update((texts[i], e[i]) for i in part)
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)  # the least recently used
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12) if normalize else e


def read_lines(path):
    """The lines of a text file (one text per line), checked as every text input is."""
    if not path:
        die("pass --file=PATH, a text file with one text per line")
    return read_text_file(path, f"--file={path}").removesuffix('\n').split('\n')


class InferenceGraph(torch.nn.Module):
    """What export writes: a -1-padded bag (B, N) in, the student's unit vectors (B, D) out, the tables inside."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return torch.nn.functional.normalize(self.model.embed(ids), dim=-1)


@torch.no_grad()
def export(emb, fmt, path):
    """Write the student as ONNX (checked against PyTorch with onnxruntime) or TorchScript; the largest difference."""
    graph = InferenceGraph(emb.model).eval()
    ids = emb.bags(['hello there, how are you doing?', 'lol', ''])
    want = graph(ids).numpy()
    if fmt == 'torchscript':
        torch.jit.save(torch.jit.trace(graph, ids), path)
        got = torch.jit.load(path)(emb.bags(['hello there, how are you doing?', 'lol', ''])).numpy()
    else:
        need('onnx', 'projects/approximator/requirements.txt')  # torch's ONNX export writes with it
        onnxruntime = need('onnxruntime', 'projects/approximator/requirements.txt')
        # the TorchScript-based exporter: torch's default (dynamo) one needs onnxscript, one more dependency
        torch.onnx.export(graph, (ids,), path + '.tmp', input_names=['ids'], output_names=['vectors'], dynamo=False,
                          dynamic_axes={'ids': {0: 'batch', 1: 'entries'}, 'vectors': {0: 'batch'}})
        os.replace(path + '.tmp', path)
        got = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'ids': ids.numpy()})[0]
    return float(np.abs(got - want).max())


def student_encoder(path, quantize=False):
    """(texts -> unit vectors, its Embedder) of the student at path; no cache: timings are of real work."""
    emb = Embedder(load_checkpoint(path), quantize=quantize, cache_size=0)
    return lambda texts, batch=64: emb.embed(texts, batch), emb


def entry_mean_encoder(path):
    """The floor: (texts -> unit vectors) the mean of the teacher's own vectors of a text's entries, the student's
    bag with nothing learned (an unknown character counts as zero)."""
    ckpt = load_checkpoint(path)
    tok, vectors = NgramTokenizer(ckpt['tokenizer']), ckpt['model']['vectors'].float()

    def encode(texts, batch=64):
        bags = tok.encode_batch(texts)
        offsets = torch.tensor(np.cumsum([0] + [len(b) for b in bags[:-1]]))
        ids = torch.tensor([i for b in bags for i in b], dtype=torch.long)
        v = torch.nn.functional.embedding_bag(ids, vectors, offsets, mode='mean').numpy()
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return encode
