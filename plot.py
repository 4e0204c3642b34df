"""
Plot the loss curves of one or more runs (their out_dir/log.jsonl, written by train.py) into one PNG.
$ python plot.py out-shakespeare-char-cpu
$ python plot.py out-bench/* --out=ablation.png
"""

import os
import sys
import json

import matplotlib
matplotlib.use('Agg')  # no display needed
import matplotlib.pyplot as plt

runs = [a for a in sys.argv[1:] if not a.startswith('--out=')]
out = next((a[6:] for a in sys.argv[1:] if a.startswith('--out=')), None)
if not runs:
    sys.exit("usage: python plot.py OUT_DIR [OUT_DIR ...] [--out=loss.png]")
out = out or os.path.join(runs[0], 'loss.png')

fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
for run in runs:
    path = os.path.join(run, 'log.jsonl')
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: is {run} a train.py out_dir?")
    rows = [json.loads(line) for line in open(path)]
    steps = [r for r in rows if 'loss' in r]
    evals = [r for r in rows if 'val_loss' in r]
    label = os.path.basename(run.rstrip('/'))
    ax_train.plot([r['iter'] for r in steps], [r['loss'] for r in steps], label=label, alpha=0.8)
    ax_val.plot([r['iter'] for r in evals], [r['val_loss'] for r in evals], marker='o', ms=3, label=label)
for ax, title in ((ax_train, 'train loss'), (ax_val, 'val loss')):
    ax.set_title(title)
    ax.set_xlabel('iteration')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=120)
print(f"wrote {out}")
