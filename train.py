"""
The one training loop of nanolab, for every model and project. Runs on one process:
$ python train.py config/quickstart.py --batch_size=16
or on several, with DDP (nccl on GPUs, gloo on CPUs), with the same global batch and loss curve:
$ torchrun --standalone --nproc_per_node=4 train.py config/shakespeare_char.py
and across nodes, on the master node (IP 123.456.123.456), then the same with --node_rank=1 on the other:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
(If your cluster has no Infiniband interconnect, prepend NCCL_IB_DISABLE=1.)
Resume a run where it stopped (its config comes from its checkpoint):
$ python train.py --out_dir=out-quickstart --init_from=resume --max_iters=3000
Fine-tune another run's model (base -> mid -> sft): --init_from=out-base

What differs between projects lives elsewhere: the model in a model file (common.MODELS), its batches in dataloader.py
(SOURCES), its settings in a config/ file. Every model's forward(*batch) returns (output, loss); what else the loop
asks of a model kind or a data source is one protocol each, of optional methods with defaults, written where MODELS
and SOURCES are.
The config is read once; only a curriculum phase changes it afterwards, in one place (enter_phase).
"""

import copy
import gc
import os
import sys
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, fields

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from common import (configure, config_keys, set_key, lookup, die, print0, setup_device, peak_flops, peak_memory_mb,
                    save_checkpoint, write_meta, load_checkpoint, build_model, write_atomic, append_line, read_log,
                    check_writable, check_memory, why_failed, not_a_file)
from common import MODELS
from dataloader import SOURCES, pick_dataset
import h5log
from engine import sample_replies

# -----------------------------------------------------------------------------
# default config: a small BPE GPT on the chitchat conversations; config/*.py and --key=value override.
# An annotation is the key's allowed values, checked wherever the key is set (see common.check_value).
# I/O
out_dir = 'out'
eval_interval: '[1, inf)' = 250
log_interval: '[1, inf)' = 10
eval_iters: '[1, inf)' = 50  # batches per split at each evaluation
eval_only = False  # evaluate once, print, and exit; writes nothing
always_save_checkpoint = True  # False: only when val loss improves
patience: '[0, inf)' = 0  # early stopping: end the run after this many evals without a better val loss (0: never)
keep_best = False  # also keep the best model by val loss in out_dir/best.pt (weights and config, no optimizer)
sample_prompts = []  # messages (or, without chat tokens, text openings) whose replies each eval writes into the log
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir's checkpoint) | path of another run to fine-tune (base -> mid -> sft)
overwrite = False  # let a new run replace the run already in out_dir
hdf5_log = 'log.h5'  # the HDF5 research log in out_dir (h5log.py: grad norms, probe losses, activations, attention); '' for none
# wandb logging
wandb_log = False
wandb_project = 'nanolab'
wandb_run_name = 'run'
# data
dataset = 'chitchat'  # data/<dataset>, made by a prepare/ script; evaluation (val_loss, best checkpoint) is on it
data_mix = {}  # {dataset: weight}: what training draws from, micro-batch by micro-batch; {} is {dataset: 1}
data_source = 'tokens'  # a name in dataloader.SOURCES
data_args = {}  # what the data source takes beyond the common arguments, e.g. RL's {'samples': 8, 'temperature': 1.0},
                # TurnGPT's {'semantic_init': True, 'eval_analogies': True} (dataloader.SOURCES)
direction: ('forward', 'backward', 'bidirectional') = 'forward'  # the order the model reads documents in; saved in the checkpoint
backward_frac: '[0, 1]' = 0.5  # bidirectional: the share of each batch's rows read backward
gradient_accumulation_steps: '[1, inf)' = 1  # micro-steps per optimizer step, over all processes together
batch_size: '[1, inf)' = 12  # rows per micro-step; the global batch, gradient_accumulation_steps x batch_size, is the same on any number of processes
block_size: '[1, inf)' = 256
# model
model_kind = 'gpt'  # a name in common.MODELS
model_args = {}  # the kind's own config fields that no key here sets, e.g. the approximator's {'pooling': 'mean'}
n_layer: '[1, inf)' = 6
n_head: '[1, inf)' = 6
n_embd: '[1, inf)' = 384  # a multiple of n_head
dropout: '[0, 1)' = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = False
pos: ('rope', 'learned') = 'rope'
norm: ('layer', 'rms') = 'layer'
mlp: ('relu2', 'gelu') = 'relu2'
qk_norm = False
tie_weights = True
causal = True
turn_dim: '[0, inf)' = 0  # TurnGPT: > 0 gives each token a vector of this size, mapped to n_embd (0: dense embeddings)
turn_map: ('linear', 'poly') = 'linear'  # turn_dim's map to the width: linear (ALBERT) or the source's polynomials
n_speakers: '[0, inf)' = 0  # TurnGPT: 2 adds a user/assistant speaker embedding (needs data_source='speakers')
# AdamW
learning_rate: '(0, inf)' = 1e-3
max_iters: '[0, inf)' = 5000
weight_decay: '[0, inf)' = 1e-1
beta1: '[0, 1)' = 0.9
beta2: '[0, 1)' = 0.99
grad_clip: '[0, inf)' = 1.0  # 0 disables
lr_scales = {}  # {parameter-name prefix: lr multiplier}, e.g. {'transformer.turn': 0.5}; the rest get 1
# learning rate schedule: linear warmup, then cosine down to min_lr (or wsd: flat, then a linear cooldown)
decay_lr = True
lr_schedule: ('cosine', 'wsd') = 'cosine'
cooldown_frac: '(0, 1]' = 0.2  # wsd: the last share of max_iters, over which the lr falls linearly to min_lr
warmup_iters: '[0, inf)' = 100
lr_decay_iters: int = None  # None: max_iters (~= max_iters per Chinchilla)
min_lr: '[0, inf)' = 1e-4  # ~= learning_rate/10 per Chinchilla
# curriculum: {iteration: {key: value, ...}}; from that iteration on, those config values apply (block_size,
# batch_size, learning_rate, data_mix, ...: see PHASE_KEYS) until a later phase changes them
phases = {}
advance_when = {}  # {metric: threshold}: start the next phase early, at the eval where every metric is <= its
                   # threshold (val_loss, val_ppl, train_loss, val_loss/<dataset>, analogy/distance_rel, ...)
