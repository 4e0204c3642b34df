"""
Prepare the RL phase's task (arith.py): arithmetic word problems of four levels, as conversations for SFT and as
problem lists for RL, in one data dir:
    python -m prepare.arith                   # data/arith: char tokenizer, chat format, loss on the answers
    -> 20,000 train problems (5,000 a level), 800 val (200 a level) and 2,000 test (500 a level); vocab_size 58,
       train has 3,1xx,xxx tokens (see the printout), in about 10 s
    python -m prepare.arith --format=plain --out=data/arith_plain --tokenizer=data/arith   # a base phase's text
    python -m prepare.arith --gsm8k=True      # GSM8K through datasets instead (online; nanochat's task)
Each conversation is laid out [user: question][assistant: solution][user: question], so that a model of either
direction reads the question before the solution it learns to write: forward the question, then the solution;
backward (tokenizer.orient reverses each document) the last question, then the solution from its final line up.
That is how chat.py asks each direction for a reply: forward after the newest turn, backward before the oldest.
The mask (sft, the default) puts the loss on the solution and the turn token that ends it.
A problem's split is splits.split_of of its question (arith.problems), so no question is in two splits.
Also written: problems_train.jsonl, problems_val.jsonl and problems_test.jsonl ({question, solution, answer, level}
a line). dataloader.Rollouts samples rollouts from train and measures val_pass1 on val; val.bin is the VAL problems'
conversations (SFT's val loss, best.pt, early stopping). Test is read only by projects/rl/eval.py's table.
"""
import argparse
import json
import os

import numpy as np

import arith
from prepare.common import add_overwrite, check_out, dtype_for, reuse_tokenizer, write_dataset
from splits import split_of
from tokenizer import SPECIAL_TOKENS, char_tokenizer, render_conversation


def render(tok, p, fmt):
    """(ids, mask or None) of one problem: plain text, or the question-solution-question conversation."""
    if fmt == 'plain':
        return [tok.bos] + tok.encode(f"{p['question']}\n{p['solution']}"), None
    turns = [('user', p['question']), ('assistant', p['solution']), ('user', p['question'])]
    ids, mask = [tok.bos], [0]
    for role, text in turns:
        body = tok.encode(text)
        ids += [tok.special(f'<|{role}|>')] + body
        mask += [0] + [int(role == 'assistant')] * len(body)
    assert ids == render_conversation(tok, turns)  # as chat.py renders a conversation
    return ids, (mask if fmt == 'sft' else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--format', default='sft', choices=['sft', 'chat', 'plain'],
                        help="sft: chat with the loss on the solutions; chat: role tokens, loss everywhere; plain: text")
    parser.add_argument('--train_per_level', type=int, default=5000)
    parser.add_argument('--val_per_level', type=int, default=200, help="for every choice: val.bin, val_pass1")
    parser.add_argument('--test_per_level', type=int, default=500, help="read once, by projects/rl/eval.py's table")
    parser.add_argument('--seed', type=int, default=0, help="which problems: the same seed gives the same ones")
    parser.add_argument('--gsm8k', default='False', choices=['True', 'False'], help="GSM8K (online) instead")
    parser.add_argument('--tokenizer', default='char', help="char | a prepared data dir whose tokenizer to reuse")
    parser.add_argument('--out', default=None, help="default: data/arith (data/gsm8k with --gsm8k=True)")
    add_overwrite(parser)
    args = parser.parse_args(argv)
    out = args.out or ('data/gsm8k' if args.gsm8k == 'True' else 'data/arith')
    check_out(out, args.overwrite)
    tok = reuse_tokenizer(args.tokenizer) if args.tokenizer != 'char' else None  # checked before any work
    if args.gsm8k == 'True':
        train = arith.gsm8k('train')  # GSM8K has no val split: the train questions whose split_of is val are it
        sets = {'train': [p for p in train if split_of(p['question']) != 'val'],
                'val': [p for p in train if split_of(p['question']) == 'val'], 'test': arith.gsm8k('test')}
    else:
        sets = {split: [p for level in arith.LEVELS for p in arith.problems(split, n, level, args.seed)]
                for split, n in (('train', args.train_per_level), ('val', args.val_per_level),
                                 ('test', args.test_per_level))}
    if tok is None:
        text = ''.join(p['question'] + p['solution'] for ps in sets.values() for p in ps)
        tok = char_tokenizer(text, SPECIAL_TOKENS)
    try:
        docs = {split: [render(tok, p, args.format) for p in ps] for split, ps in sets.items()}
    except ValueError as e:  # a reused char tokenizer meets a character it lacks
        raise SystemExit(f"the problems don't fit that tokenizer ({e}); prepare them with --tokenizer=char") from None
    dtype = dtype_for(tok.vocab_size)
    # train.bin and val.bin only: test's conversations are not written as tokens, so no training run can read them
    splits = {s: [np.array(ids, dtype=dtype) for ids, _ in docs[s]] for s in ('train', 'val')}
    masks = None if args.format != 'sft' else {s: [np.array(m) for _, m in docs[s]] for s in ('train', 'val')}
    write_dataset(out, tok, splits, source='gsm8k' if args.gsm8k == 'True' else f'arith seed={args.seed}', masks=masks,
                  task='arith', format='chat' if args.format != 'plain' else 'text', windows='document',
                  problems={s: len(ps) for s, ps in sets.items()})
    for split, ps in sets.items():
        with open(os.path.join(out, f'problems_{split}.jsonl'), 'w') as f:
            f.writelines(json.dumps(p) + '\n' for p in ps)
    print(f"{len(sets['train']):,} train, {len(sets['val']):,} val and {len(sets['test']):,} test problems; e.g.\n{sets['train'][0]['question']}\n"
          f"{sets['train'][0]['solution']}")


if __name__ == '__main__':
    main()
