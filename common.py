"""
What train.py, sample.py, chat.py and bench.py share: the configurator, the device, DDP, checkpoints.
"""

import os
import ast
import sys
import json
import types
from contextlib import nullcontext

import torch

# -----------------------------------------------------------------------------
# configurator: nanoGPT's idea (a config file, then --key=value, over a script's globals), with
# one-line errors instead of asserts


PLAIN = (int, float, bool, str, tuple, list, dict, type(None))


def config_keys(g):
    """The config of a script: its plain-valued globals, but not UPPERCASE constants."""
    return [k for k, v in g.items() if not k.startswith('_') and not k.isupper() and isinstance(v, PLAIN)]


def configure(g, argv):
    """Override a script's globals `g` from config files and --key=value args, in order.

    Only existing keys may be set, and only with a value of the same type (an int where a float is
    expected is fine; a key whose default is None takes anything).
    """
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                sys.exit(f"config file '{arg}' not found (config files live in config/, e.g. config/quickstart.py)")
            namespace = {}
            exec(open(arg).read(), namespace)
            for key, val in namespace.items():
                if not key.startswith('_') and not isinstance(val, types.ModuleType):
                    set_key(g, key, val, arg)
        else:
            key, eq, val = arg[2:].partition('=')
            if not eq:
                sys.exit(f"argument '{arg}' has no value: write --{key}=VALUE")
            try:
                val = ast.literal_eval(val)  # numbers, bools, lists, dicts, quoted strings
            except (SyntaxError, ValueError):
                pass  # a bare word is a string: --dataset=chitchat
            set_key(g, key, val, arg)


def set_key(g, key, val, source, quiet=False):
    """Set one config key with the checks configure() promises; a one-line exit otherwise."""
    if key not in config_keys(g):
        sys.exit(f"unknown config key '{key}' (from {source}); the keys are the globals at the top of {os.path.basename(sys.argv[0])}")
    default = g[key]
    ok = (default is None or type(val) is type(default)
          or (type(default) is float and type(val) is int)
          or (type(default) is tuple and type(val) is list))
    if not ok:
        sys.exit(f"config key '{key}' expects {type(default).__name__}, got {type(val).__name__} {val!r} (from {source})")
    g[key] = float(val) if type(default) is float else tuple(val) if type(default) is tuple else val
    if not quiet:
        print0(f"config: {key} = {g[key]!r}")


def lookup(table, name, key):
    """table[name], or a one-line exit naming the config key and the known names."""
    if name not in table:
        sys.exit(f"unknown {key} '{name}'; known: {', '.join(table)}")
    return table[name]


# -----------------------------------------------------------------------------
# device and distributed


def print0(*args, **kwargs):
    """print on rank 0 only, so torchrun's N processes don't say everything N times"""
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


def autodetect_device():
    if torch.cuda.is_available():
        return 'cuda'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def setup_device(device='auto', dtype='auto'):
    """Init DDP if torchrun launched us; pick the device and the autocast context.

    Returns (ddp, rank, local_rank, world_size, device, device_type, ptdtype, autocast_ctx).
    bf16 where the device has it, fp16 (with a GradScaler) only on CUDA, fp32 on cpu and mps:
    nanoGPT treats MPS as CPU for autocast and builds a CUDA GradScaler there; we do neither.
    """
    device_type = autodetect_device() if device == 'auto' else device.split(':')[0]
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world_size = 0, 0, 1
    if ddp:
        rank, local_rank, world_size = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        # nccl for GPUs; gloo lets DDP run (and be tested) on plain CPUs
        torch.distributed.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    if device_type == 'cuda':
        device = f'cuda:{local_rank}' if ddp or device in ('auto', 'cuda') else device  # torchrun: one GPU a rank
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device == 'auto':
        device = device_type
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype == 'float16' and device_type != 'cuda':
        sys.exit(f"dtype float16 needs a GradScaler, which only CUDA has; use bfloat16 or float32 on {device_type}")
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
    return ddp, rank, local_rank, world_size, device, device_type, ptdtype, ctx


def peak_flops(device_type):
    """Dense bf16 peak of the GPU we run on, for MFU; None where we don't know it (CPU, MPS)."""
    if device_type != 'cuda':
        return None
    name = torch.cuda.get_device_name().lower()
    table = [('h200', 989e12), ('h100', 989e12), ('a100', 312e12), ('l40', 181e12), ('a10', 125e12),
             ('4090', 165e12), ('3090', 71e12), ('v100', 125e12), ('t4', 65e12)]
    return next((flops for key, flops in table if key in name), None)


def synchronize(device_type):
    if device_type == 'cuda':
        torch.cuda.synchronize()
    elif device_type == 'mps':
        torch.mps.synchronize()

# -----------------------------------------------------------------------------
# checkpoints: torch weights + a human-readable meta.json beside them


def save_checkpoint(out_dir, ckpt):
    """Write ckpt.pt atomically: a crash mid-write leaves the previous checkpoint intact."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'ckpt.pt')
    torch.save(ckpt, path + '.tmp')
    os.replace(path + '.tmp', path)
    meta = {k: v for k, v in ckpt.items() if k in ('model_kind', 'model_args', 'iter_num', 'best_val_loss', 'config')}
    meta['tokenizer'] = ckpt['tokenizer'].get('kind')
    with open(os.path.join(out_dir, 'meta.json.tmp'), 'w') as f:
        json.dump(meta, f, indent=2)
    os.replace(os.path.join(out_dir, 'meta.json.tmp'), os.path.join(out_dir, 'meta.json'))


def load_checkpoint(path, device='cpu'):
    """Load a nanolab checkpoint (a file, or an out_dir holding ckpt.pt) with weights_only=True."""
    if os.path.isdir(path):
        path = os.path.join(path, 'ckpt.pt')
    if not os.path.isfile(path):
        sys.exit(f"no checkpoint at {path}: train one first (python train.py config/quickstart.py) or pass --out_dir")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        why = (str(e).splitlines() or [''])[0][:120]
        sys.exit(f"{path} is not a readable checkpoint ({type(e).__name__}: {why}); retrain or restore it")
    if not isinstance(ckpt, dict) or not {'model', 'model_kind', 'model_args', 'tokenizer'} <= ckpt.keys():
        sys.exit(f"{path} is not a nanolab checkpoint (it lacks model/model_kind/model_args/tokenizer)")
    # torch.compile saves its parameters under '_orig_mod.'
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    return ckpt


def build_model(ckpt):
    """The model a checkpoint describes, with its weights loaded."""
    from model import MODELS
    config_cls, model_cls = lookup(MODELS, ckpt['model_kind'], "the checkpoint's model_kind")
    model = model_cls(config_cls(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    return model
