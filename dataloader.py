"""
Data sources for train.py: each turns a prepared data/<name> folder into batches for one model kind's forward. A
source knows files, tokens and tensors; what a batch means to a model is the model's business, and the loop is
train.py's. A project whose batches have another shape (context/response pairs, bags of vectors with a teacher
target) adds a Source subclass here and a name in SOURCES; train.py does not change. The protocol train.py keeps
to is Source's docstring.
"""

import os
import json

import numpy as np
import torch

import semantic
from common import die, make_hint
from stats import spearman
from tokenizer import NgramTokenizer, Tokenizer, orient, speaker_ids


def backward_rows(n, frac):
    """(n,) 0/1 tensor: which of n rows a bidirectional draw reads backward, frac of them spread evenly through it
    (so every batch holds both directions)."""
    return (torch.arange(1, n + 1) * frac).floor() - (torch.arange(n) * frac).floor()


def to_device(device, *tensors):
    if 'cuda' in str(device):
        # pinned memory lets the copy to the GPU run asynchronously
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    return tuple(t.to(device) for t in tensors)


class Source:
    """What train.py asks of a data source (every name in SOURCES is a subclass), and the defaults of what is optional.

    Built once per dataset as cls(data_dir, block_size, batch_size, device, seed, rank, world_size, direction,
    backward_frac, **data_args); data_args are the source's own settings (RL's samples, TurnGPT's semantic_init).
    get_batch(split, generator=None) -> a tuple of tensors on the device: the model's forward's arguments
        (model(*batch) -> output, loss). split is 'train' or 'val'. With no generator the source's own draws the next
        training batch; an evaluation passes its own, so every eval sees the same batches.
    tokenizer, and block_size and batch_size: the window, and the rows this process gets from one call. Every call
        draws world_size x batch_size rows, the same on every process, and returns this rank's slice, so N processes
        see what one process would. train.py sets the two when a curriculum phase starts, and evaluates on a copy
        (copy.copy) given other sizes.
    state_dict() / load_state_dict(state): the generators, so a resumed run draws the same batches.
    Optional, with the do-nothing defaults below; train.py calls each as said:
    model_args    {field: value}: what the data decides of a new model's config (a pair's response_len, the teacher's
                  width), for a model kind whose config has that field.
    meta          the data's meta.json; its 'format' ('text', 'rewrite', ...) goes into the checkpoint's formats.
    init_model(model) -> '' or a note for the start line: once, on a model built from scratch (not on resume or
                  fine-tuning), what the data sets of its weights (the approximator's entries, TurnGPT's semantic init).
    bind(model, autocast, parent): once the model is on the device, for a source that samples from the model it
                  trains (RL's rollouts); parent is the run it was fine-tuned from, or None.
    measure(model) -> {log key: value}: at each eval, after the losses, what the source measures of the model
                  itself (RL's val_pass1, TurnGPT's analogy/...); `measures` names those keys, for advance_when.
    EVAL_METRICS, eval_metrics(output, *batch) -> {name: float}: on each val batch of the run's own dataset, what
                  the source measures of the model's output beyond the loss (the approximator's cosine and Spearman
                  against the teacher's vectors); their means are logged as val_<name>.
    STATS, pop_stats() -> {name: mean}: at each log line, what drawing batches measured since the last one (RL's
                  reward), logged under its name (and train/<name> in the HDF5 log, which STATS declares).
    Beside the protocol, Source gives its subclasses one generator that draws each global batch: every rank draws the
    same indices and takes its own slice, so a global batch is the same on 1 process or N (DDP matches a single
    process exactly), and the generator's state is what a resumed run restores."""
    model_args = {}
    meta = {}
    measures = ()
    EVAL_METRICS = ()
    STATS = ()

    def __init__(self, data_dir, block_size, batch_size, device, seed, rank, world_size):
        self.data_dir, self.block_size, self.batch_size, self.device = data_dir, block_size, batch_size, device
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def get_batch(self, split, generator=None):
        raise NotImplementedError

    def init_model(self, model):
        return ''

    def bind(self, model, autocast, parent):
        pass

    def measure(self, model):
        return {}

    def eval_metrics(self, output, *batch):
        return {}

    def pop_stats(self):
        return {}

    def state_dict(self):
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'])

    def draw_rows(self, n, generator=None):
        """This rank's slice of the global batch's row indices into n rows (pairs, bags), as a numpy array."""
        ix = torch.randint(n, (self.world_size * self.batch_size,), generator=generator or self.generator)
        return ix[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].numpy()