# system
device = 'auto'  # 'auto' (cuda, then mps, then cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'  # auto: bfloat16 where supported, else float32; float16 is CUDA only
compile: bool = None  # torch.compile; None: on for CUDA, off elsewhere
threads: '[0, inf)' = 0  # CPU threads per process; 0: OMP_NUM_THREADS if set, else the cores idle at start
seed: '[0, 9.2e18]' = 1337  # below 2**63: torch's generators take 64 bits, and seed + rank, seed + 3 must fit too
# keys a resumed run may change (the others come from its checkpoint), and keys a curriculum phase may set
RESUMABLE = {'out_dir', 'init_from', 'max_iters', 'eval_interval', 'log_interval', 'eval_iters', 'eval_only',
             'always_save_checkpoint', 'learning_rate', 'decay_lr', 'warmup_iters', 'lr_decay_iters', 'min_lr',
             'wandb_log', 'wandb_project', 'wandb_run_name', 'device', 'dtype', 'compile', 'threads', 'hdf5_log',
             'keep_best', 'sample_prompts', 'patience'}
PHASE_KEYS = {'block_size', 'batch_size', 'gradient_accumulation_steps', 'learning_rate', 'min_lr', 'warmup_iters',
              'lr_decay_iters', 'decay_lr', 'grad_clip', 'eval_interval', 'log_interval', 'eval_iters', 'data_mix',
              'advance_when'}
# -----------------------------------------------------------------------------
KEYS = config_keys(globals())
explicit = configure(globals(), sys.argv[1:])  # {key: where it was set}
# -----------------------------------------------------------------------------
# every check before anything is written: a run that stops here leaves out_dir exactly as it was

if not eval_only:  # out_dir, and the files the run writes there, can be written
    check_writable(out_dir, True, '--out_dir', "pass a folder: a new one for a new run, or a run's own to resume it "
                   "(to start from a checkpoint file's weights: --init_from=FILE)")
    for name in ('ckpt.pt', 'meta.json', 'log.jsonl', 'best.pt', hdf5_log):
        if name and not_a_file(os.path.join(out_dir, name)):
            die(f"{os.path.join(out_dir, name)} is a {not_a_file(os.path.join(out_dir, name))}, where the run "
                f"writes a file; move it away")
ckpt = None  # the checkpoint a run starts from: its own (resume) or its parent's (fine-tuning)
if init_from == 'resume':
    # a resumed run is the same run: its config comes from the checkpoint, and only RESUMABLE keys may change
    ckpt = load_checkpoint(out_dir)
    missing = sorted({'optimizer', 'scaler', 'rng', 'data', 'config'} - ckpt.keys())
    if missing:  # a best.pt keeps the weights only; a foreign checkpoint may lack more
        die(f"{ckpt['path']} has no {'optimizer state' if 'optimizer' in missing else ' or '.join(missing)}, so a "
            f"run can't resume from it; fine-tune from it in a new folder (--init_from={ckpt['path']} --out_dir=NEW), "
            f"or resume its run from the run's own ckpt.pt")
    changed = []
    for k, saved in ckpt['config'].items():
        if k not in KEYS or saved == globals()[k] or k in ('out_dir', 'init_from'):
            continue
        if k not in explicit:
            globals()[k] = saved
        elif k in RESUMABLE:
            changed.append(f"{k} {saved!r} -> {globals()[k]!r}")
        else:
            die(f"{explicit[k]} differs from the run's own {k}={saved!r}: a resumed run keeps its config except "
                f"{', '.join(sorted(RESUMABLE - {'out_dir', 'init_from'}))}; to change it, fine-tune: --init_from={out_dir}")
