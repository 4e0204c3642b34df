"""
The GPT of nanolab, readable top to bottom: a decoder-only transformer. Its blocks take a `causal` flag, so the
same code is also a bidirectional (BERT-style) encoder. The architecture knobs reach back to nanoGPT's GPT-2 recipe
(learned positions, LayerNorm, GELU) and forward to modern choices (rotary, RMSNorm, ReLU^2, QK-norm); with the
defaults, shakespeare_char reaches val 1.90 in a quarter of the time nanoGPT's recipe takes (one pair on a shared CPU:
bench/ttq.json). TurnGPT is two options of the same GPT: turn_dim (each token a small "turn vector", mapped to the
width and tied to the output head through the same map) and n_speakers (a learned embedding of who is speaking, added
to each token's). Generation streams tokens through a KV cache.

A model file knows tensors: ids in, logits, vectors or ids out. How a conversation becomes ids and a reply text is
engine.py's; the files beside a checkpoint are its loader's. The other kinds build on this file:
model_chatbert.py (ChatBERT, from these blocks) and model_approximator.py. A model's forward(*batch) returns
(logits, loss), so train.py calls every kind the same way; common.MODELS lists the kinds and the whole protocol.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F



@dataclass
class GPTConfig:
    block_size: int = 256
    vocab_size: int = 4096
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False        # biases in Linears and LayerNorms (GPT-2: True)
    pos: str = 'rope'         # 'rope' (rotary) | 'learned' (GPT-2's wpe)
    norm: str = 'layer'       # 'layer' | 'rms' (LayerNorm is as good here and faster on CPU)
    mlp: str = 'relu2'        # 'relu2' (ReLU squared) | 'gelu'
    qk_norm: bool = False     # normalize q and k per head before attention
    tie_weights: bool = True  # share wte and lm_head
    causal: bool = True       # False: a bidirectional encoder from the same blocks
    turn_dim: int = 0         # > 0: TurnGPT's factorized token vectors of this size (ALBERT's E); 0: dense wte
    turn_map: str = 'linear'  # how turn vectors reach the width: 'linear' | 'poly' (per-coordinate powers 1..5)
    n_speakers: int = 0       # > 0: add a learned speaker embedding (0 = no turn, 1 = user, 2 = assistant)

    def __post_init__(self):
        # what the arguments' types can't say; train.py turns a ValueError into one line
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if self.pos == 'rope' and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, got n_embd/n_head = {self.n_embd // self.n_head}")
        for key, allowed in (('pos', ('rope', 'learned')), ('norm', ('layer', 'rms')), ('mlp', ('relu2', 'gelu')),
                             ('turn_map', ('linear', 'poly'))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.turn_dim and not self.tie_weights:
            # an untied dense head would keep V x n_embd parameters: the compression would be the embedding's alone
            raise ValueError("turn_dim ties the output head through the turn map; set tie_weights=True")


class Norm(nn.Module):
    """LayerNorm (optionally with a bias) or RMSNorm, chosen by config.norm."""

    def __init__(self, ndim, kind='layer', bias=False):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias and kind == 'layer' else None

    def forward(self, x):
        if self.kind == 'rms':
            return F.rms_norm(x, (x.size(-1),), self.weight, 1e-5)
        return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, 1e-5)


def rotary_cos_sin(seq_len, head_dim, base=10000.0):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(seq_len).float(), inv_freq)  # (T, hs/2)
    # both halves of a head share the frequencies
    return torch.cat([freqs.cos(), freqs.cos()], dim=-1), torch.cat([freqs.sin(), freqs.sin()], dim=-1)  # (T, hs)


def rotate(x, cos, sin):
    # (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin): two products, then one in-place pass over the halves
    d = x.size(-1) // 2
    out, xsin = x * cos, x * sin
    out[..., :d] -= xsin[..., d:]
    out[..., d:] += xsin[..., :d]
    return out


class Rotary(torch.autograd.Function):
    """Rotate pairs (x[i], x[i + hs/2]) of each head by position-dependent angles. x: (..., hs)
    Written out because autograd through the in-place halves would be slow; the backward is the rotation
    by minus the angles, the same three passes."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rotate(x, cos, sin).type_as(x)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return rotate(grad, cos, -sin).type_as(grad), None, None