class TokenStream(Source):
    """Random windows of a prepared token stream (nanoGPT's get_batch): x is a window, y the next tokens.

    data_dir holds train.bin/val.bin (flat uint16/uint32 tokens), meta.json and tokenizer.json. An optional
    {split}_mask.bin (uint8, one per token) marks the spans the model learns to write (an assistant's turns, a
    rewrite): their tokens are targets, and so is the token right after each span (the next role token, an end
    marker, BOS), so the model learns where to stop; every other target is -1, ignored. Stating the spans
    rather than the targets keeps a mask right in either direction: read backward, a turn ends at its own role
    token. direction reads every document backward (BOS kept first), or, bidirectional, a backward_frac share
    of each batch's rows backward and the rest forward, each document behind its <|forward|>/<|backward|> token.
    Data whose meta.json says "windows": "document" (rewrite pairs: a pair cut from its draft teaches nothing) has
    every window start at a document's <|bos|>.
    TurnGPT's token vectors (train.py's data_args): semantic_init starts a new model's listed words' vectors around
    their category's direction (semantic.semantic_init), eval_analogies logs their semantic arithmetic at each eval
    (semantic.analogy_eval) as analogy/<figure>.
    """
    ANALOGY = ('top1_excl', 'top1_incl', 'distance', 'distance_rel', 'rank_mean')  # what eval_analogies logs

    def __init__(self, data_dir, block_size, batch_size, device, seed=1337, rank=0, world_size=1,
                 direction='forward', backward_frac=0.5, semantic_init=False, eval_analogies=False):
        if not os.path.isfile(os.path.join(data_dir, 'meta.json')):
            die(f"no prepared data in {data_dir}: " + make_hint(data_dir, "prepare it first, e.g. python -m prepare.chitchat or "
                "python -m prepare.text ../shared/data/tinyshakespeare.txt --tokenizer=char --out=data/shakespeare_char"))
        if not os.path.isfile(os.path.join(data_dir, 'tokenizer.json')):
            die(f"{data_dir} has no tokenizer.json: re-run the prepare script that made it")
        try:
            with open(os.path.join(data_dir, 'meta.json')) as f:
                self.meta = json.load(f)
        except ValueError as e:
            die(f"{data_dir}/meta.json is not valid JSON ({e}); re-run the prepare script that made it")
        self.tokenizer = Tokenizer.load(os.path.join(data_dir, 'tokenizer.json'))
        super().__init__(data_dir, block_size, batch_size, device, seed, rank, world_size)
        self.direction, self.backward_frac = direction, backward_frac
        self.semantic_init, self.eval_analogies = semantic_init, eval_analogies
        self.measures = tuple(f'analogy/{k}' for k in self.ANALOGY) if eval_analogies else ()
        if direction == 'bidirectional' and None in (self.tokenizer.special('<|forward|>'), self.tokenizer.special('<|backward|>')):
            die(f"bidirectional training needs <|forward|> and <|backward|> tokens, which {data_dir}'s "
                f"{self.tokenizer.kind} tokenizer lacks; prepare the data again with this version")
        self.cache = {}  # oriented splits live in memory; forward ones are re-opened memmaps
        for split in ('train', 'val'):
            n = len(self.streams(split)[0][0])
            if n < block_size + 1:
                die(f"split '{split}' of {data_dir} has {n} tokens, fewer than block_size+1 = {block_size + 1}; "
                    f"lower block_size or prepare more data")

    def init_model(self, model):
        """semantic_init: the listed words' rows of a new model's token vectors around their category's direction."""
        if not self.semantic_init:
            return ''
        stats = semantic.semantic_init(model.token_vectors(), self.tokenizer, torch.Generator().manual_seed(self.seed))
        return semantic.describe_init(stats)

    def measure(self, model):
        """eval_analogies: the token vectors' semantic arithmetic."""
        if not self.eval_analogies:
            return {}
        found = semantic.analogy_eval(model.token_vectors().detach(), self.tokenizer)
        return {f'analogy/{k}': found[k] for k in self.ANALOGY}

    def streams(self, split):
        """[(tokens, mask or None)] of a split, one per direction it is read in (two, of equal length, if bidirectional)."""
        path = os.path.join(self.data_dir, f'{split}.bin')
        if not os.path.isfile(path):
            die(f"{path} is missing: re-run the prepare script for {self.data_dir}")
        mask_path = os.path.join(self.data_dir, f'{split}_mask.bin')
        tokens = np.memmap(path, dtype=self.meta['dtype'], mode='r')
        mask = np.memmap(mask_path, dtype=np.uint8, mode='r') if os.path.isfile(mask_path) else None
        if self.direction == 'forward':
            # a fresh memmap per batch avoids a memory leak, https://stackoverflow.com/questions/45132940/
            return [(tokens, mask)]
        if split not in self.cache:
            marker = self.direction == 'bidirectional'
            self.cache[split] = [orient(tokens, self.tokenizer, backward, marker, mask) if mask is not None
                                 else (orient(tokens, self.tokenizer, backward, marker), None) for backward in self.ways()]
        return self.cache[split]

    def starts(self, split):
        """None, or where a window may start if the data's windows start at documents: each <|bos|> with a
        window's worth of tokens after it (the same positions in both directions: orient keeps <|bos|> first)."""
        if self.meta.get('windows') != 'document':
            return None
        key = ('starts', split, self.block_size)  # a curriculum may change block_size
        if key not in self.cache:
            tokens = self.streams(split)[0][0]
            self.cache[key] = torch.from_numpy(np.flatnonzero(tokens[:len(tokens) - self.block_size] == self.tokenizer.bos))
        return self.cache[key]

    def draw(self, split, generator=None):
        """[(stream, start)] of this rank's rows: every rank draws the global batch and keeps its slice."""
        streams, T, starts = self.streams(split), self.block_size, self.starts(split)
        n = self.world_size * self.batch_size
        if starts is None:
            ix = torch.randint(len(streams[0][0]) - T, (n,), generator=generator or self.generator)
        else:
            ix = starts[torch.randint(len(starts), (n,), generator=generator or self.generator)]
        way = backward_rows(n, self.backward_frac if len(streams) == 2 else 0.0)
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return list(zip(way[rows].long().tolist(), ix[rows].tolist()))

    def ways(self):
        """Whether each of streams()'s streams is read backward."""
        return {'forward': [False], 'backward': [True], 'bidirectional': [False, True]}[self.direction]

    def get_batch(self, split, generator=None):
        return to_device(self.device, *self.windows(split, self.draw(split, generator)))

    def windows(self, split, picks):
        """x, y (rows, block_size) of the windows picked by draw."""
        streams, T = self.streams(split), self.block_size
        xs, ys = [], []
        for w, i in picks:
            data, mask = streams[w]
            x = torch.from_numpy(data[i:i + 1 + T].astype(np.int64))
            y = x[1:].clone()
            if mask is not None:
                m = torch.from_numpy(mask[i:i + 1 + T].astype(bool))
                y[~(m[1:] | m[:-1])] = -1  # a span's tokens and the one right after it count
            xs.append(x[:-1])
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)


