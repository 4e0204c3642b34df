"""
Data sources for train.py. A source has get_batch(split, generator=None) -> a tuple of tensors that
the model's forward takes (model(*batch) -> logits, loss), state_dict()/load_state_dict() so a
resumed run draws the same batches, and block_size/batch_size attributes that train.py sets (a curriculum
changes them). batch_size is the rows this process gets from one call: every call draws world_size x batch_size
rows, the same on every process, and returns this rank's slice, so N processes see what one process would.
A project whose batches have another shape (context/response pairs, bags of vectors with a teacher
target) adds a class here and a name in SOURCES; train.py does not change.
"""

import os
import json

import numpy as np
import torch

from common import die, lookup
from tokenizer import Tokenizer


def reverse_docs(tokens, bos):
    """Reverse the tokens of each document, keeping its BOS first: [BOS a b c] -> [BOS c b a].

    Applying it twice gives back the input. Text before the first BOS counts as one document.
    """
    out = np.array(tokens, copy=True)
    starts = np.flatnonzero(out == bos) if bos is not None else np.array([], dtype=np.int64)
    bounds = np.concatenate([[0], starts, [len(out)]])
    for s, e in zip(bounds[:-1], bounds[1:]):
        s = s + 1 if s < len(out) and out[s] == bos else s
        out[s:e] = out[s:e][::-1]
    return out


TRANSFORMS = {'reverse': reverse_docs}  # per-document transforms, by name (config: doc_transform)


class TokenStream:
    """Random windows of a prepared token stream (nanoGPT's get_batch): x is a window, y the next tokens.

    data_dir holds train.bin/val.bin (flat uint16/uint32 tokens), meta.json and tokenizer.json; an
    optional {split}_mask.bin (uint8, one per token) marks which targets count: 0 -> target -1, ignored.
    """

    def __init__(self, data_dir, block_size, batch_size, device, seed=1337, rank=0, world_size=1, doc_transform=''):
        if not os.path.isfile(os.path.join(data_dir, 'meta.json')):
            die(f"no prepared data in {data_dir}: prepare it first, e.g. python -m prepare.chitchat "
                     f"or python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char")
        if not os.path.isfile(os.path.join(data_dir, 'tokenizer.json')):
            die(f"{data_dir} has no tokenizer.json: re-run the prepare script that made it")
        try:
            with open(os.path.join(data_dir, 'meta.json')) as f:
                self.meta = json.load(f)
        except ValueError as e:
            die(f"{data_dir}/meta.json is not valid JSON ({e}); re-run the prepare script that made it")
        self.tokenizer = Tokenizer.load(os.path.join(data_dir, 'tokenizer.json'))
        self.data_dir, self.block_size, self.batch_size, self.device = data_dir, block_size, batch_size, device
        self.rank, self.world_size = rank, world_size
        self.transform = doc_transform and lookup(TRANSFORMS, doc_transform, 'doc_transform')
        self.cache = {}  # transformed splits live in memory; plain ones are re-opened memmaps
        # every rank draws the same indices from the same generator and takes its own slice, so a
        # global batch is the same on 1 process or N: DDP matches a single process exactly
        self.generator = torch.Generator().manual_seed(seed)
        for split in ('train', 'val'):
            n = len(self.tokens(split))
            if n < block_size + 1:
                die(f"split '{split}' of {data_dir} has {n} tokens, fewer than block_size+1 = {block_size + 1}; "
                         f"lower block_size or prepare more data")

    def tokens(self, split):
        path = os.path.join(self.data_dir, f'{split}.bin')
        if not os.path.isfile(path):
            die(f"{path} is missing: re-run the prepare script for {self.data_dir}")
        if self.transform:
            if split not in self.cache:
                self.cache[split] = self.transform(np.memmap(path, dtype=self.meta['dtype'], mode='r'), self.tokenizer.bos)
            return self.cache[split]
        # a fresh memmap per batch avoids a memory leak, https://stackoverflow.com/questions/45132940/
        return np.memmap(path, dtype=self.meta['dtype'], mode='r')

    def mask(self, split):
        path = os.path.join(self.data_dir, f'{split}_mask.bin')
        return np.memmap(path, dtype=np.uint8, mode='r') if os.path.isfile(path) else None

    def get_batch(self, split, generator=None):
        data, mask, T = self.tokens(split), self.mask(split), self.block_size
        ix = torch.randint(len(data) - T, (self.world_size * self.batch_size,), generator=generator or self.generator)
        ix = ix[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
        x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        if mask is not None:
            m = torch.stack([torch.from_numpy(mask[i + 1:i + 1 + T].astype(bool)) for i in ix])
            y = y.masked_fill(~m, -1)
        if 'cuda' in str(self.device):
            # pinned memory lets the copy to the GPU run asynchronously
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def state_dict(self):
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'])


SOURCES = {'tokens': TokenStream}  # config: data_source