elif init_from != 'scratch':
    # fine-tuning: the parent's architecture and direction, whatever the config says; a conflicting key is
    # refused, not ignored
    ckpt = load_checkpoint(init_from)
    inherited = {'model_kind': ckpt['model_kind'], 'direction': ckpt.get('config', {}).get('direction', 'forward'), **ckpt['model_args']}
    for k in sorted(inherited.keys() & set(KEYS) - {'dropout', 'block_size'}):  # these two may change
        if k in explicit and inherited[k] != globals()[k]:
            die(f"{explicit[k]} conflicts with {init_from}'s {k}={inherited[k]!r}: a fine-tuned model keeps its "
                f"parent's architecture and direction; drop the key (or train from scratch)")
        globals()[k] = inherited[k]
    for k, v in model_args.items():  # the kind's own fields are the parent's too
        if ckpt['model_args'].get(k, v) != v:
            die(f"{explicit['model_args']} conflicts with {init_from}'s {k}={ckpt['model_args'][k]!r}: a fine-tuned "
                f"model keeps its parent's architecture; drop the key (or train from scratch)")


def curriculum():
    """(start, config) for the base config and each phase: what is in force from that iteration on."""
    c = {k: globals()[k] for k in KEYS}
    yield 0, dict(c)
    for start in sorted(phases):
        c.update(phases[start])
        yield start, dict(c)


for start, overrides in phases.items():  # check the curriculum now, not hours into the run
    if type(start) is not int or start < 0 or type(overrides) is not dict:
        die(f"phases must map iterations (int >= 0) to dicts of config keys, got {start!r}: {overrides!r}")
    for k, v in overrides.items():
        set_key(dict(globals()), k, v, f'phases[{start}]')
        if k not in PHASE_KEYS:
            die(f"phases[{start}] sets '{k}', which a phase can't change (the model and data are set up once); "
                f"a phase may set {', '.join(sorted(PHASE_KEYS))}")
for start, c in curriculum():
    decay_iters = c['lr_decay_iters'] if c['lr_decay_iters'] is not None else c['max_iters']
    if c['decay_lr'] and c['max_iters'] > c['warmup_iters'] >= decay_iters:
        die(f"warmup_iters={c['warmup_iters']} must be less than lr_decay_iters={decay_iters}"
            + (f" (in phases[{start}])" if start else '') + "; lower warmup_iters or raise lr_decay_iters")
if decay_lr and lr_decay_iters is not None and lr_decay_iters > max_iters:
    print0(f"note: lr_decay_iters={lr_decay_iters} > max_iters={max_iters}: the run ends before the lr reaches "
           f"min_lr (leave lr_decay_iters unset to follow max_iters)")
config = {k: globals()[k] for k in KEYS}  # what gets logged and saved: the config this run really uses

ddp, rank, local_rank, world_size, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
master_process = rank == 0  # does the logging and checkpointing
torch.manual_seed(seed + rank)  # dropout differs per rank; the data sampler is seeded the same on all
compiling = device_type == 'cuda' if compile is None else compile


def split_batch(accum, rows):
    """(micro-steps, rows per micro-step) of each process, so that the processes together train on the global
    batch accum x rows exactly as one process would: whole micro-steps each where they divide evenly, else
    every micro-step's rows split among them."""
    if accum % world_size == 0:
        return accum // world_size, rows
    if rows % world_size == 0:
        return accum, rows // world_size
    die(f"the global batch of gradient_accumulation_steps={accum} x batch_size={rows} rows can't be split evenly "
        f"over {world_size} processes; make either a multiple of {world_size}")


def check_mapping(key, mapping, rule, ok, where=''):
    """A {name: number} key (data_mix, advance_when, lr_scales): one line for the first entry that breaks its rule."""
    for name, v in mapping.items():
        if type(name) is not str or type(v) not in (int, float) or not ok(v):
            die(f"{key} maps {rule}, got {name!r}: {v!r}{where}")


STARTS = sorted(phases)  # the iterations the curriculum's phases start at, at the latest
check_mapping('lr_scales', lr_scales, 'parameter-name prefixes to multipliers >= 0', lambda v: v >= 0)
for start, c in curriculum():
    split_batch(c['gradient_accumulation_steps'], c['batch_size'])  # dies now, not at the phase
    where = f" (in phases[{start}])" if start else ''
    check_mapping('data_mix', c['data_mix'], 'dataset names to weights > 0', lambda v: v > 0, where)
    check_mapping('advance_when', c['advance_when'], 'metric names to thresholds (numbers)', lambda v: True, where)


# -----------------------------------------------------------------------------
# the curriculum: the one place the config changes once read. nanoGPT's train.py never changes its config; a
# curriculum must, so a phase's keys are set here and nowhere else, and what follows from them with them

def enter_phase(at, why=None):
    """Curriculum phase len(entered) + 1 is in force from iteration `at`: its keys over the config in force. why:
    what started it, printed and logged; None at start-up, for a phase in force from the start or before the
    checkpoint the run resumes."""
    start = STARTS[len(entered)]
    entered.append(at)
    for k, v in phases[start].items():
        set_key(globals(), k, v, f'phases[{start}]')
    follow_config()
    if why:
        print0(f"iter {iter_num}: phase {len(entered)} of {len(STARTS)} ({why}): {phases[start]}")
        log({'iter': iter_num, 'phase': len(entered), 'why': why, 'set': phases[start]})