class SpeakerStream(TokenStream):
    """TokenStream's windows and each token's speaker (TurnGPT's speaker embedding): (x, y, speakers), where
    speakers[b, t] says who wrote x[b, t] (tokenizer.speaker_ids: 0 no one, 1 user, 2 assistant), computed once
    per split over the whole stream, so a window that starts mid-turn still knows whose turn it is."""

    def speakers(self, split):
        key = ('speakers', split)
        if key not in self.cache:
            self.cache[key] = [speaker_ids(tokens, self.tokenizer, b) for (tokens, _), b in zip(self.streams(split), self.ways())]
        return self.cache[key]

    def get_batch(self, split, generator=None):
        picks = self.draw(split, generator)
        s = [torch.from_numpy(self.speakers(split)[w][i:i + self.block_size].astype(np.int64)) for w, i in picks]
        return to_device(self.device, *self.windows(split, picks), torch.stack(s))


class PairSource(Source):
    """(context, response) pairs made by prepare/chatbert.py (ChatBERT): get_batch gives context (B, context_len),
    left-padded with <|pad|>, and response (B, response_len), its end token then <|pad|>s; the model kind decides
    what to learn from them (decode the response, rank it, or unmask it). Rows are drawn like TokenStream's windows:
    the global batch from one generator, each rank its slice. block_size must be context + response tokens."""

    def __init__(self, data_dir, block_size, batch_size, device, seed=1337, rank=0, world_size=1,
                 direction='forward', backward_frac=0.5):
        if not os.path.isfile(os.path.join(data_dir, 'train_context.npy')):
            die(f"no (context, response) pairs in {data_dir}: {make_hint(data_dir, 'prepare them first with python -m prepare.chatbert')}")
        if direction != 'forward':
            die(f"(context, response) pairs are read forward only, got direction={direction!r}")
        self.tokenizer = Tokenizer.load(os.path.join(data_dir, 'tokenizer.json'))
        self.pairs = {split: (np.load(os.path.join(data_dir, f'{split}_context.npy'), mmap_mode='r'),
                              np.load(os.path.join(data_dir, f'{split}_response.npy'), mmap_mode='r'))
                      for split in ('train', 'val')}
        super().__init__(data_dir, block_size, batch_size, device, seed, rank, world_size)
        context_len, response_len = (self.pairs['train'][k].shape[1] for k in (0, 1))
        if block_size != context_len + response_len:
            die(f"{data_dir} pairs {context_len} context and {response_len} response tokens: set block_size = "
                f"{context_len + response_len}")
        # what the data decides of the model's shape (train.py passes these to a model config that has them)
        self.model_args = {'response_len': response_len, 'pad_id': self.tokenizer.special('<|pad|>')}

    def get_batch(self, split, generator=None):
        return to_device(self.device, *self.rows(split, generator or self.generator))

    def rows(self, split, generator):
        """context, response (B, ...) of this rank's rows of a global draw, on the CPU."""
        context, response = self.pairs[split]
        ix = self.draw_rows(len(context), generator)
        return tuple(torch.from_numpy(a[ix].astype(np.int64)) for a in (context, response))


