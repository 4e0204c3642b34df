"""
What train.py, sample.py, chat.py and bench.py share: the configurator, the device, DDP, the model kinds (MODELS),
checkpoints.
"""

import os
import io
import codecs
import importlib
import re
import ast
import sys
import glob
import shlex
import json
import types
import textwrap
import difflib
import tokenize
import traceback
import subprocess
from contextlib import nullcontext

import numpy as np
import torch

from model import GPT, GPTConfig
from model_approximator import Approximator, ApproximatorConfig
from model_chatbert import ChatBERTConfig, ChatBERTED, ChatBERTIMR, ChatBERTRA

REPO = os.path.dirname(os.path.abspath(__file__))  # the repo root, where train.py and config/ are

# -----------------------------------------------------------------------------
# one-line errors


def die(msg):
    """Stop with one line on stderr and exit code 1. Under torchrun every rank stops; only rank 0 speaks."""
    raise SystemExit(msg if int(os.environ.get('RANK', 0)) == 0 else 1)


def print0(*args, **kwargs):
    """print on rank 0 only, so torchrun's N processes don't say everything N times"""
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs)


def need(module, requirements):
    """import_module(module), for a package the core (requirements.txt) doesn't install; where it is missing, one
    line naming the pip install that brings it: the project's own list when a project is run (python -m
    projects.<name>.<script>), else `requirements`, the list of the feature that needs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        why = f"{e.name or module} is not installed"
    except ImportError as e:  # installed but broken: a missing shared library, a version that doesn't fit
        why = f"{module} can't be imported ({e})"
    main = getattr(sys.modules['__main__'], '__spec__', None)
    own = f"projects/{main.name.split('.')[1]}/requirements.txt" if main and main.name.startswith('projects.') else None
    die(f"{why}: pip install -r {own if own and os.path.isfile(os.path.join(REPO, own)) else requirements}")


def command(script, *args, nproc=1):
    """The command line that runs a root script ('train.py') or a module ('projects.backward.eval') with this
    Python; under torchrun on nproc processes when nproc > 1."""
    launcher = [sys.executable] + (['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else [])
    return [*launcher, *([os.path.join(REPO, script)] if script.endswith('.py') else ['-m', script]), *map(str, args)]


def launch(script, *args, nproc=1, log=None, threads=0):
    """Run command(script, *args) in the current directory and return its exit code: the one way the sweeps and
    pipelines (arrow, lineage, the A/Bs, bench) start runs. Output goes to log (an open file) or the terminal;
    threads > 0 caps each process's OpenMP threads, for runs side by side on a few cores."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')]))}
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    return subprocess.run(command(script, *args, nproc=nproc), stdout=log, stderr=subprocess.STDOUT if log else None,
                          env=env).returncode

# -----------------------------------------------------------------------------
# configurator: nanoGPT's idea (a config file, then --key=value, over a script's globals), with
# declared checks and one-line errors instead of asserts.
#
# A key's type is its default's type. Its annotation, if any, says more, and is checked wherever the key
# is set (config file, command line, curriculum phase):
#     n_layer: '[1, inf)' = 6             an interval: '[' and ']' include the bound, '(' and ')' exclude it
#     pos: ('rope', 'learned') = 'rope'   a tuple: the allowed values
#     compile: bool = None                a type: a key whose default is None takes None or this type


PLAIN = (int, float, bool, str, tuple, list, dict, type(None))
INTERVAL = re.compile(r'^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$')


def config_keys(g):
    """The config of a script: its plain-valued globals, but not UPPERCASE constants."""
    return [k for k, v in g.items() if not k.startswith('_') and not k.isupper() and isinstance(v, PLAIN)]


def check_value(val, rule):
    """None if val obeys rule (an annotation as above), else what it must be."""
    if isinstance(rule, tuple):
        return None if val in rule else f"one of {', '.join(map(repr, rule))}"
    if isinstance(rule, type):
        return None if val is None or type(val) is rule or (rule is float and type(val) is int) else f"a {rule.__name__} or None"
    m = INTERVAL.match(rule)
    lo_open, lo, hi, hi_open = m[1] == '(', float(m[2]), float(m[3]), m[4] == ')'
    above = val > lo if lo_open else val >= lo
    below = val < hi if hi_open else val <= hi
    return None if above and below else f"in {rule.strip()}"