def follow_config():
    """What follows from the config in force: each process's micro-steps and rows, the sources' sizes, the mix, the
    global tokens per iteration (for tok/s and MFU)."""
    global local_accum, local_batch, tokens_per_iter, mix
    local_accum, local_batch = split_batch(gradient_accumulation_steps, batch_size)
    for source in sources.values():
        source.block_size, source.batch_size = block_size, local_batch
    mix = data_mix or {dataset: 1.0}
    tokens_per_iter = gradient_accumulation_steps * batch_size * block_size


# the model's positions, and every split's length, must cover the largest block size the curriculum reaches
max_block_size = max(c['block_size'] for _, c in curriculum())
data_cls = lookup(SOURCES, data_source, 'data_source')
# every dataset the curriculum mixes in, loaded once; `dataset` first: evaluation and the tokenizer are its
names = [dataset] + sorted({n for _, c in curriculum() for n in c['data_mix']} - {dataset})
try:
    sources = {n: data_cls(os.path.join('data', n), max_block_size, batch_size, device, seed, rank, world_size, direction,
                           backward_frac, **data_args) for n in names}
except TypeError as e:  # an argument the source doesn't take
    die(f"data_source '{data_source}' does not take data_args {data_args} ({e})")
data = sources[dataset]
for n, source in sources.items():
    if source.tokenizer.info != data.tokenizer.info:
        die(f"data/{n} was made with another tokenizer than data/{dataset}; a mix shares one: prepare it with "
            f"--tokenizer=data/{dataset}")
mix_generator = torch.Generator().manual_seed(seed + 3)  # which dataset each micro-batch comes from
METRICS = {'val_loss', 'val_ppl', 'train_loss'} | {f'val_loss/{n}' for n in names} | set(data.measures)
for start, c in curriculum():
    for k in c['advance_when']:
        if k not in METRICS:
            die(f"advance_when{' in phases[' + str(start) + ']' if start else ''} names '{k}'; it can use "
                f"{', '.join(sorted(METRICS))}")


def meta_model(build):
    """build() on the meta device, which allocates nothing: a model's size before it is made. None for a kind that
    can't be built there (its memory is then not checked); a ValueError (a bad config) is raised as building would."""
    try:
        with torch.device('meta'):
            return build()
    except ValueError:
        raise
    except Exception:
        return None


def check_memory_fits(model):
    """One line, before a step allocates it, if the memory of training `model` (a real one or a meta_model) surely
    can't fit: a huge model, batch_size or block_size. The sizes are lower bounds: float32 weights, gradients and
    AdamW's two moments (16 bytes a parameter), 8 bytes a token, width and block kept for backward, and the
    attention matrices the HDF5 log's probe forms; a run refused could never run, one that passes still may not."""
    if model is None:
        return
    params = sum(p.numel() for p in model.parameters())
    tokens = max(split_batch(c['gradient_accumulation_steps'], c['batch_size'])[1] * c['block_size'] for _, c in curriculum())
    blocks = len(h5log.layers(model)) if not eval_only else min(1, len(h5log.layers(model)))  # no_grad keeps one's
    processes = int(os.environ.get('LOCAL_WORLD_SIZE', 1)) if device_type == 'cpu' else 1  # a CPU's memory is shared
    check_memory(f"{'evaluating' if eval_only else 'training'} {model_kind} ({params:,} parameters; {tokens:,} tokens a micro-step through {blocks} "
                 f"blocks of width {arch.get('n_embd', 0)})",
                 params * (4 if eval_only else 16) + 8 * tokens * arch.get('n_embd', 0) * blocks, device,
                 "lower batch_size (raise gradient_accumulation_steps to keep the global batch), block_size, or the "
                 "model's size", processes)
    if hdf5_log and master_process and not eval_only:
        check_memory(f"the HDF5 log's probe (the attention of {config['batch_size']} rows x {config['block_size']:,} "
                     f"tokens, each layer)", h5log.probe_bytes(model, config['batch_size'], config['block_size'], ptdtype.itemsize),
                     device, "lower block_size or batch_size, or run without the HDF5 log: --hdf5_log=''", processes)


def check_model_args(config_cls):
    """model_args sets the model kind's own fields: those of its config dataclass (common.MODELS) that no key above
    sets and the data doesn't decide, each with a value of its default's type; one line for the first that isn't."""
    own = {f.name: f.default for f in fields(config_cls)
           if f.name not in KEYS and f.name != 'vocab_size' and f.name not in data.model_args}
    for k, v in model_args.items():
        if k not in own:
            die(f"model_args sets '{k}', which is not a field of {model_kind}'s own ({', '.join(own) or 'it has none'})"
                + (f"; set --{k} itself" if k in KEYS else ''))
        if type(v) is not type(own[k]) and not (type(own[k]) is float and type(v) is int):
            die(f"model_args['{k}'] expects {type(own[k]).__name__}, got {type(v).__name__} {v!r}")