class MaskedPairs(PairSource):
    """Pairs for ChatBERT-IMR (masked diffusion): (x, y, weights). x is [context; response] with each response
    token replaced by <|mask|> with probability t ~ U(eps, 1), one t per row; the context is never masked. y holds
    the masked tokens (-1 elsewhere), and weights 1/(t B L) on them (0 elsewhere), so the weighted loss is MDLM's
    continuous-time ELBO per response token: an upper bound on the response's NLL, end token and padding included."""
    EPS = 1e-3

    def get_batch(self, split, generator=None):
        g = generator or self.generator
        c, r = self.rows(split, g)
        B, L = r.shape
        n, mine = self.world_size * B, slice(self.rank * B, (self.rank + 1) * B)  # drawn for all ranks, sliced
        t = (self.EPS + (1 - self.EPS) * torch.rand(n, generator=g))[mine]
        masked = torch.rand(n, L, generator=g)[mine] < t[:, None]
        x = torch.cat([c, r.masked_fill(masked, self.tokenizer.special('<|mask|>'))], dim=1)
        y = torch.cat([torch.full_like(c, -1), r.masked_fill(~masked, -1)], dim=1)
        w = torch.cat([torch.zeros(c.shape), masked / t[:, None] / (B * L)], dim=1)
        return to_device(self.device, x, y, w)


