"""
Everything a user does with a trained BERT approximator (README "Approximator"), one entry point:
$ python embed.py text --text="any plans for the weekend?"            # the vector (its first values, its norm)
$ python embed.py file --file=lines.txt --output=vectors.npy          # one text per line, in batches
$ python embed.py index --file=lines.txt                              # a Faiss index of the lines, beside the run
$ python embed.py query --text="any plans for the weekend?" --k=5     # the index's nearest lines
$ python embed.py export --format=onnx                                # out_dir/approximator.onnx, checked by onnxruntime
$ python embed.py bench                                               # bench/approximator.json and .md
Add --quantize=True for dynamic int8 (rho's matmuls), --device=cuda for a GPU. Repeated texts come from an LRU cache.
bench measures, in one run on this machine: the teacher (sentence-transformers, fp32), the teacher exported to ONNX
and quantized to int8, model2vec distilled from the same teacher, and the student, fp32 and int8: sentences/s at
batch 1 and 64 (tokenization included), quality against the teacher (Spearman, cosine, next-message Recall@10).
"""
import os
import sys
from collections import OrderedDict
from itertools import chain

import numpy as np
import torch

from common import build_model, cannot, check_writable, configure, die, load_checkpoint, set_threads, write_atomic
from data import pad_bags
from prepare.common import read_text_file
from tokenizer import NgramTokenizer

# -----------------------------------------------------------------------------
out_dir = 'out-approximator'  # the trained student (train.py config/approximator.py)
text = ''  # text, query: the text to embed or search with
file = ''  # file, index: a text file, one text per line
output = ''  # file: where the vectors go (.npy, added if missing; a missing folder is made); default: <file>.npy
index = ''  # index, query: the index's path (.faiss and .json); default: out_dir/index
k: '[1, inf)' = 5  # query: how many lines to show
format: ('onnx', 'torchscript') = 'onnx'  # export
batch_size: '[1, inf)' = 64
quantize = False  # dynamic int8 quantization of rho's matmuls
cache_size: '[0, inf)' = 10000  # texts kept in the LRU cache of vectors (0: no cache)
device = 'cpu'
threads: '[0, inf)' = 0  # CPU threads; 0: all idle cores
bench_sentences: '[100, inf)' = 2000  # bench: held-out messages timed per model
bench_repeats: '[1, inf)' = 3  # bench: the best of this many timings
# -----------------------------------------------------------------------------
COMMANDS = ('text', 'file', 'index', 'query', 'export', 'bench')


class Embedder:
    """A student checkpoint ready to embed texts: its tokenizer, its phi/attention tables (model.Approximator.tables),
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
        if self.model._sums is None:
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
        import onnxruntime
        # the TorchScript-based exporter: torch's default (dynamo) one needs onnxscript, one more dependency
        torch.onnx.export(graph, (ids,), path + '.tmp', input_names=['ids'], output_names=['vectors'], dynamo=False,
                          dynamic_axes={'ids': {0: 'batch', 1: 'entries'}, 'vectors': {0: 'batch'}})
        os.replace(path + '.tmp', path)
        got = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'ids': ids.numpy()})[0]
    return float(np.abs(got - want).max())


def main():
    global index, output
    cmd = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith('-') else None
    configure(globals(), sys.argv[2:] if cmd else sys.argv[1:])
    if cmd not in COMMANDS:
        die(f"say what to do: python embed.py {{{','.join(COMMANDS)}}} [--key=value ...] (--help lists the keys)")
    set_threads(threads, 'cpu' if device == 'cpu' else 'cuda')
    if cmd == 'bench':
        import approximator  # the measurements, shared with the evaluation script
        approximator.bench(out_dir, bench_sentences, bench_repeats)
        return
    emb = Embedder(load_checkpoint(out_dir, device), device, quantize, cache_size)
    index = index or os.path.join(out_dir, 'index')
    if cmd == 'text':
        v = emb.embed([text], normalize=False)[0]
        print(f"{len(v)} dims, norm {np.linalg.norm(v):.4f}: [{', '.join(f'{x:.4f}' for x in v[:8])}, ...]")
        print(f"bag: {emb.tok.decode(emb.tok.encode(text)) or '(empty)'}")
    elif cmd == 'file':
        lines = read_lines(file)
        output = output or os.path.splitext(file)[0] + '.npy'
        output += '' if output.endswith('.npy') else '.npy'  # as np.save names it, so "wrote" says the real name
        # a missing folder is made (you said where the vectors go); one that can't be stops here, before the work
        check_writable(output, False, '--output', 'name a .npy file in a folder you can write')
        v = np.concatenate([emb.embed(lines[i:i + 8192], batch_size) for i in range(0, len(lines), 8192)])
        write_atomic(output, lambda f: np.save(f, v), 'free some space, then run again')
        print(f"wrote {output}: {v.shape[0]:,} unit vectors of {v.shape[1]}")
    elif cmd == 'index':
        from retrieval import ResponsePool
        lines = read_lines(file)
        ResponsePool.of(emb.embed(lines, batch_size), lines).save(index, {'file': os.path.abspath(file), 'out_dir': out_dir})
        print(f"wrote {index}.faiss and {index}.json: {len(lines):,} lines")
    elif cmd == 'query':
        from retrieval import ResponsePool
        if not os.path.isfile(index + '.faiss'):
            die(f"no index at {index}.faiss: build one first with python embed.py index --file=lines.txt")
        pool, _ = ResponsePool.load(index)
        scores, ids = pool.search(torch.from_numpy(emb.embed([text])), min(k, len(pool.texts)))
        for s, i in zip(scores[0].tolist(), ids[0].tolist()):
            print(f"{s:.3f}  {pool.texts[i]}")
    elif cmd == 'export':
        path = os.path.join(out_dir, 'approximator.onnx' if format == 'onnx' else 'approximator.pt')
        err = export(emb, format, path)
        print(f"wrote {path}; largest difference from PyTorch: {err:.2e}")


if __name__ == '__main__':
    main()
