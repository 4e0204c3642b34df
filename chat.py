"""
Chat in the terminal with a model trained on conversations (config/quickstart.py):
$ python chat.py --out_dir=out-quickstart
The history is rendered exactly as in training (tokenizer.render_conversation) and cut, whole turns first,
to fit the block. /clear forgets the history; /quit or /exit (or Ctrl-D) leaves.
The model's direction comes from its checkpoint. A backward model is given the ending, your message, and
writes the turn that came before it; the conversation grows back in time and is shown in reading order. A
bidirectional model takes /forward and /backward to choose the direction of the next turns.
"""

import sys

import torch

from common import configure, die, setup_device, load_checkpoint, build_model
from tokenizer import Tokenizer, decode_growing, reading, render_prompt, speaker_ids, SPEAKERS

# -----------------------------------------------------------------------------
out_dir = 'out'  # a run's directory (its ckpt.pt), or the path of a checkpoint file
max_new_tokens: '[1, inf)' = 128  # per reply
temperature: '[0, inf)' = 0.7  # 0 = greedy
top_k: '[0, inf)' = 50  # 0 for all
top_p: '(0, 1]' = 0.95  # 1.0 for all
seed = 1337
device = 'auto'  # 'auto' | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'
threads: '[0, inf)' = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else the cores idle at start
# -----------------------------------------------------------------------------


def reply_stream(model, tok, history, max_new_tokens, temperature, top_k, top_p, device, backward=False, marker=False):
    """Yield the assistant's reply to history [(role, text), ...] (oldest first) as growing text in reading
    order, ending at a turn token: after the newest turn, or, backward, before the oldest one."""
    block = model.config.block_size
    # room for the reply, but never more than half the block: the history matters too (a longer reply
    # goes on past the block through the KV cache's refill)
    ids = render_prompt(tok, history, block - min(max_new_tokens, block // 2), backward, marker)
    x = torch.tensor(ids, dtype=torch.long, device=device)[None, ...]
    # who says what, for a model with speaker embeddings (the others ignore it): the prompt's speakers as in
    # training, and the reply is the assistant's
    speakers = torch.tensor(speaker_ids(ids, tok, backward).astype('int64'), device=device)[None, ...]
    speakers = torch.cat([speakers, torch.full_like(speakers[:, :1], 1 + SPEAKERS.index('<|assistant|>'))], dim=1)
    sampled = (t.item() for t in model.generate_stream(x, max_new_tokens, temperature, top_k, top_p, speakers=speakers))
    yield from decode_growing(tok, sampled, tok.turn_ends, backward)


def reply(model, tok, history, max_new_tokens, temperature, top_k, top_p, device, backward=False, marker=False):
    """reply_stream's whole reply: its last text ('' if the model ends its turn at once)."""
    text = ''
    for text in reply_stream(model, tok, history, max_new_tokens, temperature, top_k, top_p, device, backward, marker):
        pass
    return text


@torch.no_grad()
def sample_replies(model, tok, prompts, device, max_new_tokens=32):
    """[(prompt, greedy reply)] for a model being trained (train.py's sample_prompts): each prompt is a user's
    first message, or, for a tokenizer without chat tokens, the opening of a text."""
    was_training = model.training
    model.eval()
    out = []
    for p in prompts:
        if tok.special('<|user|>') is not None and tok.special('<|assistant|>') is not None:
            text = reply(model, tok, [('user', p)], max_new_tokens, 0, None, None, device)
        else:
            x = torch.tensor([([tok.bos] if tok.bos is not None else []) + tok.encode(p)], device=device)
            text = tok.decode(model.generate(x[:, -model.config.block_size:], max_new_tokens, temperature=0)[0, x.size(1):].tolist())
        out.append((p, text))
    model.train(was_training)
    return out


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    *_, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
    torch.manual_seed(seed)
    ckpt = load_checkpoint(out_dir, device)
    tok = Tokenizer(ckpt['tokenizer'])
    if tok.special('<|user|>') is None or tok.special('<|assistant|>') is None:
        die(f"{out_dir} was not trained on conversations (its tokenizer has no <|user|>/<|assistant|> tokens); "
                 f"use sample.py, or train config/quickstart.py")
    model = build_model(ckpt).to(device).eval()
    way = ckpt['direction']
    arrow = {'forward': '→', 'backward': '←', 'bidirectional': '↔'}[way]
    print(f"chatting with {out_dir} ({model.get_num_params() / 1e6:.1f}M parameters, {arrow} {way}). /clear, /quit"
          + (", /forward, /backward" if way == 'bidirectional' else '')
          + ("\n(backward: your message is the ending; the model writes what came before it, and each next message of "
             "yours goes before the conversation so far)" if way == 'backward' else ''))
    history, asked = [], ''  # history oldest first; asked: the direction chosen with /forward, /backward
    while True:
        try:
            text = input("\nYou: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not text:
            continue  # nothing said, nothing to answer
        if text in ('/quit', '/exit'):
            break
        if text == '/clear':
            history = []
            print("(history cleared)")
            continue
        if text in ('/forward', '/backward'):
            try:
                reading(way, text[1:])
                asked = text[1:]
                print(f"(now {asked}: " + ("your messages go before the conversation so far, and the model writes what came before each"
                                            if asked == 'backward' else "the model replies after each of your messages") + ")")
            except ValueError as e:
                print(f"({e})")
            continue
        try:
            tok.encode(text)
        except ValueError as e:
            print(f"({e}; say it another way)")
            continue
        backward, marker = reading(way, asked)
        # backward, the conversation grows back in time: your message, then the reply, go before the history
        history = [('user', text)] + history if backward else history + [('user', text)]
        print("Bot: ", end='', flush=True)
        reply = ''
        with autocast:
            for reply_so_far in reply_stream(model, tok, history, max_new_tokens, temperature, top_k, top_p, device,
                                             backward, marker):
                if not backward:  # forward, the text grows at its end: print what is new
                    print(reply_so_far[len(reply):], end='', flush=True)
                reply = reply_so_far
        print(reply if backward else '')
        history = [('assistant', reply)] + history if backward else history + [('assistant', reply)]
        if backward:
            print("(the conversation in reading order:)\n" + '\n'.join(f"  {r}: {t}" for r, t in history))

