r"""
Prepare the Chit-Chat Challenge conversations (the chitchat-dataset package, so it works offline): the default
corpus for chat. 7,168 two-person conversations, 138,737 turns, 12.5M characters of casual English.
Each conversation is rendered with tokenizer.render_conversation, exactly as chat.py renders a live chat:
    <|bos|><|user|>Hello\nHow are you doing today?<|assistant|>whats up MD\nim doing good ...
    python -m prepare.chitchat
    -> 6,809 train / 359 val conversations, vocab_size 4,096,
       train has 3,355,523 tokens, val has 169,439 tokens (about 3s on 2 CPU cores)
"""
import argparse
import time

import chitchat_dataset
import numpy as np
from tqdm import tqdm

from prepare.common import dtype_for, is_val, write_dataset
from tokenizer import render_conversation, train_bpe

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--vocab_size', type=int, default=4096, help="counts the special tokens")
parser.add_argument('--val_frac', type=float, default=0.05)
parser.add_argument('--out', default='data/chitchat')
args = parser.parse_args()

t0 = time.time()
# conv_id -> {'messages': [turn, ...]}, a turn being consecutive messages by one sender: one line per message.
# The two senders alternate, so turns alternate too; whoever opens plays the user.
convs = {cid: [('user' if i % 2 == 0 else 'assistant', '\n'.join(m['text'] for m in turn))
               for i, turn in enumerate(c['messages'])]
         for cid, c in chitchat_dataset.Dataset().items()}
# split by conversation, so no val conversation is half-seen in training
val_ids = {cid for cid in convs if is_val(cid, args.val_frac)}
train_convs = [turns for cid, turns in convs.items() if cid not in val_ids]
val_convs = [turns for cid, turns in convs.items() if cid in val_ids]
print(f"{len(convs):,} conversations: {len(train_convs):,} train / {len(val_convs):,} val")

t1 = time.time()
tok = train_bpe((text for turns in train_convs for _, text in turns), args.vocab_size)  # train text only
print(f"trained a {tok.vocab_size:,}-token BPE in {time.time() - t1:.1f}s")

dtype = dtype_for(tok.vocab_size)
splits = {split: [np.array(render_conversation(tok, turns), dtype=dtype) for turns in tqdm(cs, desc=split)]
          for split, cs in [('train', train_convs), ('val', val_convs)]}
write_dataset(args.out, tok, splits, source='chitchat-dataset (Chit-Chat Challenge)',
              train_conversations=len(train_convs), val_conversations=len(val_convs))
print(f"done in {time.time() - t0:.1f}s")
