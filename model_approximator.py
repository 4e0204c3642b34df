"""
The BERT approximator: a sentence-transformer's sentence vector, approximated from a bag of vocabulary entries
(words, n-grams, skip-grams: tokenizer.NgramTokenizer) whose vectors the teacher computed offline
(prepare/approximator.py). DeepSets with attention pooling: phi maps each entry's vector alone, attention pools
the bag (one learned query per head), rho maps the pool to the teacher's space. phi and the attention logits
depend on the entry alone, so at inference both are looked up from tables made once (tables()): a sentence costs
lookups, a softmax, a weighted sum and rho, not a transformer. The optional context layer (context > 0) lets what an
element adds depend on its neighbours: a narrow convolution over the bag's order of each entry's tabled context
vector, mapped into phi's width. Alone it changes what an element adds, not its weight, so the pool stays a sum of
tabled rows plus a sum of narrow vectors; with context_logits it shifts the weights too, and the pool weighs each
element's row itself (embed_flat).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT


@dataclass
class ApproximatorConfig:
    vocab_size: int = 30000    # entries, <|unk|> first
    block_size: int = 1024     # entries of a bag that count; a longer bag is cut (512 words make 1,024 at most)
    teacher_dim: int = 384     # the entries' vectors in and the sentence vector out: the teacher's width
    n_embd: int = 512          # phi's width, and the pool's
    n_layer: int = 2           # phi's layers
    n_head: int = 4            # attention-pooling heads, each pooling its own slice of phi's output
    pooling: str = 'attention'  # 'mean' | 'attention' | 'self_attention' (attention pooling after one self-attention layer)
    entry_dim: int = 0         # > 0: each entry also gets a learned vector of this size, mapped into phi's output: what
                               # it means inside a message beyond what the teacher saw in it alone (0: none)
    context: int = 0           # > 0: the context layer's width: each element adds a map of GELU(a convolution over the
                               # context vectors of it and the elements beside it), an entry's context vector a map of
                               # its phi, tabled too. The bag's order: its n-grams and pieces as the text has them, then
                               # its skip-grams (0: none)
    context_window: int = 2    # the neighbours each side that the context layer reads
    context_logits: bool = False  # the context layer also shifts each element's attention logits: its weight then
                                  # depends on its neighbours, so no tabled sums (embed_flat weighs each row)
    dropout: float = 0.0
    mse_weight: float = 1.0    # squared distance to the teacher's raw vector (a dot-product teacher's norm matters)
    cos_weight: float = 1.0    # 1 - cosine to the teacher's vector
    sim_weight: float = 0.0    # squared error of the batch's pairwise cosines against the teacher's (what Spearman ranks)
    teacher: str = ''          # the teacher's name (teacher.py; '' is the packaged all-MiniLM-L6-v2), for consumers

    def __post_init__(self):
        if self.pooling not in ('mean', 'attention', 'self_attention'):
            raise ValueError(f"pooling must be 'mean', 'attention' or 'self_attention', got {self.pooling!r}")
        if self.context_logits and not (self.context and self.pooling == 'attention'):
            raise ValueError("context_logits needs the context layer (context > 0) and pooling='attention'")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        for name in ('entry_dim', 'context', 'context_window', 'mse_weight', 'cos_weight', 'sim_weight'):  # unchecked in model_args
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class BagSelfAttention(nn.Module):
    """One pre-norm self-attention layer over a bag's elements, padding masked, no positions (a bag has no order)."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.ln = nn.LayerNorm(config.n_embd)
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, keep):
        B, N, C = x.shape
        q, k, v = self.qkv(self.ln(x)).view(B, N, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return x + self.proj(y.transpose(1, 2).reshape(B, N, C))


class Approximator(nn.Module):
    can = ('embed',)  # it embeds text: nothing to sample or chat with
    usage = "embed with it: python -m projects.approximator.embed text --out_dir={out_dir} --text='hi there' (projects/approximator/embed.py --help)"

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        # the teacher's vector of each entry: frozen, filled from vocab.h5 (dataloader.BagSource.init_model) or a checkpoint
        self.register_buffer('vectors', torch.zeros(c.vocab_size, c.teacher_dim, dtype=torch.float16))
        self.unk = nn.Parameter(torch.zeros(c.teacher_dim))   # <|unk|>'s vector (id 0), learned
        self.sink = nn.Parameter(torch.zeros(c.teacher_dim))  # in every bag: an empty text has a vector, and
                                                              # attention a place to put weight no entry deserves
        widths = [c.teacher_dim] + [c.n_embd] * c.n_layer
        self.phi = nn.Sequential(*[m for i in range(c.n_layer) for m in (nn.Linear(widths[i], widths[i + 1]), nn.GELU())])
        if c.entry_dim:  # zero at the start: the student begins from the teacher's vectors alone
            self.entry = nn.Embedding(c.vocab_size, c.entry_dim)
            self.entry_map = nn.Linear(c.entry_dim, c.n_embd, bias=False)
            nn.init.zeros_(self.entry.weight)
        if c.context:
            self.to_context = nn.Linear(c.n_embd, c.context)
            self.context = nn.Conv1d(c.context, c.context, 2 * c.context_window + 1, padding=c.context_window)
            self.from_context = nn.Linear(c.context, c.n_embd, bias=False)
            nn.init.zeros_(self.from_context.weight)  # zero at the start, as the entry vectors: the student begins as a bag
            if c.context_logits:
                self.context_logit = nn.Linear(c.context, c.n_head)
                nn.init.zeros_(self.context_logit.weight)
                nn.init.zeros_(self.context_logit.bias)
        self.mix = BagSelfAttention(c) if c.pooling == 'self_attention' else None
        self.query = nn.Linear(c.n_embd, c.n_head) if c.pooling != 'mean' else None  # one query per head: w . phi(e)
        self.rho = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.n_embd, 2 * c.n_embd), nn.GELU(),
                                 nn.Linear(2 * c.n_embd, c.teacher_dim))
        self._tables = self._sums = self._context_table = None  # phi, logits and context vectors of every entry, for
                                                                # inference; made by tables(), dropped by train()

    def get_num_params(self, non_embedding=True):
        """The learned parameters: the entries' teacher vectors are a buffer, not learned; with non_embedding, the
        learned entry vectors (entry_dim) aren't counted either (at inference they are folded into the tables)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.entry.weight.numel() if non_embedding and self.config.entry_dim else n

    def describe(self):
        c, n = self.config, sum(p.numel() for p in self.parameters())
        return [f"approximator: {n:,} learned parameters" + (f" ({self.entry.weight.numel():,} of them entry vectors)"
                if c.entry_dim else '') + f"; frozen: the teacher's {c.vocab_size:,} x {c.teacher_dim} entry vectors"]

    def train(self, mode=True):
        if mode:
            self._tables = self._sums = self._context_table = None  # the weights are about to change (eval() keeps them)
        return super().train(mode)

    def element_vectors(self, ids):
        """(..., teacher_dim) float vectors of entry ids, <|unk|> learned."""
        e = self.vectors[ids.clamp(min=0)].float()
        return torch.where((ids == 0)[..., None], self.unk.to(e.dtype), e)

    def phi_of(self, ids):
        """phi of entries ids (n,), with their learned vectors if entry_dim."""
        h = self.phi(self.element_vectors(ids))
        return h + self.entry_map(self.entry(ids)) if self.config.entry_dim else h

    def features(self, ids):
        """phi of each element (B, N, n_embd), computed once per distinct entry of the batch (a batch of chat messages
        repeats 'i', 'you', 'lol' hundreds of times), and of the sink (n_embd)."""
        distinct, where = ids.clamp(min=0).unique(return_inverse=True)
        return self.phi_of(distinct)[where.view(ids.shape)], self.phi(self.sink)  # view: ONNX's Unique gives it flat

    def neighbours(self, c, keep):
        """The context layer (B, N, context) before from_context: GELU of the convolution of the context vectors c
        (B, N, context) of each element and its context_window neighbours each side, in the bag's order, padding read
        as zeros."""
        c = c.masked_fill(~keep[..., None], 0)
        return F.gelu(self.context(c.transpose(1, 2)).transpose(1, 2))

    def pool(self, h, logits, keep, sink_h, sink_logits):
        """Attention pooling (B, n_embd) of elements h (B, N, n_embd) with logits (B, N, heads) over the kept ones and
        the sink; heads pool their own slices of the width. Mean pooling when logits is None."""
        B, N, C = h.shape
        if logits is None:
            k = keep[..., None].to(h.dtype)
            return ((h * k).sum(1) + sink_h) / (k.sum(1) + 1)
        H = logits.size(-1)
        logits = torch.cat([sink_logits.expand(B, 1, H), logits.masked_fill(~keep[..., None], -math.inf)], dim=1)
        values = torch.cat([sink_h.expand(B, 1, C), h], dim=1).view(B, N + 1, H, C // H)
        return (logits.softmax(1)[..., None] * values).sum(1).view(B, C)

    def embed(self, ids):
        """(B, teacher_dim) sentence vectors of bags ids (B, N), -1 padding."""
        ids = ids[:, :self.config.block_size]
        keep = ids >= 0
        if self._tables is not None:  # inference: phi and the logits are looked up, not computed
            table, logit_table, sink_h, sink_logits = self._tables
            h, logits = table[ids.clamp(min=0)], None if logit_table is None else logit_table[ids.clamp(min=0)]
            c = self._context_table[ids.clamp(min=0)] if self.config.context else None
        else:
            h, sink_h = self.features(ids)
            c = self.to_context(h) if self.config.context else None
            if self.mix is not None:  # the sink takes part, as element 0
                mixed = self.mix(torch.cat([sink_h.expand(h.size(0), 1, -1), h], dim=1), F.pad(keep, (1, 0), value=True))
                sink_h, h = mixed[:, :1], mixed[:, 1:]
            logits = None if self.query is None else self.query(h)
            sink_logits = None if self.query is None else self.query(sink_h)
        if c is not None:  # after the logits: the neighbours change what an element adds, its weight only if context_logits
            g = self.neighbours(c, keep)
            h = h + self.from_context(g)
            if self.config.context_logits:
                logits = logits + self.context_logit(g)
        return self.rho(self.pool(h, logits, keep, sink_h, sink_logits))

    @torch.no_grad()
    def tables(self):
        """Precompute phi and the attention logits of every entry (and the sink) for inference, and use them from now
        on, until train() is called. Not for self_attention pooling, whose elements depend on each other."""
        if self.mix is not None:
            raise ValueError("self_attention pooling mixes the elements of a bag: phi can't be precomputed per entry")
        h = torch.cat([self.phi_of(torch.arange(i, min(i + 8192, self.config.vocab_size), device=self.sink.device))
                       for i in range(0, self.config.vocab_size, 8192)])
        sink_h = self.phi(self.sink)
        q = self.query
        self._tables = (h, None if q is None else q(h), sink_h, None if q is None else q(sink_h))
        self._context_table = self.to_context(h) if self.config.context else None
        self._sums = None if self.config.context_logits else self.sum_tables(*self._tables)
        return self._tables

    @staticmethod
    def sum_tables(h, logits, sink_h, sink_logits):
        """Attention pooling as two sums: softmax(l) . h = sum(e^(l - top) h) / sum(e^(l - top)), so each entry's
        e^(l - top) h and e^(l - top) can be tabled too, (V, n_embd + heads), and a bag pooled by one embedding_bag
        sum, no padding (embed_flat). top is each head's largest logit, so nothing overflows; None if some logit is
        so far below it (80) that float32 would round its weight to zero (then embed's padded path serves)."""
        if logits is None:  # mean pooling: weight 1 for every element
            logits, sink_logits = h.new_zeros(len(h), 1), sink_h.new_zeros(1)
        top = torch.maximum(logits.max(0).values, sink_logits)
        if (top - torch.minimum(logits.min(0).values, sink_logits)).max() > 80:
            return None
        H, w, sink_w = logits.size(-1), (logits - top).exp(), (sink_logits - top).exp()
        weighted = lambda v, w: (v.view(*v.shape[:-1], H, -1) * w[..., None]).flatten(-2)
        return torch.cat([weighted(h, w), w], -1), torch.cat([weighted(sink_h, sink_w), sink_w], -1)

    def can_embed_flat(self):
        """Whether embed_flat serves: the tables are made, and the weights are tabled sums or shifted by the context."""
        return self._tables is not None and (self._sums is not None or self.config.context_logits)

    def embed_flat(self, ids, offsets):
        """(B, teacher_dim) sentence vectors of bags given flat, ids (n,) >= 0 and each bag's start in offsets (B,), from
        the tables (tables(): attention or mean pooling); equal to embed's up to float rounding, without padding."""
        if self.config.context_logits:
            return self.rho(self.flat_shifted_pool(ids, offsets))
        table, sink = self._sums
        s = F.embedding_bag(ids, table, offsets, mode='sum') + sink
        C = self.config.n_embd
        H = s.size(1) - C
        if self.config.context:
            g, bag = self.flat_neighbours(ids, offsets)
            s[:, :C] += self.context_sums(g, bag, table[ids, C:], len(offsets))
        return self.rho((s[:, :C].view(-1, H, C // H) / s[:, C:, None]).view(-1, C))

    def flat_neighbours(self, ids, offsets):
        """The context layer before from_context (n, context) for bags given flat, each element's neighbours those of
        its own bag, as neighbours() gives for padded bags; and each element's bag (n,)."""
        n, w = len(ids), self.config.context_window
        bag = torch.bucketize(torch.arange(n, device=ids.device), offsets, right=True) - 1
        c, b = F.pad(self._context_table[ids], (0, 0, w, w)), F.pad(bag, (w, w), value=-1)
        taps = torch.stack([c[k:k + n] * (b[k:k + n] == bag)[:, None] for k in range(2 * w + 1)], 1)  # (n, taps, context)
        kernel = self.context.weight.permute(0, 2, 1).flatten(1)  # (context, taps x context), as taps is laid out
        return F.gelu(taps.flatten(1) @ kernel.t() + self.context.bias), bag

    def context_sums(self, g, bag, weights, B):
        """(B, n_embd) each head's sum of its elements' from_context(g), weighted by weights (n, heads)."""
        H = weights.size(1)
        pooled = g.new_zeros(B, H, g.size(1)).index_add_(0, bag, weights[:, :, None] * g[:, None, :])
        out = self.from_context.weight.view(H, -1, g.size(1))  # each head's slice of the map
        return torch.einsum('bhd,hcd->bhc', pooled, out).flatten(1)

    def flat_shifted_pool(self, ids, offsets):
        """embed_flat's pool (B, n_embd) when the context shifts the logits (context_logits): the weights aren't tabled,
        so each head's weighted sum of phi rows is one embedding_bag with a weight per element, the softmax steadied
        by each bag's largest logit."""
        h, logits, sink_h, sink_logits = self._tables
        C, H, B, n = self.config.n_embd, self.config.n_head, len(offsets), len(ids)
        g, bag = self.flat_neighbours(ids, offsets)
        shifted = logits[ids] + self.context_logit(g)  # (n, heads)
        top = sink_logits.expand(B, H).scatter_reduce(0, bag[:, None].expand(-1, H), shifted, 'amax')
        w, sink_w = (shifted - top[bag]).exp(), (sink_logits - top).exp()
        heads = torch.arange(H, device=ids.device)[:, None]
        rows = (ids[None] * H + heads).flatten()  # row e x H + k of h.view(V x H, C / H): head k's slice of entry e
        s = F.embedding_bag(rows, h.view(-1, C // H), (heads * n + offsets[None]).flatten(), mode='sum',
                            per_sample_weights=w.t().flatten())  # one bag per (head, text)
        s = s.view(H, B, C // H).transpose(0, 1) + sink_w[..., None] * sink_h.view(H, C // H)
        s = s + self.context_sums(g, bag, w, B).view(B, H, C // H)
        return (s / sink_w.index_add(0, bag, w)[..., None]).flatten(1)

    def forward(self, ids, target=None):
        pred = self.embed(ids)
        if target is None:
            return pred, None
        return pred, self.distill_loss(pred.float(), target.float())

    def distill_loss(self, pred, target):
        c = self.config
        loss = c.mse_weight * (pred - target).pow(2).sum(-1).mean() + c.cos_weight * (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
        if c.sim_weight:
            s, t = (F.normalize(v, dim=-1) for v in (pred, target))
            off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
            loss = loss + c.sim_weight * ((s @ s.t() - t @ t.t())[off]).pow(2).mean()
        return loss

    configure_optimizers = GPT.configure_optimizers  # AdamW with decayed matrices, as the GPT's

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        return None  # a bag isn't block_size tokens: flops per token mean nothing here

    def device(self):
        return self.sink.device
