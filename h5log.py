"""
The HDF5 research log of a training run (out_dir/log.h5 by default), for the analysis a loss curve can't give:
per-layer gradient norms, the per-token losses of a fixed probe batch, activation statistics and attention
entropy per layer and head. train.py writes it for every project; h5py reads it:

    import h5py
    with h5py.File('out-run/log.h5', 'r', swmr=True) as f:  # swmr=True: also while the run writes, or after a kill
        it, loss = f['train/loss/iter'][:], f['train/loss/value'][:]

Layout: one group per series, each holding two resizable, chunked, gzip-compressed datasets that grow together:
`iter` (N,) int64, the iteration, and `value` (N, ...) float32, what was measured then. A group's `description`
attribute says what its value is. The file's attributes
hold the schema of every series (`schema`, JSON) and the run's config (`config`, JSON). Each write is flushed,
so a killed run leaves a readable file; a resumed run cuts every series back to its checkpoint and appends.
"""

import os
import json
import atexit

import numpy as np
import torch
import torch.nn.functional as F

SCHEMA = {
    'train/loss': 'mean training loss over the iterations since the last log',
    'train/lr': 'learning rate',
    'train/ms_per_iter': 'wall milliseconds per iteration, evaluation excluded',
    'train/tokens_per_s': 'training tokens per second, all processes together',
    'train/grad_norm': 'gradient norm of the whole model, before clipping',
    'train/grad_norm_per_layer': 'gradient norm of each transformer block (one column per block, in order), before clipping',
    'eval/train_loss': 'mean loss on the fixed train eval batches',
    'train/reward': "RL: mean reward of the training rollouts since the last log (dataloader.Rollouts)",
    'train/answer_tokens': 'RL: mean length of the sampled answers, in tokens',
    'train/kl': "RL: mean k1 estimate of KL(policy || SFT parent) per answer (0 unless data_args kl > 0)",
    'train/signal': 'RL: share of groups whose rewards differ (the others have zero advantage)',
    'eval/val_loss': 'mean loss on the fixed val eval batches',
    'probe/token_loss': 'loss of every target of the fixed probe batch (B, T); -1 rows/targets ignored are NaN',
    'probe/act_mean': "mean of each block's output over the probe batch",
    'probe/act_std': "standard deviation of each block's output over the probe batch",
    'probe/act_absmax': "largest absolute value of each block's output over the probe batch",
    'probe/attn_entropy': 'attention entropy in nats per layer and head (L, nh), mean over the probe queries',
}