# -----------------------------------------------------------------------------
# model: from scratch, resumed from out_dir, or started from another run's weights
iter_num, best_val_loss, parent, tokens_seen, formats = 0, 1e9, None, 0, []  # formats: see below
entered, stale = [], 0  # the iteration each phase began at; evals since val loss last improved (patience)
began = []  # a resumed run's `entered`, from its checkpoint: those phases are put in force again below
saved_iter = None  # the iteration of out_dir's checkpoint: what a failed write says to resume from
config_cls, model_cls = lookup(MODELS, model_kind, 'model_kind')  # a fine-tuned run's model_kind is its parent's
check_model_args(config_cls)
if ckpt is None:
    # the fields of the kind's config dataclass: the keys above of the same names, the kind's own (model_args), then
    # what the data decides; the defaults fill the rest. The checkpoint keeps them all as its model_args
    arch = {k: config[k] for k in (f.name for f in fields(config_cls)) if k in config} | model_args
    arch |= {'vocab_size': data.tokenizer.vocab_size, 'block_size': max_block_size}
    arch |= {k: v for k, v in data.model_args.items() if k in {f.name for f in fields(config_cls)}}
    try:
        model_config = config_cls(**arch)
        arch = asdict(model_config)
        check_memory_fits(meta_model(lambda: model_cls(model_config)))
        model = model_cls(model_config)
    except ValueError as e:  # what the model's config rejects (common.check_value has done the ranges)
        die(f"{model_kind}: {e}")
    note = data.init_model(model)  # what the data sets of a new model's weights (the approximator's entries, ...)
    start_line = "from scratch" + (f"; {note}" if note else '')
else:
    if ckpt['tokenizer'] != data.tokenizer.info:
        die(f"{ckpt['path']} was trained with another tokenizer than data/{dataset}'s; "
            f"train on data made with the same tokenizer")
    arch = dict(ckpt['model_args'], dropout=dropout)  # the architecture is the checkpoint's; dropout may change
    formats = list(ckpt.get('formats', []))
    parent = ckpt.get('parent')
    if max_block_size > arch['block_size']:
        die(f"block_size {max_block_size} is larger than the checkpoint's {arch['block_size']}; "
            f"continue with --block_size={arch['block_size']} or less")
    ckpt['model_args'] = arch
    model = build_model(ckpt)
    check_memory_fits(model)
    where = f"iter {ckpt['iter_num']}, val loss {ckpt['best_val_loss']:.4f}"
    if init_from == 'resume':
        iter_num, best_val_loss, began = ckpt['iter_num'], ckpt['best_val_loss'], ckpt.get('phases_entered', [])
        saved_iter = iter_num
        tokens_seen, stale = ckpt.get('tokens_seen', 0), ckpt.get('stale_evals', 0)
        start_line = f"resuming {ckpt['path']} at {where}" + (f"; changed: {', '.join(changed)}" if changed else '')
    else:
        parent = os.path.abspath(init_from)  # lineage: this run descends from that one
        start_line = f"fine-tuning {ckpt['path']} ({where})"
model.to(device)
for source in sources.values():  # a source that samples from the model it trains (RL's rollouts), and its parent
    source.bind(model, autocast, parent)
# the data formats this model and its ancestors were trained on ('text', 'rewrite', ...), so a consumer knows what it
# can do: sample.py's rewrite mode asks for 'rewrite'
formats += [f for f in [data.meta.get('format', 'text')] if f not in formats]

# a GradScaler only for float16, which only CUDA runs; a no-op otherwise
scaler = torch.amp.GradScaler('cuda', enabled=(ptdtype == torch.float16))
try:
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, lr_scales)
except ValueError as e:
    die(str(e))
if init_from == 'resume':
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    state = ckpt['data'] if 'sources' in ckpt['data'] else {'sources': {dataset: ckpt['data']}}  # older runs: one source
    for n, source_state in state['sources'].items():
        sources[n].load_state_dict(source_state)
    if 'mix' in state:
        mix_generator.set_state(state['mix'])
    if len(ckpt['rng']) == world_size:  # dropout continues as if never stopped
        torch.set_rng_state(ckpt['rng'][rank]['cpu'])
        if device_type == 'cuda' and ckpt['rng'][rank]['cuda'] is not None:
            torch.cuda.set_rng_state(ckpt['rng'][rank]['cuda'])
    else:  # saved by another number of processes: the data stream and global batch continue exactly, dropout can't
        torch.manual_seed(seed + rank + iter_num)
        print0(f"note: checkpoint saved by {len(ckpt['rng'])} processes, resumed on {world_size}: the batches "
               f"continue exactly, dropout draws new masks")

follow_config()  # the base config's, with or without a curriculum
for at in began:  # the phases a resumed run had entered, in force again
    enter_phase(at)
while len(entered) < len(STARTS) and STARTS[len(entered)] <= iter_num:  # phases at 0 (or a resumed run's from
    enter_phase(STARTS[len(entered)])                                     # before the checkpoint saved them)
if entered:
    print0(f"curriculum: phase {len(entered)} of {len(STARTS)} in force (since iter {entered[-1]})")
print0(f"{model_kind}: {model.get_num_params() / 1e6:.2f}M parameters, {start_line}")
for line in model.describe():  # what a model kind wants known, e.g. TurnGPT's compression
    print0(line)