def configure(g, argv):
    """Override a script's globals `g` from config files and --key=value args, in order; -h/--help prints
    the script's keys and exits. Returns {key: where it was set} for the keys set, each printed once.

    Only existing keys may be set, with a value of the default's type (an int where a float is expected is
    fine) that passes the key's annotation. A bool key alone, --key, means --key=True.
    """
    if '-h' in argv or '--help' in argv:
        try:
            print_help(g)
        except BrokenPipeError:  # --help | head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sources = {}
    for arg in argv:
        if not arg.startswith('--'):
            for key, val in read_config_file(arg).items():
                set_key(g, key, val, arg)
                sources[key] = arg
        else:
            key, eq, val = arg[2:].partition('=')
            parsed = parse_value(val) if eq else bare_flag(g, key, arg)
            if eq and type(g.get(key)) is str and type(parsed) is not str:
                parsed = val  # a text key takes the text as written: --seeds=1, --wandb_run_name=2024
            set_key(g, key, parsed, arg)
            sources[key] = arg
    for key in sources:  # after all overrides, so a key set twice is printed once, with the value that won
        print0(f"config: {key} = {g[key]!r}")
    return sources


LITERAL_MAX = 10_000  # longer command-line values are text as written: no config value is that long, and Python's
                      # parser can take a MemoryError or RecursionError on one (3,000 words, '1+1+...', '[[[...')


def parse_value(val):
    """A command-line value: a Python literal (numbers, bools, lists, dicts, quoted strings), else the text itself,
    so a bare word is a string (--dataset=chitchat), and so is anything the parser can't take."""
    if len(val) > LITERAL_MAX:
        return val
    try:
        return ast.literal_eval(val)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return val


def bare_flag(g, key, arg):
    """--key with no value: True for a bool key (a switch, as most command lines take one), else a one-line exit.
    An unknown key is left to set_key, which says so."""
    rule = g.get('__annotations__', {}).get(key)
    if key in config_keys(g) and (type(g[key]) is not bool and rule is not bool):
        die(f"argument '{cut(arg)}' has no value: write --{key}=VALUE")
    return True


def read_config_file(path):
    """The config values a Python config file sets; errors in it are reported by its own path and line."""
    if not os.path.exists(path):
        die(f"config file '{cut(path)}' not found (config files live in config/, e.g. config/quickstart.py)")
    source = read_text_file(path, f"config file '{cut(path)}'", need_text=False)  # a directory, binary, not UTF-8
    namespace = {'__file__': path}  # so a config can build on another: exec(open(os.path.join(os.path.dirname(__file__), ...
    try:
        exec(compile(source, path, 'exec'), namespace)
    except SyntaxError as e:
        die(f"{path}:{e.lineno}: {e.msg} (a config file is Python; fix that line)")
    except Exception as e:
        line = next((fr.lineno for fr in reversed(traceback.extract_tb(e.__traceback__)) if fr.filename == path), '?')
        die(f"{path}:{line}: {type(e).__name__}: {cut(str(e))}")
    return {k: v for k, v in namespace.items() if not k.startswith('_') and not isinstance(v, types.ModuleType)}


def set_key(g, key, val, source):
    """Set one config key with the checks configure() promises; a one-line exit otherwise."""
    keys, source = config_keys(g), cut(source)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ''
        die(f"unknown config key {cut(repr(key))} (from {source}); {hint}the keys are the globals at the top of "
            f"{os.path.basename(sys.argv[0])} (--help lists them)")
    default, rule = g[key], g.get('__annotations__', {}).get(key)
    ok = ((default is None and rule is None) or type(val) is type(default)
          or (type(default) is float and type(val) is int)
          or (type(default) is tuple and type(val) is list)
          or (default is None and isinstance(rule, type)))
    if not ok:
        die(f"config key '{key}' expects {type(default).__name__}, got {type(val).__name__} {cut(repr(val))} (from {source})")
    why = rule is not None and check_value(val, rule)
    if why:
        die(f"config key '{key}' must be {why}, got {cut(repr(val))} (from {source})")
    g[key] = float(val) if type(default) is float else tuple(val) if type(default) is tuple else val