class H5Log:
    """A write that fails (a full disk) raises, and the log is then abandoned, never closed (see abandon): the
    caller turns the log off and the run goes on. The file keeps the rows flushed before the failure."""

    def __init__(self, path, config, shapes, resume_iter=None):
        """A new log at path, or, resuming, the old one's rows up to resume_iter and then the new ones.
        shapes: {series: the shape of one value}, every series the run will write (series_shapes).
        The old log can't be read: OSError (nothing written). The new one can't be written: the error (abandoned)."""
        import h5py  # only needed when logging; train.py checks it is there
        kept = read_kept(path, resume_iter) if resume_iter is not None and os.path.isfile(path) else {}
        # SWMR (single writer, multiple readers) orders HDF5's writes so that the file on disk is always
        # consistent: it can be read while the run writes, and after a kill. Every series must exist before it
        # starts, hence the shapes up front. The new file replaces the old one only once it holds the kept rows.
        self.handles, self.series = [], {}  # every h5py object of the file, held until close: see abandon
        try:
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)  # --hdf5_log=logs/run.h5
            self.f = h5py.File(path + '.tmp', 'w', libver='latest')
            self.handles.append(self.f)
            for name, shape in shapes.items():
                g = self.f.create_group(name)
                it, value = kept.get(name, (np.zeros(0, dtype=np.int64), np.zeros((0, *shape), dtype=np.float32)))
                self.series[name] = (
                    g.create_dataset('iter', data=it, maxshape=(None,), dtype=np.int64, chunks=(256,), compression='gzip'),
                    g.create_dataset('value', data=value, maxshape=(None, *shape), dtype=np.float32,
                                     chunks=(max(1, 4096 // max(1, int(np.prod(shape)))), *shape), compression='gzip'))
                self.handles += [g, *self.series[name]]
                g.attrs['description'] = SCHEMA.get(name, '')
            self.f.attrs['schema'] = json.dumps({k: v for k, v in SCHEMA.items() if k in shapes})
            self.f.attrs['config'] = json.dumps(config, default=str)
            self.f.swmr_mode = True
            self.f.flush()  # a full disk fails here if not before
            os.replace(path + '.tmp', path)
            atexit.register(self.close_at_exit)
        except BaseException:
            self.abandon()
            try:
                os.remove(path + '.tmp')
            except OSError:
                pass
            raise

    def write(self, it, **values):
        """Append one row per series: write(100, **{'train/loss': 2.3}). Vectors keep their shape."""
        try:
            for name, value in values.items():
                for d, v in zip(self.series[name], (it, value)):
                    n = d.shape[0]
                    d.resize(n + 1, axis=0)
                    d[n] = v
            self.f.flush()  # a killed run keeps every row written so far
        except BaseException:
            self.abandon()
            raise

    def close(self):
        """Close the file; if its last flush fails (a full disk), abandon it instead and raise."""
        if not self.handles:  # closed or abandoned
            return
        try:
            self.f.flush()  # what can fail, first: HDF5 can't close a file after a failed write (see abandon)
        except BaseException:
            self.abandon()
            raise
        self.f.close()
        self.handles, self.series = [], {}

    def close_at_exit(self):
        """A run that stops early (common.die, an exception) closes its log here, before Python frees the handles:
        on a full disk, closing them that way segfaults, where close() abandons the file."""
        try:
            self.close()
        except Exception:
            pass

    def abandon(self):
        """Drop the file without closing it. After a write fails, HDF5 can't close the file: closing it, or any
        handle of it (as Python does when it frees them, at the latest when the process exits), segfaults. So the
        handles are kept alive, unclosed, until the process ends."""
        import ctypes
        for handle in self.handles:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))
        self.handles, self.series = [], {}


def read_kept(path, resume_iter):
    """{series: (iter, value)} of the rows of the log at path up to resume_iter: a killed run may have logged past its
    last checkpoint, and one stopped by a full disk may have left a row half written (a series' iter no longer
    rising, or its two datasets of different lengths), so each series keeps its leading rising rows."""
    kept = {}
    with open_closed_or_killed(path) as old:
        for name in json.loads(old.attrs['schema']):
            its, values = old[name]['iter'][:], old[name]['value']
            its = its[:min(len(its), len(values))]
            ok = its <= resume_iter
            ok[1:] &= np.diff(its) > 0
            k = len(its) if ok.all() else int(np.argmin(ok))
            kept[name] = its[:k], values[:k]
    return kept


def open_closed_or_killed(path):
    """A log no run is writing, read-only. A plain open checks the file at once (a truncated or damaged one fails
    here); only a log whose run never closed it (killed, or abandoned on a full disk) needs SWMR, which kept it
    consistent. Not SWMR first: its reader retries what it can't read, for minutes."""
    import h5py
    try:
        return h5py.File(path, 'r')
    except OSError as e:
        if 'already open for write' not in str(e):
            raise
    return h5py.File(path, 'r', swmr=True)


def probe_bytes(model, rows, block, element_size):
    """A lower bound of the memory the probe takes at once: the attention of one layer, (rows, heads, block, block),
    in the autocast dtype and then as float32 probabilities. 0 for a model without blocks."""
    blocks = layers(model)
    return rows * blocks[0].attn.n_head * block ** 2 * (element_size + 4) if blocks else 0


def series_shapes(model, probe_batch, autocast):
    """{series: shape of one value} of everything train.py will log for this model (a probe run finds them)."""
    shapes = {name: () for name in ('train/loss', 'train/lr', 'train/ms_per_iter', 'train/tokens_per_s',
                                    'train/grad_norm', 'eval/train_loss', 'eval/val_loss')}
    if layers(model):
        shapes['train/grad_norm_per_layer'] = (len(layers(model)),)
    return shapes | {name: np.shape(v) for name, v in probe(model, probe_batch, autocast).items()}


def layers(model):
    """The model's transformer blocks, if it is built from model.Block: the 'layers' of the per-layer series."""
    from model import Block
    return [m for m in model.modules() if isinstance(m, Block)]


def grad_norms(model):
    """{series: value} of gradient norms after backward: the whole model and each layer."""
    norm = lambda params: torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params if p.grad is not None] or [torch.zeros(())]))
    out = {'train/grad_norm': norm(model.parameters()).item()}
    blocks = layers(model)
    if blocks:
        out['train/grad_norm_per_layer'] = torch.stack([norm(b.parameters()) for b in blocks]).cpu().numpy()
    return out


@torch.no_grad()
def probe(model, batch, autocast):
    """{series: value} measured on the fixed probe batch: per-token losses, and per block its output's mean,
    std and largest absolute value and its attention's entropy per head. Needs logits for every target."""
    blocks = layers(model)
    acts = []
    hooks = [b.register_forward_hook(lambda m, inp, out: acts.append(out.float())) for b in blocks]
    for b in blocks:
        b.attn.record_entropy = True  # SelfAttention then keeps its attention entropy per head
    was_training = model.training
    model.eval()
    try:
        with autocast:
            logits, _ = model(*batch)
    finally:
        for h in hooks:
            h.remove()
        for b in blocks:
            b.attn.record_entropy = False
        model.train(was_training)
    out = {}
    targets = batch[1] if len(batch) > 1 else None  # batches are (inputs, targets, extras...): speakers, weights
    if (logits is not None and logits.dim() == 3 and targets is not None and targets.dtype == torch.long
            and targets.shape == logits.shape[:2]):
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1, reduction='none')
        out['probe/token_loss'] = loss.view(targets.shape).masked_fill(targets == -1, float('nan')).cpu().numpy()
    if acts:
        out['probe/act_mean'] = np.array([a.mean().item() for a in acts])
        out['probe/act_std'] = np.array([a.std().item() for a in acts])
        out['probe/act_absmax'] = np.array([a.abs().max().item() for a in acts])
        out['probe/attn_entropy'] = torch.stack([b.attn.entropy for b in blocks]).cpu().numpy()
    return out