print0(f"data/{dataset} ({data_source}, {data.tokenizer.kind} tokenizer of {data.tokenizer.vocab_size:,}), "
       f"{tokens_per_iter:,} tokens per iteration ({gradient_accumulation_steps} micro-steps x {batch_size} rows "
       f"x {block_size}), {max_iters:,} iterations")
print0(f"on {device} ({str(ptdtype).removeprefix('torch.')}, {world_size} process{'es' if world_size > 1 else ''}"
       + (f", {torch.get_num_threads()} CPU threads each" if device_type == 'cpu' else '') + ")"
       + (f", writing {out_dir}/" if not eval_only else ", evaluating only"))

raw_model = model
if compiling:
    print0("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
eval_model = model  # evaluation bypasses DDP: each process evaluates its own batches, no collectives
if ddp:
    # our buffers (rotary tables) are the same on every rank: no need to broadcast them at every forward
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None, broadcast_buffers=False)


def whole_batch(source, split, generator, rows, block):
    """A batch of `rows` rows of `block` tokens as one process draws it (a call draws world_size of them and hands
    this rank its own), whatever split of the rows training uses: for evaluation and the probe, which are the same
    on any number of processes. A copy of the source draws it: the source keeps training's sizes."""
    sized = copy.copy(source)
    sized.batch_size, sized.block_size = rows, block
    return sized.get_batch(split, generator)


def train_batch():
    """The next micro-batch: from one dataset of the mix, drawn by weight (the same draw on every rank)."""
    return sources[pick_dataset(mix, mix_generator)].get_batch('train')


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches of each split at every eval, on any number of processes: the
    batches one process would draw (batch_size rows each), dealt out to the processes in turn. Train and val of
    `dataset`, and val of every other dataset in the mix in force."""
    out = {}
    eval_model.eval()
    measures = data.EVAL_METRICS  # what the source measures of a val batch's output beyond the loss (eval_metrics)
    for name, split in [(dataset, 'train'), (dataset, 'val')] + [(n, 'val') for n in mix if n != dataset]:
        generator = torch.Generator().manual_seed(seed + 1)
        wanted = measures if (name, split) == (dataset, 'val') else ()
        total = torch.zeros(2 + len(wanted), device=device)  # summed batch losses, batches, then the kind's metrics
        for k in range(0, eval_iters, world_size):
            # batch k + rank of the sequence one process draws
            batch = whole_batch(sources[name], split, generator, batch_size, block_size)
            if k + rank < eval_iters:
                with autocast:
                    output, loss = eval_model(*batch)
                part = torch.stack([loss.float(), torch.ones((), device=device)])  # no sync with the device here
                if wanted:
                    found = data.eval_metrics(output, *batch)
                    part = torch.cat([part, torch.tensor([found[m] for m in wanted], device=device)])
                total += part
        if ddp:
            dist.all_reduce(total)
        out[f'{split}_loss' if name == dataset else f'val_loss/{name}'] = (total[0] / total[1]).item()
        out.update({f'val_{m}': (total[2 + i] / total[1]).item() for i, m in enumerate(wanted)})
    out['val_ppl'] = math.exp(min(out['val_loss'], 50.0))
    out.update(data.measure(raw_model))  # what the source measures of the model itself (RL's pass@1, analogies)
    eval_model.train()
    return out


def get_lr(it):
    if not decay_lr:
        return learning_rate
    decay_iters = lr_decay_iters if lr_decay_iters is not None else max_iters
    if it < warmup_iters:  # 1) linear warmup
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if lr_schedule == 'wsd':  # warmup-stable-decay: each phase's lr, flat, then linearly to min_lr at the end
        cooldown = max(1, round(cooldown_frac * max_iters))
        return learning_rate + (min_lr - learning_rate) * min(1.0, max(0, it - (max_iters - cooldown)) / cooldown)
    if it >= decay_iters:  # 2) at the end of the decay and past it, min_lr
        return min_lr
    decay_ratio = (it - warmup_iters) / (decay_iters - warmup_iters)  # 3) in between, cosine (never 0/0 here)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def rng_states():
    """Every rank's RNG state, so a resumed run draws the same dropout masks on each."""
    state = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    if not ddp:
        return [state]
    states = [None] * world_size
    dist.all_gather_object(states, state)
    return states


LOG = os.path.join(out_dir, 'log.jsonl')


def resume_advice():
    """What to do after a write failed: the run can go on from its last checkpoint, which a failed write leaves whole."""
    if saved_iter is None:
        return "no checkpoint is saved yet: free some space, then run again"
    return (f"{os.path.join(out_dir, 'ckpt.pt')} of iter {saved_iter} is whole: free some space, then continue "
            f"with --init_from=resume")


def log(entry):
    """Append to out_dir/log.jsonl (plot.py draws it) and wandb. An append that fails (a full disk) stops the run
    with one line and no torn line: the run then resumes from its last checkpoint, the log cut back to it, and
    loses nothing, where going on would leave a gap in the log."""
    if master_process and not eval_only:
        append_line(LOG, json.dumps(entry), f"the run stops at iter {iter_num}; {resume_advice()}")
        if wandb_log:
            wandb.log(entry)