def cut(text, n=200):
    """text for a one-line message: control characters escaped (a newline would make two lines), and a text of
    100,000 characters shown by its start and its length."""
    text = text if text.isprintable() else ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= n else f"{text[:n - 40]}... ({len(text):,} characters)"


def lookup(table, name, key):
    """table[name], or a one-line exit naming the config key and the known names."""
    if name not in table:
        die(f"unknown {key} '{name}'; known: {', '.join(table)}")
    return table[name]


def describe(rule):
    """An annotation as help shows it: [1, inf) | 'rope' | 'learned' | bool or None"""
    return ' | '.join(map(repr, rule)) if isinstance(rule, tuple) else f"{rule.__name__} or None" if isinstance(rule, type) else rule.strip()


def print_help(g):
    """The script's docstring, then its config keys in source order: default, rule, comment, and section comments."""
    path = g.get('__file__') or sys.argv[0]
    print((g.get('__doc__') or '').strip())
    with open(path, encoding='utf-8') as f:
        source = f.read()
    comments = {t.start[0]: (t.string.lstrip('#').strip(), t.line.lstrip().startswith('#'))
                for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    keys, rules = set(config_keys(g)), g.get('__annotations__', {})
    key_at = {}  # line number -> the config key assigned there
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in keys:
            key_at[node.lineno] = target.id
    if not key_at:
        return
    print("\nconfig keys, their defaults and allowed values; set them in a config file or as --key=value (a bool key "
          "alone, --key, is --key=True):")
    for n in range(min(key_at), max(key_at) + 1):
        text, whole_line = comments.get(n, ('', False))
        if n in key_at:
            k = key_at[n]
            rule = f"  {describe(rules[k])}" if k in rules else ''
            print(f"  --{k}={g[k]!r}{rule}" + (f"  # {text}" if text else ''))
        elif whole_line and text.strip('-'):
            print(f"  # {text}")


# -----------------------------------------------------------------------------
# device and distributed


def autodetect_device():
    if torch.cuda.is_available():
        return 'cuda'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def setup_device(device='auto', dtype='auto', threads=0):
    """Init DDP if torchrun launched us; pick the device, the autocast context and the CPU threads.

    Returns (ddp, rank, local_rank, world_size, device, device_type, ptdtype, autocast_ctx).
    bf16 where the device has it, fp16 (with a GradScaler) only on CUDA, fp32 on cpu and mps:
    nanoGPT treats MPS as CPU for autocast and builds a CUDA GradScaler there; we do neither.
    """
    device_type = autodetect_device() if device == 'auto' else device.split(':')[0]
    if device_type not in ('cpu', 'cuda', 'mps') or (':' in device and not re.fullmatch(r'cuda:\d+', device)):
        die(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda' and not torch.cuda.is_available():
        die(f"device '{device}' asked for, but torch {torch.__version__} sees no CUDA GPU; use --device=cpu "
            f"(or auto), or install a CUDA build of torch (README: Devices)")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        die("device 'mps' asked for, but this machine or torch build has no MPS; use --device=cpu (or auto)")
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        die(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world_size = 0, 0, 1
    if ddp:
        rank, local_rank, world_size = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    if device_type == 'cuda':
        device = f'cuda:{local_rank}' if ddp or device in ('auto', 'cuda') else device  # torchrun: one GPU a rank
        if int(device.split(':')[1]) >= torch.cuda.device_count():
            die(f"device '{device}' asked for, but there are only {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device == 'auto':
        device = device_type
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype == 'float16' and device_type != 'cuda':
        die(f"dtype float16 needs a GradScaler, which only CUDA has; use bfloat16 or float32 on {device_type}")
    if ddp:  # after every check, so that a bad config stops before the processes wait for each other
        # nccl for GPUs; gloo lets DDP run (and be tested) on plain CPUs
        torch.distributed.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    set_threads(threads, device_type, int(os.environ.get('LOCAL_WORLD_SIZE', 1)))
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
    return ddp, rank, local_rank, world_size, device, device_type, ptdtype, ctx


def set_threads(threads, device_type, local_processes=1):
    """torch's CPU threads: `threads` if not 0; else OMP_NUM_THREADS if set (torchrun sets 1); else, on CPU, the
    cores idle now, shared among this machine's processes. Why: torch takes every core by default, and OpenMP
    threads spinning on cores that another process is busy on are slow (one busy process on 2 cores made
    training 9x slower, and the KV cache slower than recomputing)."""
    if not threads:
        if 'OMP_NUM_THREADS' in os.environ or device_type != 'cpu':
            return
        busy = round(os.getloadavg()[0]) if hasattr(os, 'getloadavg') else 0  # runnable processes, 1-minute mean
        threads = max(1, (torch.get_num_threads() - busy) // local_processes)
    torch.set_num_threads(threads)


def peak_flops(device_type):
    """Dense bf16 peak of the GPU we run on, for MFU; None where we don't know it (CPU, MPS)."""
    if device_type != 'cuda':
        return None
    name = torch.cuda.get_device_name().lower()
    table = [('h200', 989e12), ('h100', 989e12), ('a100', 312e12), ('l40', 181e12), ('a10', 125e12),
             ('4090', 165e12), ('3090', 71e12), ('v100', 125e12), ('t4', 65e12)]
    return next((flops for key, flops in table if key in name), None)


def peak_memory_mb(device_type):
    """The process's peak memory so far, in MB: allocated on the GPU, resident on the CPU."""
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == 'darwin' else 2**10)  # bytes on macOS, KB on Linux


def synchronize(device_type):
    if device_type == 'cuda':
        torch.cuda.synchronize()
    elif device_type == 'mps':
        torch.mps.synchronize()

# -----------------------------------------------------------------------------
# checkpoints: torch weights + a human-readable meta.json beside them


def save_checkpoint(out_dir, ckpt, name='ckpt.pt', advice='free some space, then run again'):
    """Write out_dir/name atomically: a kill or a full disk mid-write leaves the previous checkpoint intact, and a
    write that fails stops with one line ending in `advice` (write_atomic). Then, for the run's own ckpt.pt,
    meta.json."""
    write_atomic(os.path.join(out_dir, name), lambda f: torch.save(ckpt, f), advice)
    if name == 'ckpt.pt':
        write_meta(out_dir, ckpt)


def write_meta(out_dir, ckpt):
    """meta.json, a readable copy of what a checkpoint describes. ckpt.pt is the truth: a kill between the two
    writes can leave meta.json one save behind, so train.py rewrites it from ckpt.pt when it resumes, and
    programs read ckpt.pt."""
    meta = {k: ckpt.get(k) for k in ('model_kind', 'direction', 'model_args', 'iter_num', 'best_val_loss', 'parent', 'config')}
    meta['tokenizer'] = ckpt['tokenizer'].get('kind')
    write_atomic(os.path.join(out_dir, 'meta.json'), lambda f: f.write(json.dumps(meta, indent=2).encode()),
                 f"{os.path.join(out_dir, 'ckpt.pt')}, which it describes, is whole: free some space, then continue "
                 f"with --init_from=resume, which rewrites meta.json")


def load_checkpoint(path, device='cpu'):
    """Load a nanolab checkpoint (a file, or an out_dir holding ckpt.pt) with weights_only=True."""
    if os.path.isdir(path):
        path = os.path.join(path, 'ckpt.pt')
    if not os.path.isfile(path):
        die(f"no checkpoint at {path}: {make_hint(path, 'train one first (python train.py config/quickstart.py) or pass --out_dir')}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        why = textwrap.shorten((str(e).splitlines() or [''])[0], 160, placeholder=' ...')
        die(f"{path} is not a readable checkpoint ({type(e).__name__}: {why}); retrain or restore it")
    if not isinstance(ckpt, dict) or not {'model', 'model_kind', 'model_args', 'tokenizer'} <= ckpt.keys():
        die(f"{path} is not a nanolab checkpoint (it lacks model/model_kind/model_args/tokenizer)")
    # torch.compile saves its parameters under '_orig_mod.'
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    ckpt.setdefault('direction', 'forward')  # checkpoints from before directions were all forward
    ckpt['path'] = path  # for messages; not saved
    return ckpt


# -----------------------------------------------------------------------------
# model kinds by name, kind -> (config class, model class): a checkpoint records its kind, and every script builds it
# from here (build_model). What each kind provides, so that train.py calls it without asking (GPT and Approximator
# hold the defaults a kind doesn't override):
#   forward(*batch) -> (logits, loss)   a batch as its source yields it (dataloader.SOURCES); loss None without targets
#   describe() -> [line, ...]           what train.py prints about it at the start (default: nothing)
# Its config dataclass is filled from train.py's keys of the same names, then model_args, then the source's model_args.
#   can, usage                          what scripts may ask of it (NEEDS below), and the command that serves it
#   get_num_params(), configure_optimizers(...), estimate_mfu(...), device()   the loop's bookkeeping
# A model knows tensors: chatting with one (a conversation as ids, a reply as text) is engine.py's.

MODELS = {'gpt': (GPTConfig, GPT), 'chatbert_ed': (ChatBERTConfig, ChatBERTED), 'chatbert_ra': (ChatBERTConfig, ChatBERTRA),
          'chatbert_imr': (ChatBERTConfig, ChatBERTIMR), 'approximator': (ApproximatorConfig, Approximator)}


# what a script can ask of a model kind (each kind's `can`, in its model file), and how a refusal says it
NEEDS = {'sample': "has no text to continue",
         'chat': "doesn't chat",
         'score': "can't score a text token by token, which projects/backward/eval.py needs (a GPT)",
         'embed': "doesn't embed texts; projects/approximator/embed.py embeds with an approximator (python train.py config/approximator.py)"}


def cannot(ckpt, need, name):
    """Why the checkpoint's model kind can't do what a script needs (a key of NEEDS), in one line that names the kind
    and what it is for; '' if it can. Asked before the model or its tokenizer is built, which may fail on a kind
    the script doesn't know (an approximator's n-gram tokenizer is no chat tokenizer)."""
    model_cls = lookup(MODELS, ckpt['model_kind'], "the checkpoint's model_kind")[1]
    if need in model_cls.can:
        return ''
    return f"{name}'s model ({ckpt['model_kind']}) {NEEDS[need]}; {model_cls.usage.format(out_dir=name)}"


def build_model(ckpt):
    """The model a checkpoint describes, with its weights loaded; one line if the two don't fit."""
    config_cls, model_cls = lookup(MODELS, ckpt['model_kind'], "the checkpoint's model_kind")
    try:
        model = model_cls(config_cls(**ckpt['model_args']))
        model.load_state_dict(ckpt['model'])
    except (TypeError, ValueError, RuntimeError) as e:
        why = textwrap.shorten(' '.join(str(e).split()), 200, placeholder=' ...')
        die(f"{ckpt.get('path', 'the checkpoint')}: its weights do not fit its own model_args ({why}); "
            f"the file is damaged or from another version: retrain or restore it")
    return model

# -----------------------------------------------------------------------------
# hints: the commands that make a missing dataset or run. Every config's docstring names them, a label and a
# command a line (more commands on the indented lines below it):
#     Prepare: python -m prepare.chitchat               makes data/<module>, or its --out=data/NAME ('none': no data)
#     Train:   python train.py config/quickstart.py     makes the config's out_dir, or its --out_dir; an projects/backward/lineage.py
#                                                       line makes experiments/<name>-<phase> for each of its phases
# so a missing data/NAME or run is made by the config that names it, and what that command needs (the data/ dirs it
# names, the datasets and the parent run it trains on) is made before it, where missing. Text after two spaces or
# ' #' is a comment.

CONFIG_DIR = os.path.join(REPO, 'config')


def config_steps(path):
    """{'Prepare': [command, ...], 'Train': [...]} of a config file's docstring."""
    with open(path, encoding='utf-8') as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ''
    steps, label = {}, None
    for line in doc.splitlines():
        m = re.match(r'(Prepare|Train):(.*)', line)
        if m:
            label, line = m[1], m[2]
            steps.setdefault(label, [])
        elif not (label and line[:1].isspace()):
            label = None
            continue
        for cmd in re.split(r'\s+&&\s+', re.split(r'\s{2,}|\s#', line.strip())[0]):
            if cmd.startswith(('python ', 'torchrun ')):
                steps[label].append(cmd)
    return steps


def step_targets(cmd, configs):
    """(what a config command makes, what it needs first): data/ dirs and runs, as paths relative to the repo."""
    words = shlex.split(cmd)
    opts = {w[2:].partition('=')[0]: w.partition('=')[2] for w in words if w.startswith('--')}
    module = words[words.index('-m') + 1] if '-m' in words else ''
    if module.startswith('prepare.'):  # python -m prepare.X
        out = opts.get('out', f"data/{module.removeprefix('prepare.')}")
        return [out], [v for v in opts.values() if v.startswith('data/') and v != out]
    if module == 'projects.backward.lineage':  # each phase a run of config/<recipe>_<phase>.py
        phases = opts.get('phases', 'base,mid,sft').split(',')
        name = opts.get('name') or opts.get('direction', 'forward')
        vals = [configs.get(f"config/{opts.get('recipe', 'lineage')}_{p}.py", ({}, {}))[0] for p in phases]
        return [f"experiments/{name}-{p}" for p in phases], [d for v in vals for d in datasets(v)] + [opts.get('parent', '')]
    if not any(w.endswith('.py') for w in words):
        raise ValueError(f"no script in {cmd!r}")  # not a step of ours: read_configs skips the config
    values = configs.get(next((w for w in words if w.startswith('config/')), ''), ({}, {}))[0]
    values = {**values, **{k: v for k, v in opts.items() if k in ('dataset', 'out_dir', 'init_from')}}
    parent = values.get('init_from', 'scratch')
    return [values.get('out_dir', 'out')], [parent if parent not in ('scratch', 'resume') else ''] + datasets(values)


def datasets(values):
    """The data/ dirs a config trains and evaluates on: its dataset and every data_mix of its curriculum."""
    mixes = [values.get('data_mix', {})] + [p.get('data_mix', {}) for p in values.get('phases', {}).values()]
    return [f"data/{n}" for n in dict.fromkeys([values.get('dataset', 'chitchat'), *(n for m in mixes for n in m)])]


def plan(target, configs, order, seen):
    """[(command, config)] that make target and, first, what it needs that is missing; [] if no config makes it."""
    seen.add(target)
    for path in order:
        for label in ('Prepare', 'Train'):
            for cmd in configs[path][1].get(label, []):
                made, needs = step_targets(cmd, configs)
                if target in made:
                    first = [step for n in needs if n and n not in seen and not os.path.exists(n)
                             for step in plan(n, configs, order, seen)]
                    return first + [(cmd, path)]
    return []


def read_configs():
    """{'config/X.py': (its values, its steps)} of every config that loads and whose commands parse."""
    configs = {}
    for p in sorted(glob.glob(os.path.join(CONFIG_DIR, '*.py'))):
        try:  # a config that doesn't, a user's own, gives no hint, and no second error on top of the one reported
            steps = config_steps(p)
            for cmd in (c for cmds in steps.values() for c in cmds):
                step_targets(cmd, {})
            configs[f"config/{os.path.basename(p)}"] = (read_config_file(p), steps)
        except (Exception, SystemExit):
            pass
    return configs


def make_hint(path, otherwise):
    """'make it with python ... && python ... (config/X.py)': the commands that make a missing dataset (data/NAME) or
    run (a run directory, or a checkpoint in it), from the config docstrings, the config on the command line first;
    `otherwise` (what is generic) if no config makes it. Never raises: it is only ever part of an error message."""
    try:
        configs = read_configs()
        path = os.path.relpath(os.path.abspath(path))
        if path.endswith(('.pt', '.json')):  # a checkpoint, or a data dir's tokenizer.json
            path = os.path.dirname(path)
        if os.path.basename(os.path.dirname(path)) == 'data':
            path = f"data/{os.path.basename(path)}"
        asked = [f"config/{os.path.basename(a)}" for a in sys.argv[1:] if a.endswith('.py') and not a.startswith('-')]
        # the config that asked first, then those that train on it, then the rest
        order = sorted(configs, key=lambda c: (c not in asked, datasets(configs[c][0])[0] != path))
        steps = plan(path, configs, order, set())
        cmds = list(dict.fromkeys(cmd for cmd, _ in steps))
        exp = re.fullmatch(r'experiments/(.+)-(base|mid|sft|rl)', path)  # one no config names: the lineage script's naming
        if exp and not steps:
            return (f"it is phase {exp[2]} of experiment {exp[1]}: make it with python -m projects.backward.lineage --name={exp[1]} and "
                    f"the --phases up to {exp[2]} (and --recipe, --direction or --parent) it ran with")
        return f"make it with {' && '.join(cmds)} ({steps[-1][1]})" if steps else otherwise
    except Exception:
        return otherwise


# writes that can fail, and memory that can run out: one line that says what and what to do, and nothing half-written


def why_failed(e):
    """An I/O error's reason in a few words ('No space left on device'). torch.save reports a failed write as a
    RuntimeError raised while handling the OSError, and h5py names the errno in its message."""
    cause = e if isinstance(e, OSError) else e.__context__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno) + (f": {cause.filename}" if cause.filename else '')
    errno = re.search(r'errno = (\d+)', str(e))
    if errno:
        return os.strerror(int(errno[1]))
    return textwrap.shorten(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", 160, placeholder=' ...')


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path, write, advice):
    """Write a file through path.tmp and a rename, its folder made if missing; write(f) writes to the open binary
    file. A kill mid-write leaves the old file whole. A write that fails (a full disk, a read-only folder) removes
    its .tmp and stops with one line: what failed, why, and `advice`, what to do."""
    tmp = path + '.tmp'
    if not_a_file(path):  # the rename would replace it: a folder fails, a device (/dev/full) would be lost
        die(f"could not write {path}: it is a {not_a_file(path)}, not a file; move it away or write elsewhere")
    try:
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk can fail here, not before: the bytes are down before the rename
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save: RuntimeError
        remove_quietly(tmp)
        die(f"could not write {path} ({why_failed(e)}); {advice}")


def append_line(path, line, advice):
    """Append one line to a log. A write that fails cuts the file back to where it was, so no torn line is left
    (a full disk frees the space for that), and stops with one line ending in `advice`."""
    data = (line + '\n').encode()
    try:
        with open(path, 'ab', buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                while data:  # an unbuffered write may write part and return how much
                    data = data[f.write(data):]
            except OSError:
                f.truncate(end)
                raise
    except OSError as e:
        die(f"could not append to {path} ({why_failed(e)}); {advice}")


def read_log(path):
    """The rows of a log.jsonl, a JSON object a line. A torn last line, which a run killed or a disk filled
    mid-write leaves, is left out with a note; any other line that isn't a JSON object stops with one line."""
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    rows = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif n == lines[-1][0] and row is None:
            print0(f"note: {path} ends in a torn line (a run stopped mid-write), left out: {textwrap.shorten(line, 60)!r}")
        else:
            die(f"{path}:{n} is not a JSON object ({textwrap.shorten(line, 60, placeholder=' ...')!r}); a log holds "
                f"one per line: fix or delete that line")
    return rows


def check_writable(path, folder, what, advice):
    """One line, before anything is written, if path (a folder if `folder`, else a file) can't be written: it is
    empty or something else (a file replacing a device would be worse than an error), a parent is a file, or the
    nearest existing folder is read-only. `what` names the path (the key that set it); `advice` says what to do."""
    if not path:
        die(f"{what} is empty; {advice}")
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # a path to make; a parent that is a file is said below
    except OSError as e:  # a name too long, a symlink loop, ...
        die(f"{what}={path} can't be used ({e.strerror}); {advice}")
    kind, found = 'folder' if folder else 'file', not_a_file(path) or 'file'
    if os.path.exists(path) and found != kind:
        die(f"{what}={path} is a {found}, not a {kind}; {advice}")
    parent = os.path.abspath(path if folder else os.path.dirname(path) or '.')
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        die(f"{what}={path} can't be made: {parent} is a file, not a folder; {advice}")
    if not os.access(parent, os.W_OK):
        die(f"{what}={path} can't be written: {parent} is read-only; {advice}")


def not_a_file(path):
    """What path is if it exists and is not a regular file: 'folder' or 'device or pipe'; else None."""
    if not os.path.exists(path) or os.path.isfile(path):
        return None
    return 'folder' if os.path.isdir(path) else 'device or pipe'


# -----------------------------------------------------------------------------
# text files: every text a user hands a script (a config file, sample.py's FILE:, prepare.text, prepare.vibejam's
# folder, projects/approximator/embed.py's file) is read and checked here, once, the same way


def read_text_file(path, name=None, need_text=True):
    """The text of a local file; name (default: path) is how messages call it. A missing or unreadable file, one
    that isn't a regular file (a directory, /dev/zero, a pipe: never read, so never hung on), a binary file (a NUL
    byte), bytes that aren't UTF-8 and, with need_text, a file with no text in it each stop with one line that
    names the file and, for a bad byte, where it is."""
    name = name or path
    if not os.path.exists(path):
        raise SystemExit(f"{name}: no such file")
    if not os.path.isfile(path):
        raise SystemExit(f"{name}: not a regular file (a directory, a device or a pipe); pass a text file")
    try:
        with open(path, 'rb') as f:
            head = f.read(1 << 16)
            if b'\0' in head:  # a binary file stops here, however large (a 100 GB disk image is not read whole):
                text_of(head, name)  # says where its first NUL byte is
            return text_of(head + f.read(), name, need_text)
    except OSError as e:
        raise SystemExit(f"{name}: can't read it ({e.strerror or e})") from None


def text_of(data, name, need_text=True):
    """bytes as text, or one line: a NUL byte (a binary file) or bytes that aren't UTF-8, by line and byte; with
    need_text, no text at all. A UTF-8 byte-order mark is dropped and line ends become '\n', as open() does."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # what Windows calls "Unicode"
        raise SystemExit(f"{name}: UTF-16 text, not UTF-8; save it as UTF-8")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows' mark of UTF-8: not text
    if (nul := data.find(b'\0')) >= 0:
        raise SystemExit(f"{name}: a binary file, not text (a NUL byte at {where(data, nul)}); pass a UTF-8 text file")
    try:
        text = data[bom:].decode('utf-8')
    except UnicodeDecodeError as e:
        raise SystemExit(f"{name}: not UTF-8 text ({where(data, bom + e.start)}: 0x{data[bom + e.start]:02x}); "
                         f"save it as UTF-8") from None
    if need_text and not text.strip():
        raise SystemExit(f"{name}: {'empty' if not text else 'only whitespace'}, no text in it; pass a file with text")
    return text.replace('\r\n', '\n').replace('\r', '\n')


def where(data, i):
    """'line 3, byte 17' of position i in data, both counted from 1, the byte within its line (as an editor's column)."""
    line, line_start = data.count(b'\n', 0, i) + 1, data.rfind(b'\n', 0, i) + 1
    return f"line {line:,}, byte {i - line_start + 1:,}"


def human_bytes(n):
    for unit in ('bytes', 'KB', 'MB', 'GB', 'TB'):
        if n < 1000 or unit == 'TB':
            return f"{n:,.0f} {unit}" if unit == 'bytes' else f"{n:,.1f} {unit}"
        n /= 1000


def available_memory(device):
    """Bytes free for new allocations on device: CUDA's free memory; on a CPU, Linux's MemAvailable, within the
    cgroup's limit if there is one; None where unknown (MPS, macOS, Windows): callers then skip their check."""
    if device.startswith('cuda'):
        return torch.cuda.mem_get_info(device)[0]
    if device != 'cpu':
        return None
    try:
        with open('/proc/meminfo') as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:'))
    except (OSError, ValueError, StopIteration):
        return None
    try:  # a container's own limit (cgroup v2), often lower than the machine's
        with open('/sys/fs/cgroup/memory.max') as f, open('/sys/fs/cgroup/memory.current') as g:
            limit = f.read().strip()
            free = min(free, int(limit) - int(g.read())) if limit != 'max' else free
    except (OSError, ValueError):
        pass
    return free


def check_memory(what, nbytes, device, advice, processes=1):
    """One line before a huge allocation: if what takes nbytes (a lower bound) and the device has less available
    (a CPU's shared by this machine's processes), say both and `advice`. Nothing where the memory is unknown."""
    free = available_memory(device)
    if free is not None and nbytes > free / processes:
        die(f"{what} would take at least {human_bytes(nbytes)}, and {device} has {human_bytes(free)} available"
            + (f" for {processes} processes" if processes > 1 else '') + f"; {advice}")
