"""
The one training loop of nanolab, for every model and project. Runs on one process:
$ python train.py config/quickstart.py --batch_size=16
or on several, with DDP (nccl on GPUs, gloo on CPUs):
$ torchrun --standalone --nproc_per_node=4 train.py config/shakespeare_char.py
and across nodes, on the master node (IP 123.456.123.456), then the same with --node_rank=1 on the other:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
(If your cluster has no Infiniband interconnect, prepend NCCL_IB_DISABLE=1.)

What differs between projects lives elsewhere: the model in model.py (MODELS), its batches in data.py
(SOURCES), its settings in a config/ file. Every model's forward(*batch) returns (logits, loss).
"""

import gc
import os
import sys
import json
import math
import time
from contextlib import nullcontext
from dataclasses import fields

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from common import configure, config_keys, set_key, lookup, print0, setup_device, peak_flops, save_checkpoint, load_checkpoint, build_model
from model import MODELS
from data import SOURCES

# -----------------------------------------------------------------------------
# default config: a small BPE GPT on the chitchat conversations; config/*.py and --key=value override
# I/O
out_dir = 'out'
eval_interval = 250
log_interval = 10
eval_iters = 50
eval_only = False  # evaluate once and exit
always_save_checkpoint = True  # False: only when val loss improves
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir's checkpoint) | path of another run to fine-tune (base -> mid -> sft)
# wandb logging
wandb_log = False
wandb_project = 'nanolab'
wandb_run_name = 'run'
# data
dataset = 'chitchat'  # data/<dataset>, made by a prepare/ script
data_source = 'tokens'  # a name in data.SOURCES
doc_transform = ''  # '' | a name in data.TRANSFORMS, e.g. 'reverse' (backward LM)
gradient_accumulation_steps = 1  # micro-steps per optimizer step, over all processes together
batch_size = 12  # per micro-step, per process
block_size = 256
# model
model_kind = 'gpt'  # a name in model.MODELS
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = False
pos = 'rope'  # 'rope' | 'learned'
norm = 'layer'  # 'layer' | 'rms'
mlp = 'relu2'  # 'relu2' | 'gelu'
qk_norm = False
tie_weights = True
causal = True
# AdamW
learning_rate = 1e-3
max_iters = 5000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0  # 0 disables
# learning rate schedule: linear warmup, then cosine down to min_lr
decay_lr = True
warmup_iters = 100
lr_decay_iters = 5000  # ~= max_iters per Chinchilla
min_lr = 1e-4  # ~= learning_rate/10 per Chinchilla
# curriculum: {iteration: {key: value, ...}}; from that iteration on, those config values apply (block_size,
# batch_size, learning_rate, ...) until a later phase changes them
phases = {}
# system
device = 'auto'  # 'auto' (cuda, then mps, then cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported, else float32) | 'float32' | 'bfloat16' | 'float16' (CUDA only)
compile = None  # torch.compile; None: on for CUDA, off elsewhere
seed = 1337
# -----------------------------------------------------------------------------
configure(globals(), sys.argv[1:])
for start, overrides in phases.items():  # check the curriculum now, not hours into the run
    for k, v in overrides.items():
        set_key(dict(globals()), k, v, f'phases[{start}]', quiet=True)
config = {k: globals()[k] for k in config_keys(globals())}  # what gets logged and saved
# -----------------------------------------------------------------------------