def h5_write(it, **values):
    """Append to the HDF5 log. The log is extra: a write that fails (a full disk) turns it off with one line, and
    training goes on."""
    global h5
    try:
        h5.write(it, **values)
    except Exception as e:
        h5 = None
        print0(f"note: the HDF5 log {H5_PATH} stopped at iter {it} ({why_failed(e)}); training goes on without it, "
               f"log.jsonl and the checkpoints as before")


def save(improved):
    """Save the checkpoint (and best.pt), then say so. Rank 0 writes; every rank then learns whether it could, so a
    write that fails (a full disk) stops all processes with rank 0's one line, where rank 0 stopping alone would
    leave the others to fail at their next collective with a traceback."""
    global saved_iter
    ckpt = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
            'model_kind': model_kind, 'model_args': arch, 'tokenizer': data.tokenizer.info, 'direction': direction,
            'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config, 'parent': parent,
            'phases_entered': entered, 'tokens_seen': tokens_seen, 'stale_evals': stale, 'formats': formats, 'rng': rng_states(),
            'data': {'sources': {n: s.state_dict() for n, s in sources.items()}, 'mix': mix_generator.get_state()}}
    best = keep_best and improved
    failed = None
    if master_process:
        try:
            save_checkpoint(out_dir, ckpt, advice=resume_advice())
            saved_iter = iter_num
            if best:  # the weights to use, apart from the state to resume from
                save_checkpoint(out_dir, {k: v for k, v in ckpt.items() if k not in ('optimizer', 'scaler', 'rng')},
                                'best.pt', resume_advice())
        except SystemExit as e:  # common.die's one line: what failed, why, what to do
            failed = e
    if ddp:
        flag = torch.tensor(failed is not None, dtype=torch.int32, device=device)
        dist.broadcast(flag, 0)
        failed = failed or (SystemExit(1) if flag.item() else None)
    if failed:
        raise failed
    print0(f"saved checkpoint to {out_dir}" + (" (and best.pt)" if best else ''))


def stop_if_not_finite(what, value):
    if not math.isfinite(value):
        die(f"iter {iter_num}: {what} is {value}; stopping without saving this state (lower learning_rate, "
            f"raise warmup_iters or check the data; --init_from=resume restarts from the last checkpoint)")


def source_stats():
    """{name: mean} of what the data source measured while drawing batches since the last log (RL: the reward,
    the answers' length), averaged over the processes; {} for sources that measure nothing."""
    stats = data.pop_stats()
    if ddp and stats:
        values = torch.tensor(list(stats.values()), device=device)
        dist.all_reduce(values, op=dist.ReduceOp.AVG)
        stats = dict(zip(stats, values.tolist()))
    return stats


def format_eta(seconds):
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


if init_from != 'resume' and not eval_only and not overwrite and os.path.isfile(os.path.join(out_dir, 'ckpt.pt')):
    die(f"{out_dir} already holds a run: continue it with --init_from=resume, choose another --out_dir, "
        f"or pass --overwrite=True to replace it")

