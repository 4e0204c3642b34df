"""
Everything a user does with a trained BERT approximator (projects/approximator/README.md), one entry point:
$ python -m projects.approximator.embed text --text="any plans for the weekend?"            # the vector (its first values, its norm)
$ python -m projects.approximator.embed file --file=lines.txt --output=vectors.npy          # one text per line, in batches
$ python -m projects.approximator.embed index --file=lines.txt                              # a Faiss index of the lines, beside the run
$ python -m projects.approximator.embed query --text="any plans for the weekend?" --k=5     # the index's nearest lines
$ python -m projects.approximator.embed export --format=onnx                                # out_dir/approximator.onnx, checked by onnxruntime
$ python -m projects.approximator.embed bench                                               # projects/approximator/approximator_bench.json, .md, .png
Add --quantize=True for dynamic int8 (rho's matmuls), --device=cuda for a GPU. Repeated texts come from an LRU cache.
bench measures, in one run on this machine: the teacher (sentence-transformers, fp32), the teacher exported to ONNX
and quantized to int8, model2vec distilled from the same teacher, and the student, fp32 and int8: sentences/s at
batch 1 and 64 (tokenization included), quality against the teacher (Spearman, cosine, next-message Recall@10).
"""
import os
import sys

import numpy as np
import torch

from common import check_writable, configure, die, launch, load_checkpoint, set_threads, write_atomic
from projects.approximator.embedder import Embedder, export, read_lines

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



def main():
    global index, output
    cmd = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith('-') else None
    configure(globals(), sys.argv[2:] if cmd else sys.argv[1:])
    if cmd not in COMMANDS:
        die(f"say what to do: python -m projects.approximator.embed {{{','.join(COMMANDS)}}} [--key=value ...] (--help lists the keys)")
    set_threads(threads, 'cpu' if device == 'cpu' else 'cuda')
    if cmd == 'bench':
        sys.exit(launch('projects.approximator.eval', '--bench=True', f'--out_dir={out_dir}',  # the measurements live there
                        f'--n_sentences={bench_sentences}', f'--bench_repeats={bench_repeats}'))
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
            die(f"no index at {index}.faiss: build one first with python -m projects.approximator.embed index --file=lines.txt")
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
