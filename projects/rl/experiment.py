"""
Every measured run of the RL phase (projects/rl/README.md, issue 22), in one command, on one CPU core:
$ python -m prepare.arith
$ python -m projects.rl.experiment          # about 45 minutes on one core; then the table:
$ python -m projects.rl.eval --plan=projects/rl/rl_sweep.json --k_per_level=0   # the README's table (no pass@k: time)
Phases (--phases, in order; each skips a run whose checkpoint exists, so a stopped experiment picks up):
- sft:     config/arith_sft.py, 3 seeds x 3 directions -> experiments/arith22-<dir>-s<seed>-sft
- sweep:   config/arith_rl.py from each direction's seed-1 parent at each learning rate in LRS; the one with the
           highest val_pass1 (greedy, VAL problems) at the last eval is that direction's lr. Writes rl_sweep.json.
- rl:      config/arith_rl.py at the direction's chosen lr from every parent (seed 1's is its sweep run)
- control: continued SFT from the same parent (config/arith_sft.py --init_from, constant lr = its min_lr, where
           the SFT schedule ended) for as many iterations as take the RL run's wall time: equal compute on this
           machine. Tokens would not do: an RL token costs a sampled forward pass, a backward and an update.
The plan (every parent, RL run and control, and the sweep) goes to projects/rl/rl_sweep.json, which
projects/rl/eval.py reads. Nothing here reads the test problems.
"""
import json
import os
import sys

from common import configure, die, launch, read_config_file, read_log

# -----------------------------------------------------------------------------
phases = 'sft,sweep,rl,control'
seeds = '1,2,3'
directions = 'forward,backward,bidirectional'
lrs = '1e-5,1e-4'  # the RL learning rates tried on val, per direction (1e-3 was cut for time: 1e-4 already fell below 1e-5 forward)
out = 'projects/rl/rl_sweep.json'
prefix = 'experiments/arith22'
# -----------------------------------------------------------------------------
SHORT = {'forward': 'fw', 'backward': 'bw', 'bidirectional': 'bi'}
CPU = ['--device=cpu', '--compile=False', '--threads=1', '--hdf5_log=']


def train(out_dir, *args):
    """One train.py run, unless out_dir already holds its checkpoint (a rerun picks up where one stopped)."""
    if os.path.isfile(os.path.join(out_dir, 'ckpt.pt')):
        print(f"{out_dir}: done before, kept", flush=True)
        return
    print(f"{out_dir}: train.py {' '.join(args)}", flush=True)
    with open(out_dir + '.log', 'w') as log:
        if launch('train.py', *args, f'--out_dir={out_dir}', *CPU, log=log, threads=1):
            die(f"{out_dir} failed: see {out_dir}.log")


def val_pass1(run):
    """The last eval's greedy pass@1 on the val problems (a bidirectional run: the mean of its two ways)."""
    last = [r for r in read_log(os.path.join(run, 'log.jsonl')) if any(k.startswith('val_pass1') for k in r)][-1]
    values = [v for k, v in last.items() if k.startswith('val_pass1')]
    return sum(values) / len(values), {k: v for k, v in last.items() if k.startswith('val_pass1')}


def seconds(run):
    """(wall seconds of training, iterations): the log's last row."""
    rows = [r for r in read_log(os.path.join(run, 'log.jsonl')) if 't' in r and 'iter' in r]
    return rows[-1]['t'], rows[-1]['iter']


def name(direction, seed, kind):
    return f"{prefix}-{SHORT[direction]}-s{seed}-{kind}"


def main():
    configure(globals(), sys.argv[1:])
    todo, ss, ds = phases.split(','), [int(s) for s in seeds.split(',')], directions.split(',')
    plan = json.load(open(out)) if os.path.isfile(out) else {}
    if 'sft' in todo:
        for d in ds:
            for s in ss:
                train(name(d, s, 'sft'), 'config/arith_sft.py', f'--direction={d}', f'--seed={s}')
    if 'sweep' in todo:
        sweep = {}
        for d in ds:
            parent, rows = name(d, ss[0], 'sft'), []
            for lr in lrs.split(','):
                run = f"{prefix}-{SHORT[d]}-s{ss[0]}-rl-lr{lr}"
                train(run, 'config/arith_rl.py', f'--init_from={parent}', f'--learning_rate={lr}', f'--seed={ss[0]}')
                score, ways = val_pass1(run)
                rows.append({'lr': float(lr), 'run': run, 'val_pass1': score, 'ways': ways,
                             'curve': [{k: r[k] for k in r if k == 'iter' or k.startswith('val_pass1')}
                                       for r in read_log(os.path.join(run, 'log.jsonl')) if 'val_loss' in r]})
            best = max(rows, key=lambda r: (r['val_pass1'], -r['lr']))  # a tie goes to the smaller step
            sweep[d] = {'parent': parent, 'trials': rows, 'lr': best['lr'], 'run': best['run']}
            tried = ', '.join(f"{r['lr']:g}: {r['val_pass1']:.3f}" for r in rows)
            print(f"{d}: lr {best['lr']:g} (val_pass1 {tried})", flush=True)
        plan['sweep'] = sweep
        plan['selected_on'] = "val_pass1: greedy pass@1 on 200 val problems (levels 1-2) at the RL run's last eval"
    runs = plan.setdefault('runs', {})
    for d in ds if 'rl' in todo or 'control' in todo else []:
        if d not in plan.get('sweep', {}):
            die(f"no chosen lr for {d}: run --phases=sweep first")
        for s in ss:
            parent, lr = name(d, s, 'sft'), plan['sweep'][d]['lr'] if 'sweep' in plan else None
            rl_run = plan['sweep'][d]['run'] if s == ss[0] else name(d, s, 'rl')  # seed 1's is its sweep run
            entry = runs.setdefault(f"{d}-s{s}", {'direction': d, 'seed': s, 'parent': parent, 'rl': rl_run})
            if 'rl' in todo:
                train(rl_run, 'config/arith_rl.py', f'--init_from={parent}', f'--learning_rate={lr}', f'--seed={s}')
            if 'control' in todo:
                rl_s, _ = seconds(rl_run)
                sft_s, sft_iters = seconds(parent)
                iters = max(1, round(rl_s / (sft_s / sft_iters)))
                entry.update(control=name(d, s, 'ctl'), control_iters=iters, rl_seconds=rl_s,
                             sft_seconds_per_iter=sft_s / sft_iters)
                train(entry['control'], 'config/arith_sft.py', f'--init_from={parent}', f'--max_iters={iters}',
                      f'--eval_interval={iters}', f"--learning_rate={read_config_file('config/arith_sft.py')['min_lr']}",
                      '--decay_lr=False', '--warmup_iters=0',
                      f'--seed={s}')
                entry['control_seconds'] = seconds(entry['control'])[0]
    with open(out, 'w') as f:
        json.dump(plan, f, indent=1)
    print(f"wrote {out}; the table: python -m projects.rl.eval --plan={out}")


if __name__ == '__main__':
    main()