class BagSource(Source):
    """Bags of vocabulary entries and the teacher's vector of each bag's text, made by prepare/approximator.py (the
    BERT approximator): get_batch gives ids (B, N), each row a message's entries, -1-padded to the batch's largest
    bag (block_size entries at most), and target (B, teacher_dim), the teacher's vector. Rows are drawn like
    PairSource's. The model's entries' vectors come from the data's vocab.h5 (init_model)."""

    def __init__(self, data_dir, block_size, batch_size, device, seed=1337, rank=0, world_size=1,
                 direction='forward', backward_frac=0.5):
        if not os.path.isfile(os.path.join(data_dir, 'train_ids.npy')):
            die(f"no bags of entries in {data_dir}: {make_hint(data_dir, 'prepare them first with python -m prepare.approximator')}")
        if direction != 'forward':
            die(f"a bag of entries has no order to read backward, got direction={direction!r}")
        with open(os.path.join(data_dir, 'meta.json')) as f:
            self.meta = json.load(f)
        self.tokenizer = NgramTokenizer.load(os.path.join(data_dir, 'tokenizer.json'))
        load = lambda split, name: np.load(os.path.join(data_dir, f'{split}_{name}.npy'), mmap_mode='r')
        self.bags = {split: tuple(load(split, n) for n in ('ids', 'offsets', 'teacher')) for split in ('train', 'val')}
        super().__init__(data_dir, block_size, batch_size, device, seed, rank, world_size)
        self.model_args = {'teacher_dim': self.meta['teacher_dim'], 'teacher': self.meta['teacher']}

    def init_model(self, model):
        """A new model's entries' vectors: the teacher's, from vocab.h5."""
        from prepare.common import read_vocab
        vectors = read_vocab(os.path.join(self.data_dir, 'vocab.h5'))[3]
        model.vectors[len(model.vectors) - len(vectors):] = torch.from_numpy(vectors)  # after the specials
        return ''

    EVAL_METRICS = ('cosine', 'spearman')

    @staticmethod
    @torch.no_grad()
    def eval_metrics(pred, ids, target):
        """The mean cosine of a val batch's predicted vectors to the teacher's, and the Spearman correlation of the
        batch's pairwise cosines with the teacher's (what a similarity search ranks by)."""
        pred, target = pred.float(), target.float()
        s, t = (torch.nn.functional.normalize(v, dim=-1) for v in (pred, target))
        upper = torch.triu_indices(len(s), len(s), 1, device=s.device)
        pairs = lambda m: m[upper[0], upper[1]]
        return {'cosine': torch.nn.functional.cosine_similarity(pred, target, dim=-1).mean().item(),
                'spearman': spearman(pairs(s @ s.t()), pairs(t @ t.t()))}

    def get_batch(self, split, generator=None):
        ids, offsets, teacher = self.bags[split]
        ix = self.draw_rows(len(offsets) - 1, generator)
        bags = [ids[offsets[i]:min(offsets[i + 1], offsets[i] + self.block_size)] for i in ix]
        return to_device(self.device, pad_bags(bags), torch.from_numpy(teacher[ix].astype(np.float32)))


