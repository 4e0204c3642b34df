"""
Run a lineage of training phases (base -> mid -> sft -> rl, or any part of it) as experiments, each phase a run of
train.py started from the one before (init_from) and inheriting its direction:
$ python -m projects.backward.lineage --phases=base,mid,sft --direction=backward --name=bw
   -> experiments/bw-base, experiments/bw-mid (parent: bw-base), experiments/bw-sft (parent: bw-mid)
A recipe is the set of phase configs, config/<recipe>_<phase>.py: 'lineage' (chitchat) or 'arith', the RL task's
(a char model that learns arithmetic word problems in sft, then improves by RL; projects/rl/eval.py measures it):
$ python -m projects.backward.lineage --recipe=arith --phases=sft,rl --direction=backward --name=arith-bw
Branch from any earlier experiment, e.g. a second sft from the same mid with another learning rate:
$ python -m projects.backward.lineage --phases=sft --parent=experiments/bw-mid --name=bw-lowlr --learning_rate=2e-4
Write one experiment's report again: python -m projects.backward.lineage --report=experiments/bw-sft
Every argument that is not projects/backward/lineage.py's own goes to train.py for every phase (python train.py --help).

An experiment directory holds train.py's run (ckpt.pt, meta.json, log.jsonl, <phase>.h5), config.json (the
config the phase trained with), parent_link.json (the parent's path and the sha256 of the checkpoint it
started from), evaluations/ (projects/backward/eval.py) and RESEARCH_REPORT.md (config, lineage, curves, evaluations).
"""

import os
import sys
import json
import hashlib

from common import REPO, command, configure, die, launch, load_checkpoint, make_hint

# -----------------------------------------------------------------------------
phases = 'base,mid,sft'  # comma-separated, run in order, each from the one before
recipe = 'lineage'  # the phases' configs: config/<recipe>_<phase>.py
name = ''  # experiments/<name>-<phase>; default: the direction
parent = ''  # an experiment (or any run) the first phase starts from; '' starts base from scratch
direction = 'forward'  # 'forward' | 'backward' | 'bidirectional': the first phase's, when it has no parent
nproc: '[1, inf)' = 1  # processes per phase: > 1 runs train.py under torchrun
evaluate = True  # run projects/backward/eval.py on every phase (of a recipe it applies to: EVALUATE below)
report = ''  # only write this experiment's RESEARCH_REPORT.md again
# -----------------------------------------------------------------------------
PHASES = ('base', 'mid', 'sft', 'rl')
# what measures a recipe's phases beyond their losses: projects/backward/eval.py's tasks are chitchat's (next-turn), so only
# the lineage's chitchat models run it; the arith recipe's runs are measured by projects/rl/eval.py (pass@1, pass@k)
EVALUATE = {'lineage': True, 'arith': False}
OWN = ('--phases=', '--recipe=', '--name=', '--parent=', '--direction=', '--nproc=', '--evaluate=', '--report=', '-h', '--help')


def phase_config(phase):
    return os.path.join(REPO, 'config', f'{recipe}_{phase}.py')


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def lineage(run):
    """[run, its parent, ..., the root]: followed through parent_link.json, or the checkpoint's parent."""
    chain = [run]
    while True:
        link = os.path.join(chain[-1], 'parent_link.json')
        nxt = json.load(open(link))['parent'] if os.path.isfile(link) else load_checkpoint(chain[-1]).get('parent')
        if not nxt or nxt in chain:
            return chain
        chain.append(nxt)