apply_rotary = Rotary.apply


class KVCache:
    """Preallocated keys and values for every layer, filled as generation goes (nanochat's engine idea)."""

    def __init__(self, n_layer, max_len):
        self.n_layer, self.max_len = n_layer, max_len
        self.k = self.v = None  # allocated at the first update, in the dtype autocast gives k and v
        self.pos = 0  # tokens already in the cache

    def update(self, layer, k, v):
        # write this step's k, v (B, nh, T, hs) after what is cached and return everything cached so far
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = torch.zeros(self.n_layer, B, nh, self.max_len, hs, device=k.device, dtype=k.dtype)
            self.v = torch.zeros_like(self.k)
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]


def attention_entropy(q, k, causal):
    """Each head's attention entropy in nats, averaged over batch and queries: (nh,). SDPA never forms the
    attention matrix, so the research log's probe forms it here, once, for a small batch."""
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if causal:
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float('-inf'))
    p = att.float().softmax(dim=-1)
    return -(p * p.clamp_min(1e-30).log()).sum(dim=-1).mean(dim=(0, 2))


class SelfAttention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.causal = config.causal
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.record_entropy = False  # h5log.probe sets it to read each head's attention entropy

    def forward(self, x, rope=None, cache=None):
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        # norm and rotary work in the projection's (B, T, nh, hs) layout, on rows of contiguous heads; SDPA then
        # returns y in that order too, so putting the heads back side by side below is free
        q, k, v = self.c_attn(x).view(B, T, 3 * nh, hs).split(nh, dim=2)
        if self.qk_norm:
            q, k = F.rms_norm(q, (hs,)), F.rms_norm(k, (hs,))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if self.record_entropy:
            self.entropy = attention_entropy(q, k, self.causal)
        mask, is_causal = None, self.causal
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer_idx, k, v)
            if past > 0:
                # new queries see all of the past and, causally, each other
                is_causal = False
                if self.causal and T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class ReLU2(torch.autograd.Function):
    """relu(x)^2 with its backward written out: 2 relu(x) grad is two ops and keeps one tensor, where autograd
    through relu then x * x takes four (two products, their sum, the relu mask)."""

    @staticmethod
    def forward(ctx, x):
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad):
        r, = ctx.saved_tensors
        return (grad * r).mul_(2)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.relu2 = config.mlp == 'relu2'
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        x = ReLU2.apply(x) if self.relu2 else F.gelu(x)
        return self.dropout(self.c_proj(x))


