"""
Sample from a trained model, streaming tokens as they come:
$ python sample.py --out_dir=out-shakespeare-char-cpu --start="ROMEO:" --num_samples=3
$ python sample.py --out_dir=out-quickstart --start=FILE:prompt.txt --temperature=0.8 --top_p=0.95
The model, its tokenizer and its direction come from the checkpoint. A backward model takes --start as the
ending and writes what came before it (shown in reading order); a bidirectional model reads --direction.
Rewrite a draft in a vibejam model's style (projects/vibejam/README.md), the draft as text or FILE:path:
$ python sample.py --out_dir=out-vibejam-rewrite-char --rewrite="Hello. I am going to the store, do you want anything?"
"""

import sys
import time

import torch

from common import configure, die, print0, setup_device, load_checkpoint, build_model, synchronize, cannot, read_text_file

# -----------------------------------------------------------------------------
out_dir = 'out'  # a run's directory (its ckpt.pt), or the path of a checkpoint file
start = "\n"  # the prompt, or "FILE:path" to read it from a file; a model with a BOS token gets it first
num_samples: '[1, inf)' = 3
max_new_tokens: '[1, inf)' = 500
temperature: '[0, inf)' = 0.8  # 1.0 = no change, < 1.0 = less random, 0 = greedy
top_k: '[0, inf)' = 200  # only the top_k most likely tokens; 0 for all
top_p: '(0, 1]' = 1.0  # nucleus sampling: the smallest set of tokens with this much probability; 1.0 for all
stop = False  # end a sample at the model's end-of-turn/document tokens (BOS, speaker tokens)
direction = ''  # '': the model's own (a bidirectional model: forward); 'forward' | 'backward' for a bidirectional model
use_cache = True  # the KV cache; False recomputes the whole context at every token
seed: '[0, 9.2e18]' = 1337
device = 'auto'  # 'auto' | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'
threads: '[0, inf)' = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else the cores idle at start
rewrite = ''  # a draft to rewrite in the model's style (or "FILE:path"); needs a rewrite-tuned model (vibejam)
zero_shot = False  # rewrite with a model never tuned on rewrite pairs anyway (expect a continuation, not a rewrite)
# -----------------------------------------------------------------------------
configure(globals(), sys.argv[1:])

*_, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
torch.manual_seed(seed)
ckpt = load_checkpoint(out_dir, device)
if why := cannot(ckpt, 'sample', out_dir):
    die(why)
model = build_model(ckpt).to(device).eval()
from tokenizer import Tokenizer, decode_growing, decode_stream, orient, reading, speaker_ids  # noqa: E402
tok = Tokenizer(ckpt['tokenizer'])
try:
    backward, marker = reading(ckpt['direction'], direction)
except ValueError as e:
    die(f"--direction={direction}: {e}")


def read_arg(key, value, need_text=False):
    """A text argument, or the text of the file it names (FILE:path), checked as every text input is."""
    return read_text_file(value[5:], f"--{key}={value}", need_text) if value.startswith('FILE:') else value


if rewrite:
    draft = read_arg('rewrite', rewrite, need_text=True).strip()
    if not draft:
        die("--rewrite: the draft is only whitespace; write the text to rewrite")
    if 'rewrite' not in ckpt.get('formats', []) and not zero_shot:
        die(f"{out_dir} was never fine-tuned on rewrite pairs (config/vibejam_rewrite.py), so it would continue the "
            f"draft, not rewrite it; pass --zero_shot=True to see that anyway")
    if backward or marker or tok.bos is None:
        die(f"rewrite mode reads forward and needs a <|bos|> token; {out_dir} is a {ckpt['direction']} model of a "
            f"{tok.kind} tokenizer")
    from engine import chat_for
    bot = chat_for(model, tok, ckpt)
    print(f"Draft:\n{draft}\n\nRewrite:")
    for k in range(num_samples):
        shown = ''
        try:
            with autocast:
                for text in bot.rewrite_stream(draft, max_new_tokens, temperature, top_k, top_p):
                    print(text[len(shown):], end='', flush=True)  # streamed as it comes, up to the end marker
                    shown = text
        except ValueError as e:
            die(f"--rewrite: {e}")
        print('\n---------------' if num_samples > 1 else '')
    sys.exit(0)
start = read_arg('start', start)
try:
    ids = ([tok.bos] if tok.bos is not None else []) + tok.encode(start)
except ValueError as e:  # characters a char tokenizer never saw
    die(f"--start: {e}; this model can't read them, write the prompt without them")
if not ids:
    die("the prompt is empty and this tokenizer has no BOS token to start from: pass --start=TEXT")
ids = orient(ids, tok, backward, marker).tolist()  # backward: the start is the ending, read right to left
x = torch.tensor(ids, dtype=torch.long, device=device)[None, ...]
# each token's speaker, as in training, for a model with speaker embeddings (TurnGPT; others ignore it): plain
# text is no one's (0), and the continuation keeps the prompt's last speaker
speakers = torch.tensor(speaker_ids(ids, tok, backward).astype('int64'), device=device)[None, ...]
speakers = torch.cat([speakers, speakers[:, -1:]], dim=1)


def sampled_ids():
    """One sample's token ids as they come, counted for the tokens/s line."""
    global n_tokens
    for idx_next in model.generate_stream(x, max_new_tokens, temperature, top_k, top_p, use_cache, speakers):
        n_tokens += 1
        yield idx_next.item()


n_tokens, t0 = 0, time.time()
for k in range(num_samples):
    stop_ids = tok.turn_ends if stop else ()
    with autocast:
        if not backward:  # stream the continuation as it comes
            print(start, end='', flush=True)
            for piece in decode_stream(tok, sampled_ids(), stop_ids):
                print(piece, end='', flush=True)
        else:  # what came before the start grows at its beginning: show it whole, in reading order
            text = ''
            for text in decode_growing(tok, sampled_ids(), stop_ids, backward=True):
                pass
            print(text + start, end='')
    print('\n---------------')
synchronize(device_type)
dt = time.time() - t0
print0(f"{n_tokens} tokens in {dt:.2f}s: {n_tokens / dt:.1f} tokens/s (KV cache {'on' if use_cache else 'off'})")
