"""
Plot the loss curves of one or more runs (their out_dir/log.jsonl, written by train.py) into one PNG:
train loss on the left, val loss beside it, a curriculum's phase changes as dashed lines, and, for a model kind that
measures more at each eval (the approximator's val_cosine and val_spearman), those quality curves on the right.
$ python plot.py out-shakespeare-char-cpu                 # writes out-shakespeare-char-cpu/loss.png
$ python plot.py out-bench/* --out=ablation.png           # several runs, one figure
"""

import os
import argparse

import matplotlib
matplotlib.use('Agg')  # no display needed
import matplotlib.pyplot as plt

from common import check_writable, die, read_log, write_atomic

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('runs', nargs='+', metavar='OUT_DIR', help="train.py out_dirs, each holding a log.jsonl")
parser.add_argument('--out', default=None, help="the PNG to write; default: OUT_DIR/loss.png of the first run")
args = parser.parse_args()
out = args.out or os.path.join(args.runs[0], 'loss.png')
for run in args.runs:
    if not os.path.isfile(os.path.join(run, 'log.jsonl')):
        die(f"{os.path.join(run, 'log.jsonl')} not found: is {run} a train.py out_dir?")
check_writable(out, False, '--out', 'name a .png file in a folder you can write')  # a missing folder is made
fmt = os.path.splitext(out)[1].lstrip('.').lower() or 'png'
if fmt not in plt.figure().canvas.get_supported_filetypes():
    die(f"--out={out}: matplotlib can't write .{fmt} files; name a .png (or .pdf, .svg) file")
print(f"plotting {len(args.runs)} run(s) into {out}")

logs = {run: read_log(os.path.join(run, 'log.jsonl')) for run in args.runs}  # a torn last line is left out, with a note
# what a kind measures at each eval beyond its loss (train.py logs it as val_<name>)
quality = sorted({k for rows in logs.values() for r in rows for k in r
                  if k.startswith('val_') and k not in ('val_loss', 'val_ppl') and '/' not in k})
fig, axes = plt.subplots(1, 3 if quality else 2, figsize=(18 if quality else 12, 4.5))
ax_train, ax_val = axes[:2]
for run, rows in logs.items():
    steps = [r for r in rows if 'loss' in r]
    evals = [r for r in rows if 'val_loss' in r]
    label = os.path.basename(run.rstrip('/'))
    ax_train.plot([r['iter'] for r in steps], [r['loss'] for r in steps], label=label, alpha=0.8)
    ax_val.plot([r['iter'] for r in evals], [r['val_loss'] for r in evals], marker='o', ms=3, label=label)
    for k in quality:
        axes[2].plot([r['iter'] for r in evals if k in r], [r[k] for r in evals if k in r], marker='o', ms=3,
                     label=f"{label} {k.removeprefix('val_')}" if len(args.runs) > 1 else k.removeprefix('val_'))
    for r in rows:  # a curriculum's phase changes (train.py logs them), where the loss curves bend
        if 'phase' in r:
            for ax in axes:
                ax.axvline(r['iter'], color='gray', ls='--', lw=1)
for ax, title in zip(axes, ('train loss', 'val loss', 'val quality')):
    ax.set_title(title)
    ax.set_xlabel('iteration')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
write_atomic(out, lambda f: fig.savefig(f, format=fmt, dpi=120), 'free some space, then run again')
print(f"wrote {out}")