class Rollouts(Source):
    """RL on a verifiable task (rl.py, arith.py): a training batch is answers the model being trained samples. Each
    call draws batch_size / samples problems (of the data's problems_train.jsonl, at the chosen levels), samples
    `samples` answers to each at `temperature` with the KV cache, scores each with arith.check (in reading order,
    whatever direction the model writes in), and returns rl.policy_batch's (x, y, speakers, weights): the loss is
    the policy gradient. A backward model is asked as chat.py asks it: the question comes after the answer, which
    it writes from its final line up; a bidirectional model answers a backward_frac share of the problems backward.
    kl > 0 takes kl x (log p - log p_SFT) of each answer off its reward, p_SFT the parent run's (train.py's bind).
    Evaluation's batches (a generator given) are the problems' worked solutions, teacher-forced: val_loss is their
    -log p per token; measure() adds the greedy pass@1 on eval_problems VAL problems (val_pass1): every choice (lr,
    samples, iterations) is made on val; the test problems are read only by projects/rl/eval.py.
    Set through train.py's data_args: samples, temperature, max_new_tokens, levels, kl, eval_problems."""
    STATS = ('reward', 'answer_tokens', 'kl', 'signal')  # what pop_stats gives train.py to log

    def __init__(self, data_dir, block_size, batch_size, device, seed=1337, rank=0, world_size=1,
                 direction='forward', backward_frac=0.5, samples=8, temperature=1.0, max_new_tokens=64, levels=(),
                 kl=0.0, eval_problems=200):
        import rl
        if not os.path.isfile(os.path.join(data_dir, 'problems_train.jsonl')):
            die(f"no task problems in {data_dir}: {make_hint(data_dir, 'prepare them first with python -m prepare.arith')}")
        self.tokenizer = Tokenizer.load(os.path.join(data_dir, 'tokenizer.json'))
        with open(os.path.join(data_dir, 'meta.json')) as f:
            self.meta = json.load(f)
        super().__init__(data_dir, block_size, batch_size, device, seed, rank, world_size)
        levels = set(levels or ())
        self.problems = {split: [p for p in rl.read_problems(data_dir, split) if not levels or p['level'] in levels]
                         for split in ('train', 'val')}
        if not all(self.problems.values()):
            die(f"{data_dir} has no problems at levels {sorted(levels)}; its levels are "
                f"{sorted({p['level'] for p in rl.read_problems(data_dir, 'val')})}")
        if samples < 1 or batch_size % samples:
            die(f"data_args samples={samples} must divide batch_size={batch_size}: a batch is whole groups of samples")
        if not 0 < max_new_tokens < block_size:
            die(f"data_args max_new_tokens={max_new_tokens} must be between 0 and block_size={block_size}")
        if not (temperature > 0 and kl >= 0 and eval_problems >= 1):
            die(f"data_args needs temperature > 0 (samples must differ), kl >= 0 and eval_problems >= 1; got "
                f"temperature={temperature}, kl={kl}, eval_problems={eval_problems}")
        self.direction, self.backward_frac, self.samples, self.temperature = direction, backward_frac, samples, temperature
        self.measures = ('val_pass1',) if direction != 'bidirectional' else ('val_pass1/forward', 'val_pass1/backward')
        self.max_new_tokens, self.kl, self.eval_problems = max_new_tokens, kl, eval_problems
        self.sampler = torch.Generator(device=device).manual_seed(seed + 7 + rank)  # the answers' tokens
        self.model = self.reference_model = None
        self.autocast, self.stats = None, []

    def bind(self, model, autocast, parent):
        """The model to sample from (train.py's, undistributed), and, for kl > 0, the parent run's as the reference."""
        self.model, self.autocast = model, autocast
        if self.kl > 0:
            from common import build_model, load_checkpoint
            if not parent:
                die("data_args kl > 0 needs a parent run to stay close to: start RL from an SFT run (init_from)")
            self.reference_model = build_model(load_checkpoint(parent)).to(self.device).eval().requires_grad_(False)

    def state_dict(self):
        return {'generator': self.generator.get_state(), 'sampler': self.sampler.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'])
        self.sampler.set_state(state['sampler'])

    def picks(self, split, n, generator):
        """[(problem, backward)] of this rank's n of a global draw of world_size x n problems."""
        problems = self.problems[split]
        ix = torch.randint(len(problems), (self.world_size * n,), generator=generator)
        way = backward_rows(len(ix), {'forward': 0.0, 'backward': 1.0, 'bidirectional': self.backward_frac}[self.direction])
        mine = slice(self.rank * n, (self.rank + 1) * n)
        return [(problems[i], bool(w)) for i, w in zip(ix[mine].tolist(), way[mine].tolist())]

    def get_batch(self, split, generator=None):
        if split != 'train' or generator is not None:
            return self.references(split, generator)
        import rl
        from model import sequence_logprobs
        if self.model is None:
            raise RuntimeError("Rollouts samples from the model being trained: call bind(model, autocast, parent) first")
        k, tok = self.samples, self.tokenizer
        if self.batch_size % k:  # the rows one process gets (train.py splits a micro-step's rows over processes)
            die(f"each process gets {self.batch_size} rows a micro-step, not whole groups of samples={k}; make "
                f"batch_size a multiple of samples x processes")
        picks = [pick for pick in self.picks('train', self.batch_size // k, self.generator) for _ in range(k)]
        prompts, _, answers, rewards = rl.attempt(self.model, tok, picks, self.direction == 'bidirectional',
                                                  self.max_new_tokens, self.temperature, self.sampler, self.autocast)
        full = [speaker_ids(p + a, tok, b) for p, a, (_, b) in zip(prompts, answers, picks)]
        shaped, kl = rewards, torch.zeros(len(answers))
        if self.reference_model is not None:  # the k1 estimate of KL(policy || SFT) on each sampled answer
            starts = [len(p) for p in prompts]
            seqs = [p + a for p, a in zip(prompts, answers)]
            kl = torch.tensor(sequence_logprobs(self.model, seqs, starts, full)) - torch.tensor(
                sequence_logprobs(self.reference_model, seqs, starts, full))
            shaped = rewards - self.kl * kl
        advantages = rl.group_advantages(shaped.view(-1, k)).view(-1)
        self.stats.append([rewards.mean().item(), float(np.mean([len(a) for a in answers])), kl.mean().item(),
                           (advantages.view(-1, k).abs().sum(1) > 0).float().mean().item()])
        return to_device(self.device, *rl.policy_batch(prompts, answers, full, advantages))

    def references(self, split, generator):
        """Teacher-forced worked solutions of the split's problems, weighted to their mean -log p."""
        import rl
        picks = self.picks('train' if split == 'train' else 'val', self.batch_size, generator or self.generator)
        marker, max_len = self.direction == 'bidirectional', self.block_size - self.max_new_tokens
        ps = [rl.prompt(self.tokenizer, p['question'], b, marker, max_len) for p, b in picks]
        answers = [rl.reference(self.tokenizer, p['solution'], b)[:self.max_new_tokens] for p, b in picks]
        full = [speaker_ids(p + a, self.tokenizer, b) for (p, _), a, (_, b) in zip(ps, answers, picks)]
        return to_device(self.device, *rl.policy_batch([p for p, _ in ps], answers, full, torch.ones(len(picks))))

    def pop_stats(self):
        """{name: mean} of what the rollouts since the last call measured (train.py logs it): the reward, the answers'
        length in tokens, the KL estimate to the parent, and the share of groups with something to learn."""
        if not self.stats:
            return {}
        means = np.mean(self.stats, axis=0)
        self.stats = []
        return dict(zip(self.STATS, means.tolist()))

    @torch.no_grad()
    def measure(self, model):
        """{'val_pass1': share} (or per reading direction, bidirectional): greedy answers to eval_problems val
        problems spread over the levels, at each eval."""
        import rl
        out, tok = {}, self.tokenizer
        ways = {'forward': [False], 'backward': [True], 'bidirectional': [False, True]}[self.direction]
        vals = self.problems['val']  # in level order: a stride takes every level's share
        vals = vals[::max(1, len(vals) // self.eval_problems)][:self.eval_problems]
        for b in ways:
            rewards = rl.attempt(model, tok, [(p, b) for p in vals], self.direction == 'bidirectional',
                                 self.max_new_tokens, 0, autocast=self.autocast)[3]
            key = 'val_pass1' if len(ways) == 1 else f"val_pass1/{'backward' if b else 'forward'}"
            out[key] = rewards.mean().item()
        return out


def pad_bags(bags):
    """(B, N) int64 tensor of bags of entry ids (sequences of ints), each -1-padded to the largest (N >= 1)."""
    lengths = np.array([len(b) for b in bags])
    x = np.full((len(bags), max(1, lengths.max(initial=1))), -1, dtype=np.int64)
    x[np.arange(x.shape[1]) < lengths[:, None]] = np.concatenate([np.asarray(b, dtype=np.int64) for b in bags] or [[]])
    return torch.from_numpy(x)


def pick_dataset(mix, generator):
    """One name of mix {dataset: weight}, drawn with probability proportional to its weight (train.py draws the
    dataset of each micro-batch so: over a phase, the mix holds on average, whatever the batch size)."""
    names = list(mix)
    if len(names) == 1:
        return names[0]
    return names[torch.multinomial(torch.tensor([float(mix[n]) for n in names]), 1, generator=generator).item()]


# data sources by name (config: data_source); each a Source, whose docstring is the protocol train.py keeps to
SOURCES = {'tokens': TokenStream, 'speakers': SpeakerStream, 'pairs': PairSource, 'masked_pairs': MaskedPairs,
           'bags': BagSource, 'rollouts': Rollouts}