ddp, rank, local_rank, world_size, device, device_type, ptdtype, autocast = setup_device(device, dtype)
master_process = rank == 0  # does the logging and checkpointing
if gradient_accumulation_steps % world_size:
    sys.exit(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the {world_size} processes")
local_accum = gradient_accumulation_steps // world_size
torch.manual_seed(seed + rank)  # dropout differs per rank; the data sampler is seeded the same on all
if compile is None:
    compile = device_type == 'cuda'
if master_process:
    os.makedirs(out_dir, exist_ok=True)
    if init_from != 'resume' and os.path.exists(os.path.join(out_dir, 'log.jsonl')):
        os.remove(os.path.join(out_dir, 'log.jsonl'))  # a new run in an old out_dir starts a new log; resume appends


def apply_phases(upto):
    """Set the curriculum's config for iteration `upto`: every phase that has started, in order."""
    for start in sorted(phases):
        if start <= upto:
            for k, v in phases[start].items():
                set_key(globals(), k, v, f'phases[{start}]', quiet=True)
    data.block_size, data.batch_size = block_size, batch_size
    global tokens_per_iter
    tokens_per_iter = gradient_accumulation_steps * batch_size * block_size  # for tok/s and MFU


# the model's positions, and every split's length, must cover the largest block size the curriculum reaches
max_block_size = max([block_size] + [p.get('block_size', 0) for p in phases.values()])
data_cls = lookup(SOURCES, data_source, 'data_source')
data = data_cls(os.path.join('data', dataset), max_block_size, batch_size, device, seed, rank, world_size, doc_transform)
print0(f"tokens per iteration will be: {gradient_accumulation_steps * batch_size * block_size:,} "
       f"({gradient_accumulation_steps} micro-steps x {batch_size} x {block_size}, over {world_size} processes)")

# -----------------------------------------------------------------------------
# model: from scratch, resumed from out_dir, or started from another run's weights
iter_num, best_val_loss, parent, ckpt = 0, 1e9, None, None
if init_from == 'scratch':
    config_cls, model_cls = lookup(MODELS, model_kind, 'model_kind')
    model_args = {f.name: config[f.name] for f in fields(config_cls) if f.name in config}
    model_args.update(vocab_size=data.tokenizer.vocab_size, block_size=max_block_size)
    model = model_cls(config_cls(**model_args))
else:
    ckpt = load_checkpoint(out_dir if init_from == 'resume' else init_from, device)
    if ckpt['tokenizer'] != data.tokenizer.info:
        sys.exit(f"the checkpoint's tokenizer differs from data/{dataset}'s; train on data made with the same tokenizer")
    ckpt['model_args']['dropout'] = dropout  # the architecture is the checkpoint's; dropout may change
    model_kind, model_args, parent = ckpt['model_kind'], ckpt['model_args'], ckpt.get('parent')
    if max_block_size > model_args['block_size']:
        sys.exit(f"block_size {max_block_size} is larger than the checkpoint's {model_args['block_size']}; "
                 f"continue with --block_size={model_args['block_size']} or less")
    if init_from == 'resume':
        iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    else:
        parent = os.path.abspath(init_from)  # lineage: this run descends from that one
    model = build_model(ckpt)
model.to(device)
print0(f"{model_kind}: {model.get_num_params() / 1e6:.2f}M parameters")

# a GradScaler only for float16, which only CUDA runs; a no-op otherwise
scaler = torch.amp.GradScaler('cuda', enabled=(ptdtype == torch.float16))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if init_from == 'resume':
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    data.load_state_dict(ckpt['data'])
    if len(ckpt['rng']) == world_size:  # dropout continues as if never stopped
        torch.set_rng_state(ckpt['rng'][rank]['cpu'])
        if device_type == 'cuda' and ckpt['rng'][rank]['cuda'] is not None:
            torch.cuda.set_rng_state(ckpt['rng'][rank]['cuda'])
    else:  # saved by another number of processes: the data stream still continues exactly, dropout can't
        torch.manual_seed(seed + rank + iter_num)
        print0(f"note: checkpoint saved by {len(ckpt['rng'])} processes, resumed on {world_size}: new dropout RNG")
ckpt = None  # free up memory

raw_model = model
if compile:
    print0("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)


@torch.no_grad()
def estimate_loss():
    """Mean loss over eval_iters batches per split, the same batches at every eval (less noisy curves)."""
    out = {}
    model.eval()
    for split in ['train', 'val']:
        generator = torch.Generator().manual_seed(seed + 1)
        losses = torch.zeros(eval_iters, device=device)
        for k in range(eval_iters):
            with autocast:
                _, loss = model(*data.get_batch(split, generator))
            losses[k] = loss
        loss = losses.mean()
        if ddp:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        out[split] = loss.item()
    model.train()
    return out


def get_lr(it):
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:  # 1) linear warmup
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:  # 2) past the decay, min_lr
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)  # 3) in between, cosine
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


def log(entry):
    """Append to out_dir/log.jsonl (plot.py draws it) and wandb."""
    if master_process:
        with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
            f.write(json.dumps(entry) + '\n')
        if wandb_log:
            wandb.log(entry)


if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# -----------------------------------------------------------------------------
# the loop
apply_phases(iter_num)
peak = peak_flops(device_type)
t0 = time.time()
train_loss = torch.zeros((), device=device)  # summed over micro-steps between logs; read only at log time
while True:
    if iter_num in phases:
        apply_phases(iter_num)
        print0(f"iter {iter_num}: curriculum phase {phases[iter_num]}")
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr * param_group.get('lr_scale', 1.0)  # lr_scale: per-group learning rates

    if iter_num % eval_interval == 0 or iter_num == max_iters or eval_only:
        t_eval = time.time()
        losses = estimate_loss()
        print0(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        log({'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr})
        if losses['val'] < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, losses['val'])
            if iter_num > 0 and not eval_only:
                ckpt = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                        'model_kind': model_kind, 'model_args': model_args, 'tokenizer': data.tokenizer.info,
                        'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config, 'parent': parent,
                        'data': data.state_dict(), 'rng': rng_states()}
                if master_process:
                    print0(f"saving checkpoint to {out_dir}")
                    save_checkpoint(out_dir, ckpt)
                ckpt = None
        t0 += time.time() - t_eval  # ms/iter below counts training alone
    if iter_num == max_iters or eval_only:
        break

    # forward, backward, update; with gradient accumulation, DDP syncs gradients only on the last micro-step
    for micro_step in range(local_accum):
        batch = data.get_batch('train')
        with model.no_sync() if ddp and micro_step < local_accum - 1 else nullcontext():
            with autocast:
                _, loss = model(*batch)
                loss = loss / local_accum  # the gradient of the mean over micro-steps
            scaler.scale(loss).backward()
        train_loss += loss.detach()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)  # flush the gradients as soon as we can, no need for this memory anymore
    iter_num += 1

    if iter_num % log_interval == 0:
        # the mean train loss since the last log, over all ranks; note: a CPU-GPU sync point
        if ddp:
            dist.all_reduce(train_loss, op=dist.ReduceOp.AVG)
        lossf = train_loss.item() / log_interval
        train_loss.zero_()
        t1 = time.time()
        dt = (t1 - t0) / log_interval
        t0 = t1
        mfu = raw_model.estimate_mfu(tokens_per_iter / world_size, dt, peak)
        print0(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, time {dt * 1000:.2f}ms, {tokens_per_iter / dt:,.0f} tok/s"
               + (f", mfu {mfu * 100:.2f}%" if mfu else ""))
        log({'iter': iter_num, 'loss': lossf, 'lr': lr, 'ms': dt * 1000})

if ddp:
    # the DDP wrapper must be gone before its process group, or gloo can abort the process at exit
    del model
    gc.collect()
    dist.destroy_process_group()
