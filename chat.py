"""
Chat in the terminal with a model trained on conversations (config/quickstart.py):
$ python chat.py --out_dir=out-quickstart
The history is rendered exactly as in training (tokenizer.render_conversation) and cut, whole turns first,
to fit the block. /clear forgets the history; /quit or /exit (or Ctrl-D) leaves.
The model's direction comes from its checkpoint. A backward model is given the ending, your message, and
writes the turn that came before it; the conversation grows back in time and is shown in reading order. A
bidirectional model takes /forward and /backward to choose the direction of the next turns.
Every model kind replies through its own Chat (engine.py), and the checkpoint says which kind it is: a ChatBERT-IMR
reply fills in from masks (/steps N, /template I think ___ is ___ for FIB), a ChatBERT-RA reply is retrieved (/top K
shows the best candidates and their scores). No model yet? python chat.py --demo chats by BM25 retrieval.
"""

import sys

import torch

from common import configure, die, setup_device, load_checkpoint, build_model, cannot
from engine import BM25Chat, cannot_chat, chat_for
from tokenizer import Tokenizer, reading

# -----------------------------------------------------------------------------
out_dir = 'out'  # a run's directory (its ckpt.pt), or the path of a checkpoint file
max_new_tokens: '[1, inf)' = 128  # per reply
temperature: '[0, inf)' = 0.7  # 0 = greedy
top_k: '[0, inf)' = 50  # 0 for all
top_p: '(0, 1]' = 0.95  # 1.0 for all
seed: '[0, 9.2e18]' = 1337
device = 'auto'  # 'auto' | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype: ('auto', 'float32', 'bfloat16', 'float16') = 'auto'
threads: '[0, inf)' = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else the cores idle at start
demo = False  # chat with no model: BM25 retrieval over the training conversations (engine.BM25Chat)
# -----------------------------------------------------------------------------


def show(old, new):
    """Print a reply's new state: the new end of a text that grew at its end, else the whole text again (a
    masked-diffusion reply fills in anywhere), over the old line on a terminal."""
    if new.startswith(old):
        print(new[len(old):], end='', flush=True)
    elif sys.stdout.isatty():
        print('\r\x1b[K' + 'Bot: ' + new, end='', flush=True)
    else:
        print('\nBot: ' + new, end='', flush=True)


if __name__ == '__main__':
    configure(globals(), sys.argv[1:])
    *_, device, device_type, ptdtype, autocast = setup_device(device, dtype, threads)
    torch.manual_seed(seed)
    if demo:
        from splits import split_conversations
        bot, way = BM25Chat(split_conversations()['train']), 'forward'
        print("chatting by BM25 retrieval over the training conversations (no model: the reply to the turn most like "
              "yours). /top K, /clear, /quit")
    else:
        ckpt = load_checkpoint(out_dir, device)
        if why := cannot(ckpt, 'chat', out_dir):  # before its tokenizer is built: an approximator's is no chat tokenizer
            die(why)
        model, tok = build_model(ckpt).to(device).eval(), Tokenizer(ckpt['tokenizer'])
        if chat_refused := cannot_chat(tok, ckpt, out_dir):
            die(chat_refused)
        bot = chat_for(model, tok, ckpt)
        bot.prepare()  # e.g. ChatBERT-RA's response pool: made now, not in the middle of the first reply
        way = ckpt['direction']
        arrow = {'forward': '→', 'backward': '←', 'bidirectional': '↔'}[way]
        commands = ['/' + k for k in bot.settings] + (['/top K'] if 'candidates' in bot.features else [])
        print(f"chatting with {out_dir} ({ckpt['model_kind']}, {model.get_num_params() / 1e6:.1f}M parameters, {arrow} "
              f"{way}). /clear, /quit" + (", /forward, /backward" if way == 'bidirectional' else '')
              + ''.join(', ' + c for c in commands)
              + ("\n(backward: your message is the ending; the model writes what came before it, and each next message of "
                 "yours goes before the conversation so far)" if way == 'backward' else ''))
    settings = {}  # what the model kind takes beyond the sampling knobs, set with /<name> value
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
        name, _, value = text[1:].partition(' ')
        if text.startswith('/') and name in bot.settings:
            kind, _, what = bot.settings[name]
            try:  # the kind's own check, the web's too: converted, in its bounds, a template that fits a reply
                settings = bot.options({**settings, name: value.strip() or kind()})
                print(f"({name} = {settings[name]!r}: {what})")
            except ValueError as e:
                print(f"(/{e})")  # each reason starts with the setting's name: (/steps must be in [0, 32], ...)
            continue
        if text.startswith('/top') and 'candidates' in bot.features:
            k = int(value) if value.strip().isdigit() else 5
            answered = history[:-1] if history and history[-1][0] == 'assistant' else history  # what the last reply answered
            for score, reply in bot.candidates(answered, k):
                print(f"  {score:7.3f}  {reply}")
            continue
        if bot.tok is not None:  # BM25 has none
            try:
                bot.tok.encode(text)
            except ValueError as e:
                print(f"({e}; say it another way)")
                continue
        backward, marker = reading(way, asked)
        # backward, the conversation grows back in time: your message, then the reply, go before the history
        history = [('user', text)] + history if backward else history + [('user', text)]
        print("Bot: ", end='', flush=True)
        reply = ''
        try:
            with autocast:
                for reply_so_far in bot.reply_stream(history, max_new_tokens, temperature, top_k, top_p, backward, marker,
                                                     **settings):
                    if not backward:  # forward, the text changes as it forms: show it as it does
                        show(reply, reply_so_far)
                    reply = reply_so_far
        except ValueError as e:  # what a setting can't do here, e.g. a template too long for a reply
            print(f"({e})")
            history = history[1:] if backward else history[:-1]
            continue
        print(reply if backward else '')
        history = [('assistant', reply)] + history if backward else history + [('assistant', reply)]
        if backward:
            print("(the conversation in reading order:)\n" + '\n'.join(f"  {r}: {t}" for r, t in history))