class Block(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config.norm, config.bias)
        self.attn = SelfAttention(config, layer_idx)
        self.ln_2 = Norm(config.n_embd, config.norm, config.bias)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None):
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.pos in ('rope', 'learned') and config.norm in ('rms', 'layer') and config.mlp in ('relu2', 'gelu')
        self.config = config
        E = config.turn_dim
        self.transformer = nn.ModuleDict(dict(
            # dense token vectors, or TurnGPT's: a (vocab, E) table and a map from E (or its powers) to the width
            wte=nn.Embedding(config.vocab_size, config.n_embd) if not E else None,
            turn=nn.Embedding(config.vocab_size, E) if E else None,
            turn_map=nn.Linear(E * self.POLY if config.turn_map == 'poly' else E, config.n_embd, bias=False) if E else None,
            wse=nn.Embedding(config.n_speakers + 1, config.n_embd) if config.n_speakers else None,  # +1: no speaker
            wpe=nn.Embedding(config.block_size, config.n_embd) if config.pos == 'learned' else None,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=Norm(config.n_embd, config.norm, config.bias),
        ))
        # turn vectors have no head of their own: it is tied through the same map (see head)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False) if not E else None
        if config.tie_weights and not E:
            self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying
        if config.pos == 'rope':
            # a buffer so it follows .to(device); not persistent: derived, so not in checkpoints
            cos, sin = rotary_cos_sin(config.block_size, config.n_embd // config.n_head)
            # repeated for each head (T, nh, hs): on CPU, multiplying contiguous rows beats broadcasting
            cos, sin = (t.unsqueeze(1).repeat(1, config.n_head, 1) for t in (cos, sin))
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        self.apply(self._init_weights)
        # scaled init of the residual projections, per GPT-2
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if E:
            # the table at the dense embedding's scale (0.02) and the map near an isometry (std 1/sqrt(features)),
            # so input vectors, logits and the table's gradients all start as a dense model's do. Two small
            # factors (ALBERT's 0.02 and 0.02) start at a saddle: each gets the other's tiny gradient, and the
            # model learns far slower; a unit-scale table learns slowly too, as Adam moves it ~lr a step. The
            # polynomial map's powers need unit-scale coordinates (the source's small integers) to matter at all
            poly = config.turn_map == 'poly'
            features = self.transformer.turn_map.in_features
            torch.nn.init.normal_(self.transformer.turn.weight, mean=0.0, std=1.0 if poly else 0.02)
            torch.nn.init.normal_(self.transformer.turn_map.weight, mean=0.0, std=(0.02 if poly else 1.0) / math.sqrt(features))

    # -- TurnGPT's token vectors: input x = map(phi(t)), logits = (h . map) . phi(T)^T, one table for both ends
    POLY = 5  # the source's per-coordinate polynomial degree: features t, t^2/2!, ..., t^5/5!

    def turn_features(self, t):
        if self.config.turn_map == 'linear':
            return t
        # Taylor-scaled powers: bounded for |t| of a few units, where t^5 alone would swamp the rest
        return torch.cat([t ** k / math.factorial(k) for k in range(1, self.POLY + 1)], dim=-1)

    def embed(self, idx, speakers=None):
        if self.config.turn_dim:
            x = self.transformer.turn_map(self.turn_features(self.transformer.turn(idx)))
        else:
            x = self.transformer.wte(idx)
        if self.transformer.wse is not None and speakers is not None:
            x = x + self.transformer.wse(speakers)
        return x

    def head(self, x):
        if not self.config.turn_dim:
            return self.lm_head(x)
        # project h down to the features first: (B, T, C) -> (B, T, F), then F x V, never a dense V x C matrix
        return (x @ self.transformer.turn_map.weight) @ self.turn_features(self.transformer.turn.weight).t()

    def token_vectors(self):
        """Each token's own vector (V, E): the turn table, or the dense embedding; semantic init and the
        analogy evaluation work in this space."""
        return (self.transformer.turn if self.config.turn_dim else self.transformer.wte).weight

    def describe(self):
        """Lines train.py prints at the start: for turn vectors, both compression figures, never one alone."""
        if not self.config.turn_dim:
            return []
        c = self.compression()
        return [f"turn vectors (E={self.config.turn_dim}, {self.config.turn_map} map): token parameters "
                f"{c['token_params']:,} vs {c['dense_token_params']:,} dense ({c['embedding_ratio']:.1f}x smaller); "
                f"whole model {c['params']:,} vs {c['dense_params']:,} dense ({c['model_ratio']:.2f}x smaller)"]

    def compression(self):
        """The counts that tell the honest story: the token parameters (table, map, head) against a dense tied
        V x C embedding, AND the whole model against the same GPT with that dense embedding."""
        cfg = self.config
        dense = cfg.vocab_size * cfg.n_embd
        tokens = sum(p.numel() for n, p in self.named_parameters() if n.split('.')[-2] in ('wte', 'lm_head', 'turn', 'turn_map'))
        total = self.get_num_params()
        return {'token_params': tokens, 'dense_token_params': dense, 'embedding_ratio': dense / tokens,
                'params': total, 'dense_params': total - tokens + dense, 'model_ratio': (total - tokens + dense) / total}

    def get_num_params(self, non_embedding=True):
        """Parameters, counting tied weights once; without the position table by default (nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        return n

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, speakers=None, weights=None, cache=None):
        x = self.hidden(idx, speakers, cache)
        if targets is None:
            # inference: the lm_head on the last position only saves a (T, vocab) matmul
            return self.head(x[:, [-1], :]), None
        logits = self.head(x)
        # targets of -1 are ignored: loss only where a project wants it (a reply, a rewrite, a masked token)
        if weights is None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:  # sum(weight x -log p): RL's policy gradient, weights the advantages (dataloader.Rollouts)
            nll = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1, reduction='none')
            loss = (nll * weights.view(-1)).sum()
        return logits, loss

    def hidden(self, idx, speakers=None, cache=None):
        """The final hidden states (B, T, C), after ln_f."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        assert start + T <= self.config.block_size, f"sequence of {start + T} tokens, block_size is only {self.config.block_size}"
        x, rope = self.positions(self.embed(idx, speakers), start)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, cache)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def positions(self, x, start):
        """(x, rope) for tokens at positions start, start + 1, ...: learned positions added to x, or the rotary
        angles the blocks take."""
        T = x.size(1)
        if self.config.pos == 'learned':
            return x + self.transformer.wpe(torch.arange(start, start + T, device=x.device)), None
        return x, (self.rope_cos[start:start + T], self.rope_sin[start:start + T])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, lr_scales=None):
        """AdamW over groups: 2-D weights (matmuls, embeddings) decay, norms and biases don't; lr_scales
        {parameter-name prefix: lr multiplier} gives modules their own learning rates (the loop multiplies
        each group's lr by its lr_scale), e.g. {'transformer.turn': 0.5}; the longest matching prefix wins."""
        lr_scales = lr_scales or {}
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        for prefix in lr_scales:
            if not any(n == prefix or n.startswith(prefix + '.') for n, _ in named):
                modules = sorted({n.rsplit('.', 1)[0] for n, _ in named if 'h.' not in n} | {'transformer.h'})
                raise ValueError(f"lr_scales names '{prefix}', which matches no parameter; try one of {', '.join(modules)}")
        groups = {}
        for n, p in named:
            match = max((k for k in lr_scales if n == k or n.startswith(k + '.')), key=len, default=None)
            key = (p.dim() >= 2, lr_scales.get(match, 1.0))
            groups.setdefault(key, []).append(p)
        groups = [{'params': ps, 'weight_decay': weight_decay if decay else 0.0, 'lr_scale': scale}
                  for (decay, scale), ps in groups.items()]
        # the fused kernel is one launch for all parameters: faster on CUDA, and on CPU (~5% for small models)
        fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self):
        # PaLM appendix B: 6N for the weights plus the attention's 12 L H Q T
        cfg = self.config
        return 6 * self.get_num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        """Model flops utilization: achieved flops over the device's peak (see common.peak_flops)."""
        if not peak_flops:
            return None
        return self.flops_per_token() * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, speakers=None,
                        generator=None):
        """Yield (B, 1) next tokens after the context idx (B, T). temperature 0 is greedy. speakers (B, T + 1),
        for a model with speaker embeddings: the context's speakers, then the one every new token takes (a chat
        reply ends at the next turn token, so its speaker never changes).

        With the cache, each step feeds one token. When the cache is full (block_size), it is refilled
        from the newest half block, so long generations cost a prefill every block_size/2 tokens instead
        of a full recompute at every step.
        """
        cfg = self.config
        cache = None
        ctx, spk = idx, None if speakers is None else speakers[:, :-1]
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(ctx[:, -cfg.block_size:], speakers=spk if spk is None else spk[:, -cfg.block_size:])
            else:
                if cache is None or cache.pos >= cfg.block_size:
                    keep = cfg.block_size // 2 if cache is not None else cfg.block_size
                    cache = KVCache(cfg.n_layer, cfg.block_size)
                    logits, _ = self(ctx[:, -keep:], speakers=spk if spk is None else spk[:, -keep:], cache=cache)
                else:
                    logits, _ = self(ctx[:, -1:], speakers=spk if spk is None else spk[:, -1:], cache=cache)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            ctx = torch.cat((ctx, idx_next), dim=1)
            if spk is not None:
                spk = torch.cat((spk, speakers[:, -1:]), dim=1)
            yield idx_next

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop=None, use_cache=True, speakers=None,
                 generator=None):
        """Return idx (B, T) extended by up to max_new_tokens; stops early once every row has emitted a stop id.
        generator: a torch.Generator to sample with (RL's rollouts keep theirs, for exact resume), else torch's."""
        stop = torch.tensor(sorted(stop or []), device=idx.device, dtype=idx.dtype)
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for idx_next in self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, use_cache, speakers, generator):
            idx = torch.cat((idx, idx_next), dim=1)
            if stop.numel():
                done |= torch.isin(idx_next[:, 0], stop)
                if done.all():
                    break
        return idx

    # -- what scripts may ask of this kind (common.cannot): continue a text (sample.py), reply to a conversation
    # (chat.py and the web page, through engine.py), score a text token by token (projects/backward/eval.py), embed
    # texts (projects/approximator/embed.py)
    can = ('sample', 'chat', 'score')
    usage = "sample from it: python sample.py --out_dir={out_dir}"  # what to do with it, where a script can't help

    def device(self):
        return self.transformer.ln_f.weight.device