# -----------------------------------------------------------------------------
# every check has passed: from here on the run writes to out_dir
if master_process and not eval_only:
    os.makedirs(out_dir, exist_ok=True)
    if init_from != 'resume':  # the checks let this run replace out_dir's run only if asked (overwrite)
        for name in ('ckpt.pt', 'meta.json'):
            if os.path.isfile(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    kept = []  # a new run starts a new log; a resumed one keeps what was logged up to its checkpoint
    if init_from == 'resume' and os.path.isfile(LOG):
        kept = [row for row in read_log(LOG) if row.get('iter', 0) <= iter_num]
        write_meta(out_dir, ckpt)  # meta.json may be one save behind ckpt.pt if the run was killed between them
    write_atomic(LOG, lambda f: f.write(''.join(json.dumps(row) + '\n' for row in kept).encode()), resume_advice())
h5 = None  # the HDF5 research log, rank 0's
H5_PATH = os.path.join(out_dir, hdf5_log)
if hdf5_log and master_process and not eval_only:
    try:
        import h5py  # noqa: F401 (only to know it is there)
    except ImportError:
        print0("note: h5py is not installed, so the HDF5 research log is off (pip install h5py)")
    else:
        # fixed, from val, in the base config's shape: the same all run, whatever phase a resume lands in
        probe_batch = whole_batch(data, 'val', torch.Generator().manual_seed(seed + 2), config['batch_size'], config['block_size'])
        shapes = h5log.series_shapes(raw_model, probe_batch, autocast) | {f'train/{k}': () for k in data.STATS}
        try:
            h5 = h5log.H5Log(H5_PATH, config, shapes, iter_num if init_from == 'resume' else None)
        except Exception as e:  # the log is extra: a run goes on without it
            print0(f"note: the HDF5 log is off for this run: {H5_PATH} "
                   + (f"can't be read ({why_failed(e)}); move it away to start a new one" if init_from == 'resume'
                      and os.path.exists(H5_PATH) else f"can't be written ({why_failed(e)})"))
ckpt = None  # free up memory
if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# -----------------------------------------------------------------------------
# the loop
peak = peak_flops(device_type)
t_start = t0 = time.time()
train_loss = torch.zeros((), device=device)  # summed over micro-steps between logs; read only at log time
steps_since_log = 0
evaluated = init_from == 'resume'  # a resumed run's first iteration was evaluated before its checkpoint was saved
while True:
    while len(entered) < len(STARTS) and STARTS[len(entered)] <= iter_num:
        enter_phase(iter_num, f"its start, iter {STARTS[len(entered)]}")
    lr = get_lr(iter_num)

    if eval_only or (iter_num % eval_interval == 0 or iter_num == max_iters) and not evaluated:
        t_eval = time.time()
        metrics = estimate_loss()
        print0(f"step {iter_num}: " + ', '.join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k != 'val_ppl'))
        stop_if_not_finite('the eval loss', metrics['train_loss'] + metrics['val_loss'])
        log({'iter': iter_num, **metrics, 'lr': lr, 't': time.time() - t_start})  # t: wall s since training began
        if h5:
            h5_write(iter_num, **{'eval/train_loss': metrics['train_loss'], 'eval/val_loss': metrics['val_loss']},
                     **h5log.probe(raw_model, probe_batch, autocast))
        if sample_prompts and master_process:
            with autocast:
                samples = sample_replies(raw_model, data.tokenizer, sample_prompts, device)
            print0('\n'.join(f"  {p!r} -> {r!r}" for p, r in samples))
            log({'iter': iter_num, 'samples': samples})
        if advance_when and len(entered) < len(STARTS) and all(metrics[k] <= v for k, v in advance_when.items()):
            enter_phase(iter_num, f"advance_when {advance_when} met")
            lr = get_lr(iter_num)
        improved = metrics['val_loss'] < best_val_loss
        best_val_loss = min(best_val_loss, metrics['val_loss'])
        stale = 0 if improved else stale + 1
        if (improved or always_save_checkpoint) and iter_num > 0 and not eval_only:
            save(improved)
        t0 += time.time() - t_eval  # ms/iter below counts training alone
        if patience and stale >= patience and not eval_only:
            print0(f"early stop at iter {iter_num}: val loss has not improved for {stale} evals (patience={patience})")
            log({'iter': iter_num, 'early_stop': stale})
            break
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr * param_group.get('lr_scale', 1.0)  # lr_scale: per-group learning rates
    evaluated = False
    if iter_num >= max_iters or eval_only:
        break

    # forward, backward, update; with gradient accumulation, DDP syncs gradients only on the last micro-step
    for micro_step in range(local_accum):
        batch = train_batch()
        with model.no_sync() if ddp and micro_step < local_accum - 1 else nullcontext():
            with autocast:
                _, loss = model(*batch)
                loss = loss / local_accum  # the gradient of the mean over micro-steps
            scaler.scale(loss).backward()
        train_loss += loss.detach()
    logging_now = (iter_num + 1) % log_interval == 0 or iter_num + 1 == max_iters
    if grad_clip != 0.0 or (h5 and logging_now):
        scaler.unscale_(optimizer)
    norms = h5log.grad_norms(raw_model) if h5 and logging_now else {}  # before clipping
    if grad_clip != 0.0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)  # flush the gradients as soon as we can, no need for this memory anymore
    iter_num += 1
    steps_since_log += 1
    tokens_seen += tokens_per_iter

    if logging_now:
        # the mean train loss since the last log, over all ranks; note: a CPU-GPU sync point
        if ddp:
            dist.all_reduce(train_loss, op=dist.ReduceOp.AVG)
        lossf = train_loss.item() / steps_since_log
        stop_if_not_finite('the train loss', lossf)
        t1 = time.time()
        dt = (t1 - t0) / steps_since_log
        t0, steps_since_log = t1, 0
        train_loss.zero_()
        mfu = raw_model.estimate_mfu(tokens_per_iter / world_size, dt, peak)
        stats = source_stats()
        if h5:  # before the print: a killed run's log holds every step it printed
            h5_write(iter_num, **{'train/loss': lossf, 'train/lr': lr, 'train/ms_per_iter': dt * 1000,
                                  'train/tokens_per_s': tokens_per_iter / dt}, **norms, **{f'train/{k}': v for k, v in stats.items()})
        print0(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, " + ''.join(f"{k} {v:.3f}, " for k, v in stats.items())
               + f"lr {lr:.2e}, time {dt * 1000:.2f}ms, {tokens_per_iter / dt:,.0f} tok/s"
               + (f", mfu {mfu * 100:.2f}%" if mfu else "") + f", eta {format_eta(dt * (max_iters - iter_num))}")
        log({'iter': iter_num, 'loss': lossf, **stats, 'lr': lr, 'ms': dt * 1000, 'tokens': tokens_seen,
             'tok_s': tokens_per_iter / dt, 'mem_mb': peak_memory_mb(device_type), 't': t1 - t_start})

if h5:
    try:
        h5.close()
    except Exception as e:
        print0(f"note: the HDF5 log {H5_PATH} could not be closed ({why_failed(e)}); it holds the rows written before")
if ddp:
    # the DDP wrapper must be gone before its process group, or gloo can abort the process at exit
    del model
    gc.collect()
    dist.destroy_process_group()