def write_report(run):
    """RESEARCH_REPORT.md: the config, the lineage, the loss curves (PNG, with the ancestors') and the evaluations."""
    ckpt = load_checkpoint(run)
    chain = lineage(run)
    runs = [r for r in reversed(chain) if os.path.isfile(os.path.join(r, 'log.jsonl'))]
    with open(os.devnull, 'w') as quiet:
        if launch('plot.py', *runs, f"--out={os.path.join(run, 'curves.png')}", log=quiet):
            die(f"plotting {run}'s curves failed: python plot.py {' '.join(runs)} says why")
    lines = [f"# Research report: {os.path.basename(os.path.normpath(run))}", '',
             f"- model: {ckpt['model_kind']}, direction **{ckpt['direction']}**, {ckpt['iter_num']} iterations, "
             f"best val loss {ckpt['best_val_loss']:.4f}",
             f"- data: data/{ckpt['config']['dataset']} ({ckpt['tokenizer']['kind']} tokenizer)", '',
             '## Lineage (newest first)', '']
    for r in chain:
        link = os.path.join(r, 'parent_link.json')
        note = f", started from {json.load(open(link))['parent_sha256'][:12]}... of its parent" if os.path.isfile(link) else ''
        meta = os.path.join(r, 'meta.json')
        it = json.load(open(meta)).get('iter_num') if os.path.isfile(meta) else '?'
        lines.append(f"- `{r}` (iter {it}{note})")
    lines += ['', '## Loss curves (this run and its ancestors)', '', '![curves](curves.png)', '']
    summary = os.path.join(run, 'evaluations', 'summary.md')
    if os.path.isfile(summary):
        lines += ['## Evaluations', '', open(summary).read().strip(), '']
    lines += ['## Config', '', '| key | value |', '| --- | --- |']
    lines += [f"| {k} | `{v!r}` |" for k, v in ckpt['config'].items()]
    with open(os.path.join(run, 'RESEARCH_REPORT.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f"wrote {os.path.join(run, 'RESEARCH_REPORT.md')}")


def run_phase(phase, out_dir, parent, direction, train_args):
    """Train one phase with train.py (under torchrun for nproc > 1), then record its config and parent link.
    direction is passed only where asked for: a phase with a parent inherits the parent's."""
    parent_hash = sha256(os.path.join(parent, 'ckpt.pt')) if parent else None  # what this phase started from
    args = [phase_config(phase), f'--out_dir={out_dir}', f'--hdf5_log={phase}.h5', f'--init_from={parent or "scratch"}',
            *train_args] + ([f'--direction={direction}'] if direction else [])  # train.py refuses one that conflicts with the parent's
    print(' '.join(command('train.py', *args, nproc=nproc)), flush=True)
    if launch('train.py', *args, nproc=nproc):
        die(f"phase {phase} failed (train.py's message is above); the phases before it are kept in experiments/")
    ckpt = load_checkpoint(out_dir)
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump({'phase': phase, 'direction': ckpt['direction'], **ckpt['config']}, f, indent=2)
    if parent:
        with open(os.path.join(out_dir, 'parent_link.json'), 'w') as f:
            json.dump({'parent': os.path.abspath(parent), 'parent_sha256': parent_hash}, f, indent=2)
    if evaluate and EVALUATE.get(recipe, True):
        if launch('projects.backward.eval', f'--out_dir={out_dir}'):
            print(f"note: projects/backward/eval.py failed on {out_dir}; the run itself is fine")
    elif evaluate and phase == 'rl':
        print(f"note: measure it with python -m projects.rl.eval --runs={out_dir} (pass@1 and pass@k, beside its parent)")
    write_report(out_dir)


if __name__ == '__main__':
    explicit = configure(globals(), [a for a in sys.argv[1:] if a.startswith(OWN)])
    train_args = [a for a in sys.argv[1:] if not a.startswith(OWN)]
    if report:
        write_report(report)
        sys.exit(0)
    todo = [p.strip() for p in phases.split(',') if p.strip()]
    unknown = [p for p in todo if p not in PHASES]
    if unknown or not todo:
        die(f"unknown phase(s) {', '.join(unknown) or '(none given)'}; phases are {', '.join(PHASES)}, e.g. --phases=base,mid,sft")
    missing = [p for p in todo if not os.path.isfile(phase_config(p))]
    if missing:
        have = [p for p in PHASES if os.path.isfile(phase_config(p))]
        die(f"recipe '{recipe}' has no {', '.join(missing)} phase (config/{recipe}_{missing[0]}.py); its phases are "
            f"{', '.join(have) or 'none'}" + ("; the RL task's recipe is arith: --recipe=arith --phases=sft,rl" if 'rl' in missing else ''))
    if parent and not os.path.isfile(os.path.join(parent, 'ckpt.pt')):
        die(f"--parent={parent} holds no checkpoint: {make_hint(parent, 'pass an experiment directory that finished a phase')}")
    prev = parent
    for i, phase in enumerate(todo):
        out_dir = os.path.join('experiments', f"{name or direction}-{phase}")
        # the first phase takes the direction from scratch, or from the command line (checked against its parent)
        run_phase(phase, out_dir, prev, direction if i == 0 and (not prev or 'direction' in explicit) else '', train_args)
        prev = out_dir