@torch.no_grad()
def sequence_logprobs(model, seqs, starts, speakers=None):
    """For each token sequence, the sum of log P(seq[j] | seq[:j]) over j >= its start, in one right-padded
    batch: the likelihood scoring every evaluation uses (multiple choice, reply ranking, reply perplexity).
    speakers: each sequence's speaker ids, for a model with speaker embeddings."""
    dev = next(model.parameters()).device
    x = torch.zeros(len(seqs), max(map(len, seqs)) - 1, dtype=torch.long)
    y = torch.full_like(x, -1)  # right padding: a causal model's earlier positions never see it
    s = torch.zeros_like(x)
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        seq = torch.as_tensor(seq, dtype=torch.long)
        x[i, :len(seq) - 1], y[i, start - 1:len(seq) - 1] = seq[:-1], seq[start:]
        if speakers is not None:
            s[i, :len(seq) - 1] = torch.as_tensor(speakers[i][:len(seq) - 1], dtype=torch.long)
    x, y = x.to(dev), y.to(dev)
    logits, _ = model(x, y) if speakers is None else model(x, y, s.to(dev))  # with targets: every position's logits
    logp = logits.float().log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    return (logp * (y >= 0)).sum(1).tolist()


def tempered(logits, temperature):
    """logits / temperature (> 0), shifted so that the best is 0: however near 0 the temperature, the others fall
    towards -inf and never overflow to inf (inf - inf is the NaN that softmax would make), so a temperature near 0
    is greedy, as 0 is. The shift changes no softmax and no argmax. A temperature the logits' dtype can't hold would
    round to 0 (1e-300 in float32: 0 / 0 is NaN) or inf (1e300: -inf / inf is NaN): it divides as the nearest it
    can hold, greedy or uniform all the same."""
    f = torch.finfo(logits.dtype)
    return (logits - logits.max(dim=-1, keepdim=True).values) / min(max(temperature, f.tiny), f.max)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token (B, 1) from last-position logits (B, vocab). top_k 0/None and top_p 1.0/None cut nothing.
    Every sampler of nanolab picks here (sample.py, chat.py, the web chat, RL's rollouts)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = tempered(logits, temperature)
    if top_k:  # None or 0: no cut
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    if top_p is not None and top_p < 1.0:
        # nucleus: keep the smallest set of tokens whose probability adds up to top_p
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keeps the token that crosses top_p
        sorted_logits[drop] = -float('inf')
        logits = torch.full_like(logits, -float('inf')).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
