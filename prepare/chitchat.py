r"""
Prepare the Chit-Chat Challenge conversations (the chitchat-dataset package, so it works offline): the default
corpus for chat. 7,168 two-person conversations, 138,737 turns, 12.5M characters of casual English.
Each conversation is rendered with tokenizer.render_conversation, exactly as chat.py renders a live chat:
    <|bos|><|user|>Hello\nHow are you doing today?<|assistant|>whats up MD\nim doing good ...
    python -m prepare.chitchat
    -> 6,809 train / 359 val conversations, vocab_size 4,096,
       train has 3,355,523 tokens, val has 169,439 tokens (about 3s on 2 CPU cores)
Three formats of the same conversations, for a base -> mid -> sft lineage that shares one tokenizer:
    python -m prepare.chitchat --format=plain --out=data/chitchat_plain --tokenizer=data/chitchat   # no role tokens
    python -m prepare.chitchat --format=sft --out=data/chitchat_sft --tokenizer=data/chitchat       # loss on replies
and, for TurnGPT's curriculum, short single turns as plain text, and the most engaged conversations:
    python -m prepare.chitchat --format=turns --out=data/chitchat_turns --tokenizer=data/chitchat
    -> train has 3,348,714 tokens, val has 169,080 tokens
    python -m prepare.chitchat --engaged=0.1 --out=data/chitchat_engaged --tokenizer=data/chitchat
    -> the tenth of each split with the most words from its less talkative side: 681 train / 36 val conversations,
       train has 1,954,327 tokens (58% of all: engaged conversations are long), val has 87,681 tokens
"""
import argparse
import time

import numpy as np
from tqdm import tqdm

from prepare.common import add_overwrite, check_out, dtype_for, reuse_tokenizer, split_conversations, write_dataset
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
    parser.add_argument('--val_frac', type=float, default=0.05)
    parser.add_argument('--out', default=None, help="default: data/chitchat, or data/chitchat_<format>")
    add_overwrite(parser)
    args = parser.parse_args()
    out = args.out or ('data/chitchat' if args.format == 'chat' else f'data/chitchat_{args.format}')
    check_out(out, args.overwrite)

    t0 = time.time()
    train_convs, val_convs = split_conversations(args.val_frac)
    if not 0 < args.engaged <= 1:
        raise SystemExit(f"--engaged is a share of the conversations in (0, 1], got {args.engaged}")
    if args.engaged < 1:
        train_convs, val_convs = most_engaged(train_convs, args.engaged), most_engaged(val_convs, args.engaged)
    print(f"{len(train_convs) + len(val_convs):,} conversations: {len(train_convs):,} train / {len(val_convs):,} val")
    if args.tokenizer:
        tok = reuse_tokenizer(args.tokenizer)
    else:
        t1 = time.time()
        tok = train_bpe((text for turns in train_convs for _, text in turns), args.vocab_size)  # train text only
        print(f"trained a {tok.vocab_size:,}-token BPE in {time.time() - t1:.1f}s")

    dtype = dtype_for(tok.vocab_size)
    splits, masks = {}, {}
    for split, convs in [('train', train_convs), ('val', val_convs)]:
        rendered = [render(tok, turns, args.format) for turns in tqdm(convs, desc=split)]
        splits[split] = [np.array(ids, dtype=dtype) for ids, _ in rendered]
        if args.format == 'sft':
            masks[split] = [np.array(m, dtype=np.uint8) for _, m in rendered]
    write_dataset(out, tok, splits, masks=masks, source=f'chitchat-dataset (Chit-Chat Challenge), {args.format}',
                  train_conversations=len(train_convs), val_conversations=len(val_convs), format=args.format)
    print(f"done in {time.time() - t0:.1f}s")
