r"""
(context, response) pairs for ChatBERT, from the chitchat conversations, split by conversation exactly as
prepare.chitchat splits them and with its tokenizer, so the GPT baseline is scored on the same test pairs:
    python -m prepare.chitchat                      # first: the conversations and their tokenizer
    python -m prepare.chatbert                      # -> data/chatbert/{train,val,test}_{context,response}.npy
    -> train has 118,764 pairs (27,747 responses cut to 32 tokens), val 6,233, test 6,572 (6s on 2 CPU cores)
    python -m prepare.chatbert --source=dailydialog --out=data/chatbert_dd   # online: DailyDialog, or personachat
Every turn after a conversation's first is a response to the turns before it, re-roled so that the response is
the assistant's and the turn before it the user's. The context is that history as chat.py renders it (ending in
<|assistant|>), cut from the left, whole turns first, to --context_len tokens, then left-padded with <|pad|>. The
response is its tokens and the turn-ending <|user|> token, cut to --response_len and right-padded with <|pad|>.
"""
import argparse
import os
import time

import numpy as np
from tqdm import tqdm

from prepare.common import add_overwrite, check_out, dtype_for, reuse_tokenizer, write_meta
from splits import TEST_FRAC, VAL_FRAC, split_conversations


def conversation_pairs(tok, turns, context_len, response_len):
    """(contexts, responses, cut): int arrays (n, context_len), (n, response_len) of one conversation's pairs,
    and how many responses lost tokens to response_len. Each turn's text is encoded once; a context equals
    tokenizer.render_prompt of the re-roled history, left-padded."""
    pad, bos, end = tok.special('<|pad|>'), tok.bos, tok.special('<|user|>')
    role = {r: tok.special(f'<|{r}|>') for r in ('user', 'assistant')}
    texts = [tok.encode(text) for _, text in turns]
    contexts, responses, cut = [], [], 0
    for i in range(1, len(turns)):
        ids = [role['assistant']]  # the reply's role token closes the context
        for j in range(i - 1, -1, -1):  # nearest turn first: the history closest to the reply is kept
            turn = [role['user' if (i - j) % 2 else 'assistant']] + texts[j]
            if len(ids) + len(turn) > context_len - 1:  # -1: room for BOS
                if j == i - 1:  # the nearest turn alone is too long: keep its tokens nearest the reply
                    ids = turn[len(turn) - (context_len - 1 - len(ids)):] + ids
                break
            ids = turn + ids
        ids = [bos] + ids
        response = texts[i] + [end]
        cut += len(response) > response_len
        contexts.append([pad] * (context_len - len(ids)) + ids)
        responses.append(response[:response_len] + [pad] * (response_len - len(response)))
    shape = (len(contexts), context_len), (len(responses), response_len)
    return np.array(contexts, dtype=np.int64).reshape(shape[0]), np.array(responses, dtype=np.int64).reshape(shape[1]), cut


# online corpora through `datasets`: (hub name, how a row becomes its turns' texts), their own train/validation splits
HUB = {
    'dailydialog': ('OpenRL/daily_dialog', lambda row: row['dialog']),
    # the last utterance's history, then its true reply (the last candidate, by the dataset's convention)
    'personachat': ('AlekseyKorshuk/persona-chat', lambda row: row['utterances'][-1]['history'] + [row['utterances'][-1]['candidates'][-1]]),
}


def hub_conversations(name):
    """{split: conversations} of an online corpus, roles alternating from the first speaker (the user): its own
    train, validation (our val) and test splits."""
    from prepare.common import hub_unreachable
    why = hub_unreachable()
    if why:
        raise SystemExit(f"{why}: --source={name} downloads from the Hugging Face hub; offline, the default "
                         f"--source=chitchat works")
    import datasets
    hub, turns = HUB[name]
    out = {}
    for ours, theirs in (('train', 'train'), ('val', 'validation'), ('test', 'test')):
        rows = datasets.load_dataset(hub, split=theirs)
        out[ours] = [[('user' if i % 2 == 0 else 'assistant', t.strip()) for i, t in enumerate(turns(r))] for r in rows]
    return out


def write_pairs(out, tok, splits, context_len, response_len, source):
    """splits {split: list of conversations}: <out>/<split>_context.npy and _response.npy, meta.json, tokenizer.json."""
    os.makedirs(out, exist_ok=True)
    dtype = dtype_for(tok.vocab_size)
    meta = {'vocab_size': tok.vocab_size, 'dtype': dtype, 'tokenizer': tok.kind, 'source': source,
            'context_len': context_len, 'response_len': response_len}
    for split, convs in splits.items():
        parts = [conversation_pairs(tok, turns, context_len, response_len) for turns in tqdm(convs, desc=split)]
        ctx = np.concatenate([c for c, _, _ in parts]).astype(dtype)
        resp = np.concatenate([r for _, r, _ in parts]).astype(dtype)
        if len(ctx) == 0:
            raise SystemExit(f"the {split} split has no pairs: it needs conversations of two turns or more")
        np.save(os.path.join(out, f'{split}_context.npy'), ctx)
        np.save(os.path.join(out, f'{split}_response.npy'), resp)
        meta[f'{split}_pairs'] = len(ctx)
        meta[f'{split}_responses_cut'] = sum(c for _, _, c in parts)
        print(f"{split} has {len(ctx):,} pairs ({meta[f'{split}_responses_cut']:,} responses cut to {response_len} tokens)")
    tok.save(os.path.join(out, 'tokenizer.json'))
    write_meta(out, meta)
    print(f"wrote {out}")


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', default='chitchat', choices=['chitchat', *HUB],
                        help="the conversations: chitchat (offline, split as prepare.chitchat splits them) or an online corpus")
    parser.add_argument('--tokenizer', default='data/chitchat', help="the prepared data dir whose tokenizer to share")
    parser.add_argument('--context_len', type=int, default=96, help="context tokens, BOS and <|assistant|> included")
    parser.add_argument('--response_len', type=int, default=32, help="response tokens, its end token included")
    parser.add_argument('--val_frac', type=float, default=VAL_FRAC, help="as prepare.chitchat's, so the splits agree")
    parser.add_argument('--test_frac', type=float, default=TEST_FRAC, help="as prepare.chitchat's, so the splits agree")
    parser.add_argument('--out', default='data/chatbert')
    add_overwrite(parser)
    args = parser.parse_args()
    check_out(args.out, args.overwrite)
    if args.context_len < 3 or args.response_len < 2:
        raise SystemExit("--context_len must be at least 3 (BOS, a token, <|assistant|>) and --response_len at least 2")
    t0 = time.time()
    tok = reuse_tokenizer(args.tokenizer)
    if tok.special('<|pad|>') is None:
        raise SystemExit(f"{args.tokenizer}'s tokenizer has no <|pad|> token; prepare it again with python -m prepare.chitchat")
    convs = split_conversations(args.val_frac, args.test_frac) if args.source == 'chitchat' else hub_conversations(args.source)
    write_pairs(args.out, tok, convs, args.context_len, args.response_len,
                source='chitchat-dataset (Chit-Chat Challenge), pairs' if args.source == 'chitchat' else f'{HUB[args.source][0]}, pairs')
    print(f"done in {time.time() - t0:.1f}s")
