r"""
Prepare the Chit-Chat Challenge conversations (the chitchat-dataset package, so it works offline): the default
corpus for chat. 7,168 two-person conversations, 138,737 turns, 12.5M characters of casual English.
Each conversation is rendered with tokenizer.render_conversation, exactly as chat.py renders a live chat:
    <|bos|><|user|>Hello\nHow are you doing today?<|assistant|>whats up MD\nim doing good ...
    python -m prepare.chitchat
    -> 6,428 train / 354 val / 386 test conversations (splits.py), vocab_size 4,096,
       train has 3,175,970 tokens, val 179,690, test 169,769 (about 10s on 2 CPU cores)
Three formats of the same conversations, for a base -> mid -> sft lineage that shares one tokenizer:
    python -m prepare.chitchat --format=plain --out=data/chitchat_plain --tokenizer=data/chitchat   # no role tokens
    python -m prepare.chitchat --format=sft --out=data/chitchat_sft --tokenizer=data/chitchat       # loss on replies
and, for TurnGPT's curriculum, short single turns as plain text, and the most engaged conversations:
    python -m prepare.chitchat --format=turns --out=data/chitchat_turns --tokenizer=data/chitchat
    -> train has 3,169,542 tokens, val 179,336, test 169,383
    python -m prepare.chitchat --engaged=0.1 --out=data/chitchat_engaged --tokenizer=data/chitchat
    -> the tenth of each split with the most words from its less talkative side: 643 train / 35 val / 39 test
       conversations, train has 1,847,653 tokens (58% of all: engaged conversations are long), val 101,693
"""
import argparse
import time

import numpy as np
from tqdm import tqdm

from prepare.common import add_overwrite, check_out, dtype_for, reuse_tokenizer, write_dataset
from splits import SPLITS, TEST_FRAC, VAL_FRAC, split_conversations
from tokenizer import render_conversation, train_bpe


def engagement(turns):
    """How engaged both people are: the words written by the less talkative of the two. Long conversations
    where one side only says "lol" score low; a long exchange where both write a lot scores high."""
    words = {'user': 0, 'assistant': 0}
    for role, text in turns:
        words[role] += len(text.split())
    return min(words.values())


def most_engaged(convs, frac):
    """The frac of convs with the highest engagement, in their original order."""
    keep = set(sorted(range(len(convs)), key=lambda i: -engagement(convs[i]))[:max(1, round(frac * len(convs)))])
    return [c for i, c in enumerate(convs) if i in keep]


def render(tok, turns, fmt):
    """(ids, mask) of one conversation: mask marks the assistant's text, the spans an sft model learns to write
    (dataloader.TokenStream also counts the token after each span: the model learns to end its turn)."""
    if fmt == 'plain':
        ids = [tok.bos] + tok.encode('\n'.join(text for _, text in turns))
        return ids, None
    if fmt == 'turns':  # every turn a document of its own: short, plain, no roles
        return [i for _, text in turns for i in [tok.bos] + tok.encode(text)], None
    ids, mask = [tok.bos], [0]
    for role, text in turns:
        body = tok.encode(text)
        ids += [tok.special(f'<|{role}|>')] + body
        mask += [0] + [int(role == 'assistant')] * len(body)
    assert ids == render_conversation(tok, turns)  # the renderer chat.py uses, exactly
    return ids, (mask if fmt == 'sft' else None)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--format', default='chat', choices=['chat', 'plain', 'sft', 'turns'],
                        help="chat: role tokens; plain: each conversation as plain text; sft: chat with a loss mask on "
                             "the replies; turns: each turn alone, as plain text")
    parser.add_argument('--engaged', type=float, default=1.0, help="keep only this share of conversations, the most "
                        "engaged (the less talkative side's word count), in both splits")
    parser.add_argument('--tokenizer', default=None, help="reuse this tokenizer (a data dir or its tokenizer.json) instead of training one")
    parser.add_argument('--vocab_size', type=int, default=4096, help="counts the special tokens")
    parser.add_argument('--val_frac', type=float, default=VAL_FRAC, help="the share of conversations for every choice (best.pt, early stopping)")
    parser.add_argument('--test_frac', type=float, default=TEST_FRAC, help="the share held out for the reported tables (test.bin), read by no training run")
    parser.add_argument('--out', default=None, help="default: data/chitchat, or data/chitchat_<format>")
    add_overwrite(parser)
    args = parser.parse_args()
    out = args.out or ('data/chitchat' if args.format == 'chat' else f'data/chitchat_{args.format}')
    check_out(out, args.overwrite)

    t0 = time.time()
    if not 0 < args.engaged <= 1:
        raise SystemExit(f"--engaged is a share of the conversations in (0, 1], got {args.engaged}")
    convs = split_conversations(args.val_frac, args.test_frac)
    if args.engaged < 1:
        convs = {s: most_engaged(c, args.engaged) for s, c in convs.items()}
    train_convs = convs['train']
    print(f"{sum(map(len, convs.values())):,} conversations: " + ' / '.join(f"{len(convs[s]):,} {s}" for s in SPLITS))
    if args.tokenizer:
        tok = reuse_tokenizer(args.tokenizer)
    else:
        t1 = time.time()
        tok = train_bpe((text for turns in train_convs for _, text in turns), args.vocab_size)  # train text only
        print(f"trained a {tok.vocab_size:,}-token BPE in {time.time() - t1:.1f}s")

    dtype = dtype_for(tok.vocab_size)
    splits, masks = {}, {}
    for split in SPLITS:
        rendered = [render(tok, turns, args.format) for turns in tqdm(convs[split], desc=split)]
        splits[split] = [np.array(ids, dtype=dtype) for ids, _ in rendered]
        if args.format == 'sft':
            masks[split] = [np.array(m, dtype=np.uint8) for _, m in rendered]
    write_dataset(out, tok, splits, masks=masks, source=f'chitchat-dataset (Chit-Chat Challenge), {args.format}',
                  format=args.format, **{f'{s}_conversations': len(convs[s]) for s in SPLITS})
    print(f"done in {time.time() - t0:.1f}s")
