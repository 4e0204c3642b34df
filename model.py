"""
The models of nanolab, each readable top to bottom.

GPT: a decoder-only transformer. Its blocks take a `causal` flag, so the same code is also a
bidirectional (BERT-style) encoder. The architecture knobs reach back to nanoGPT's GPT-2 recipe
(learned positions, LayerNorm, GELU) and forward to modern choices (rotary, RMSNorm, ReLU^2, QK-norm);
the defaults are the ones that won the ablation in README.md. TurnGPT is two options of the same GPT:
turn_dim (each token a small "turn vector", mapped to the width and tied to the output head through the
same map) and n_speakers (a learned embedding of who is speaking, added to each token's).

A model's forward(*batch) returns (logits, loss): train.py calls every model the same way, so a new
model kind only has to honour that and be listed in MODELS at the bottom of this file.
"""

import inspect
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from common import check_value
from tokenizer import SPEAKERS, decode_growing, render_context, render_prompt, render_response, render_rewrite, speaker_ids


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

    # -- chatting: every model kind that chats provides reply_stream and score_replies; chat.py, the web page and
    # the conversation metrics call them, never a kind by name. history is [(role, text), ...], oldest first
    # what scripts may ask of this kind (common.cannot): continue a text (sample.py), reply to a conversation (chat.py,
    # the web page), score a text token by token (projects/backward/eval.py), embed texts (projects/approximator/embed.py)
    can = ('sample', 'chat', 'score')
    usage = "sample from it: python sample.py --out_dir={out_dir}"  # what to do with it, where a script can't help
    # {name: (type, rule, what it does)}: what reply_stream takes beyond the sampling knobs (chat.py /name, the page's
    # boxes); rule: the interval a number must be in, as a config key's annotation ('[0, 32]'), or None
    chat_settings = {}

    def chat_options(self, tok, settings):
        """settings {name: value as typed or sent} converted to their types and checked against their rules, for
        reply_stream; or a ValueError that names the setting and says why. chat.py and the web check here, before
        anything is generated, so that no setting can hold a reply for long; a kind adds what needs its tokenizer."""
        unknown = set(settings) - set(self.chat_settings)
        if unknown:
            named = sorted(unknown)[:5] + ([f'and {len(unknown) - 5} more'] if len(unknown) > 5 else [])
            raise ValueError(f"unknown settings {named}; this model takes {sorted(self.chat_settings) or 'none'}")
        out = {}
        for name, value in settings.items():
            kind, rule, what = self.chat_settings[name]
            try:
                out[name] = kind(value)
            except (TypeError, ValueError, OverflowError):  # 'many', 1e400 (inf), a 5,000-digit number
                raise ValueError(f"{name} takes a {kind.__name__}: {what}") from None
            why = rule and check_value(out[name], rule)
            if why:
                raise ValueError(f"{name} must be {why}, got {out[name]!r}: {what}")
        return out

    def prepare_chat(self, tok):
        """What chatting needs that is slow to make (ChatBERT-RA's response pool): made here, once, before the first
        reply, so that no reply waits for it (chat.py and the web call it at start)."""

    @torch.no_grad()
    def reply_stream(self, tok, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95,
                     backward=False, marker=False, **_):
        """Yield the assistant's reply to history as growing text in reading order, ending at a turn token: after
        the newest turn, or, backward, before the oldest one."""
        block, device = self.config.block_size, self.device()
        # room for the reply, but never more than half the block: the history matters too (a longer reply
        # goes on past the block through the KV cache's refill)
        ids = render_prompt(tok, history, block - min(max_new_tokens, block // 2), backward, marker)
        x = torch.tensor(ids, dtype=torch.long, device=device)[None, ...]
        # who says what, for a model with speaker embeddings (the others ignore it): the prompt's speakers as in
        # training, and the reply is the assistant's
        speakers = torch.tensor(speaker_ids(ids, tok, backward).astype('int64'), device=device)[None, ...]
        speakers = torch.cat([speakers, torch.full_like(speakers[:, :1], 1 + SPEAKERS.index('<|assistant|>'))], dim=1)
        sampled = (t.item() for t in self.generate_stream(x, max_new_tokens, temperature, top_k, top_p, speakers=speakers))
        yield from decode_growing(tok, sampled, tok.turn_ends, backward)

    @torch.no_grad()
    def rewrite_stream(self, tok, draft, max_new_tokens=256, temperature=0.7, top_k=50, top_p=0.95):
        """Yield the rewrite of a draft in this model's style (vibejam's rewrite mode) as growing text, ending at the
        end marker, <|bos|>. A model fine-tuned on rewrite pairs (prepare/vibejam.py --pairs) knows the layout."""
        ids = render_rewrite(tok, draft)
        if len(ids) >= self.config.block_size:
            raise ValueError(f"the draft takes {len(ids)} tokens with its prompt; this model reads {self.config.block_size}: shorten it")
        x = torch.tensor(ids, dtype=torch.long, device=self.device())[None, ...]
        sampled = (t.item() for t in self.generate_stream(x, max_new_tokens, temperature, top_k, top_p))
        yield from decode_growing(tok, sampled, {tok.bos})

    @torch.no_grad()
    def score_replies(self, tok, history, replies):
        """[(log-likelihood, tokens)] of each reply after the history and <|assistant|>, with the turn token that
        ends it (the next <|user|>, as render_conversation puts it: a model must also know when its reply is done).
        One batch: all replies share one prompt, the history cut (whole turns first) to fit the block with the
        longest reply. A reply longer than half the block is scored on its first half block of tokens, as
        reply_stream leaves the history at least half the block."""
        block, end = self.config.block_size, tok.special('<|user|>')
        targets = [(tok.encode(r) + [end])[:block // 2] for r in replies]
        prompt = render_prompt(tok, history, block + 1 - max(map(len, targets)))  # +1: the last token is no input
        seqs = [prompt + t for t in targets]
        speakers = [speaker_ids(seq, tok) for seq in seqs]  # for a model with speaker embeddings
        logps = sequence_logprobs(self, seqs, [len(prompt)] * len(seqs), speakers)
        return [(lp, len(t)) for lp, t in zip(logps, targets)]

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


# -----------------------------------------------------------------------------
# ChatBERT: chatting with a bidirectional encoder (the GPT's blocks with causal=False), three ways. Each reads a
# (context, response) pair laid out by tokenizer.render_context/render_response (prepare/chatbert.py): the context
# left-padded to block_size - response_len tokens, the response its tokens, the <|user|> that ends the turn, and
# <|pad|>s to response_len. data.PairSource tells the model response_len and the pad id.


@dataclass
class ChatBERTConfig(GPTConfig):
    response_len: int = 32  # the response's tokens, end token and padding included; the context is the rest of block_size
    pad_id: int = -1        # <|pad|>: no target for the decoder, nothing to pool for the retriever (-1: none)

    def __post_init__(self):
        super().__post_init__()
        if self.causal:
            raise ValueError("a ChatBERT model reads its context both ways: set causal=False")
        if not 0 < self.response_len < self.block_size:
            raise ValueError(f"response_len={self.response_len} must be between 0 and block_size={self.block_size}")


class ChatBERT(GPT):
    """What the three kinds share: the context and response of a chat turn as tensors."""
    can = ('chat',)  # they answer a conversation: no text to continue, and they read it both ways
    usage = "chat with it: python chat.py --out_dir={out_dir}"

    def context(self, tok, history):
        ids = render_context(tok, history, self.config.block_size - self.config.response_len)
        return torch.tensor([ids], dtype=torch.long, device=self.device())

    def responses(self, tok, texts):
        """(B, response_len) and each one's length without padding."""
        rows = [render_response(tok, t, self.config.response_len) for t in texts]
        return (torch.tensor([r for r, _ in rows], dtype=torch.long, device=self.device()), [n for _, n in rows])

    def stops(self, tok):
        """The ids a reply ends at: a turn token, or padding."""
        return tok.turn_ends | {tok.special('<|pad|>')}


# -- ChatBERT-ED: a bidirectional encoder over the context, and a causal decoder that writes the response, its
# blocks attending to the encoder's output (cross-attention). The decoder shares the token embedding and the
# tied head; its positions start at 0 at the response.

class CrossAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_kv = nn.Linear(config.n_embd, 2 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def memory(self, m):
        """The keys and values (B, nh, S, hs) of the encoder's output m (B, S, C): computed once per reply."""
        B, S, C = m.shape
        k, v = self.c_kv(m).view(B, S, 2, self.n_head, C // self.n_head).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, kv, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask)  # mask (B, 1, 1, S): False at the context's pads
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class DecoderBlock(Block):

    def __init__(self, config, layer_idx):
        super().__init__(config, layer_idx)
        self.attn.causal = True  # the decoder writes left to right; the config's causal=False is the encoder's
        self.ln_x = Norm(config.n_embd, config.norm, config.bias)
        self.cross = CrossAttention(config)

    def forward(self, x, rope, cache, kv, mask):
        x = x + self.attn(self.ln_1(x), rope, cache)
        x = x + self.cross(self.ln_x(x), kv, mask)
        return x + self.mlp(self.ln_2(x))


class ChatBERTED(ChatBERT):
    """n_layer encoder blocks (the GPT's, bidirectional) and n_layer decoder blocks."""

    def __init__(self, config):
        super().__init__(config)
        self.decoder = nn.ModuleList([DecoderBlock(config, i) for i in range(config.n_layer)])
        self.ln_d = Norm(config.n_embd, config.norm, config.bias)
        self.decoder.apply(self._init_weights)
        for pn, p in self.decoder.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def encode(self, context):
        """Each decoder block's cross-attention keys and values of the encoded context, and the mask of its pads."""
        memory = self.hidden(context)
        return [b.cross.memory(memory) for b in self.decoder], (context != self.config.pad_id)[:, None, None, :]

    def decode(self, idx, kv, mask, cache=None):
        """Logits (B, T, V) after each of the decoder's input tokens idx (B, T); with a cache, idx follows it."""
        x, rope = self.positions(self.embed(idx), cache.pos if cache is not None else 0)
        x = self.transformer.drop(x)
        for block, block_kv in zip(self.decoder, kv):
            x = block(x, rope, cache, block_kv, mask)
        if cache is not None:
            cache.pos += idx.size(1)
        return self.head(self.ln_d(x))

    def teacher_forced(self, context, response):
        """Logits after each response position's prefix, and the targets: the response, padding ignored. The
        decoder starts from the context's last token, <|assistant|>, which opens every reply."""
        logits = self.decode(torch.cat([context[:, -1:], response[:, :-1]], dim=1), *self.encode(context))
        return logits, response.masked_fill(response == self.config.pad_id, -1)

    def forward(self, context, response):
        logits, targets = self.teacher_forced(context, response)
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)

    @torch.no_grad()
    def reply_stream(self, tok, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95, **_):
        """The reply token by token: the context encoded once, each decoder block's self-attention keys and values
        cached as the reply grows (see KVCache), the cross-attention's computed once by encode."""
        context = self.context(tok, history)
        kv, mask = self.encode(context)
        cache = KVCache(self.config.n_layer, self.config.response_len)

        def sampled():
            x = context[:, -1:]
            for _ in range(min(max_new_tokens, self.config.response_len)):
                x = sample_next(self.decode(x, kv, mask, cache)[:, -1], temperature, top_k, top_p)
                yield x.item()
        yield from decode_growing(tok, sampled(), self.stops(tok))

    @torch.no_grad()
    def score_replies(self, tok, history, replies):
        """[(log-likelihood, tokens)] of each reply and its end token (cut to response_len)."""
        response, lengths = self.responses(tok, replies)
        logits, targets = self.teacher_forced(self.context(tok, history).expand(len(replies), -1), response)
        logp = logits.float().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return list(zip((logp * (targets >= 0)).sum(1).tolist(), lengths))


# -- ChatBERT-RA: a bi-encoder. The same encoder embeds contexts and responses (the mean of its outputs over the
# tokens that aren't padding, unit length); trained with in-batch negatives, each context's true response against
# the batch's others, both ways (CLIP's loss), at a learned temperature. It answers with a response of the
# training set's (retrieval.ResponsePool, a Faiss index beside the checkpoint).

class ChatBERTRA(ChatBERT):

    def __init__(self, config):
        super().__init__(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # 1/temperature, learned; CLIP starts at 1/0.07
        self.pool, self.ckpt = None, None  # the responses to choose from, loaded at the first reply (attach, response_pool)

    def encode(self, idx):
        """(B, C) unit vectors of token rows (B, T)."""
        h = self.hidden(idx)
        keep = (idx != self.config.pad_id)[..., None].to(h.dtype)
        return F.normalize((h * keep).sum(1) / keep.sum(1).clamp(min=1), dim=-1)

    def scale(self):
        return self.logit_scale.exp().clamp(max=100.0)  # CLIP's cap: a runaway temperature destabilizes training

    def forward(self, context, response):
        logits = self.scale() * self.encode(context) @ self.encode(response).t()  # (B, B): the diagonal is right
        labels = torch.arange(len(logits), device=logits.device)
        return logits, (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.t().float(), labels)) / 2

    def attach(self, ckpt):
        """Where the response pool lives (beside the checkpoint) and comes from (the run's training pairs)."""
        self.ckpt = ckpt

    def response_pool(self, tok):
        if self.pool is None:
            if self.ckpt is None:
                raise ValueError("ChatBERT-RA answers from the response pool of a saved checkpoint (common.build_model "
                                 "attaches it); chat with python chat.py --out_dir=<run>")
            import retrieval  # faiss, and files on disk: not the model's business beyond this
            self.pool = retrieval.ResponsePool.for_checkpoint(self, tok, self.ckpt)
        return self.pool

    def prepare_chat(self, tok):
        self.response_pool(tok)  # embedding every training response takes minutes the first time: before any reply

    @torch.no_grad()
    def candidates(self, tok, history, k):
        """The k best responses of the pool for history, [(cosine, text)], best first."""
        pool = self.response_pool(tok)
        scores, ids = pool.search(self.encode(self.context(tok, history)), min(k, len(pool.texts)))
        return [(s, pool.texts[i]) for s, i in zip(scores[0].tolist(), ids[0].tolist())]

    @torch.no_grad()
    def reply_stream(self, tok, history, temperature=0.7, top_k=50, **_):
        """The best response (temperature 0), or one sampled among the top_k (0: all) by softmax(scale x cosine /
        temperature)."""
        found = self.candidates(tok, history, top_k or len(self.response_pool(tok).texts))
        logits = self.scale().float() * torch.tensor([[s for s, _ in found]])
        yield found[sample_next(logits, temperature).item()][1]

    @torch.no_grad()
    def score_replies(self, tok, history, replies):
        """[(scaled cosine, 1)] of each reply with the history: a ranking, not a likelihood."""
        r, _ = self.responses(tok, replies)
        sims = self.scale() * (self.encode(r) @ self.encode(self.context(tok, history))[0])
        return [(s, 1) for s in sims.tolist()]


# -- ChatBERT-IMR: iterative masked refinement (masked diffusion, as in MDLM and LLaDA). [context; response] read
# both ways. Training (data.MaskedPairs) masks each response token with probability t ~ U(eps, 1) and weights the
# loss on the masked tokens by 1/t: the continuous-time ELBO, an upper bound on the response's NLL. Sampling starts
# from an all-mask response and commits the most confident predictions step by step (LLaDA's low-confidence
# remasking). The same weights fill in the blanks of a template (FIB, Mask-Predict).

class ChatBERTIMR(ChatBERT):
    MASK_SHOWN = '░'  # how a still-masked position looks in a reply that is filling in

    @property
    def chat_settings(self):
        L = self.config.response_len  # a reply's tokens: more steps or blocks than that would commit nothing
        return {'steps': (int, f'[0, {L}]', f"refinement steps; 0 or {L}: one token a step"),
                'blocks': (int, f'[1, {L}]', "semi-autoregressive blocks, filled left to right; 1: the whole reply at once"),
                'template': (str, None, "a reply with ___ blanks to fill (FIB), e.g. I think ___ is ___{2}; none: free replies")}

    def chat_options(self, tok, settings):
        out = super().chat_options(tok, settings)
        if out.get('template'):
            try:
                check_template(tok, parse_template(out['template']), self.config.response_len - 1)
            except ValueError as e:
                raise ValueError(f"template: {e}") from None
        return out

    def forward(self, idx, targets=None, weights=None):
        """weights (B, T): each target's weight, 1/(t B L) on a masked response token (data.MaskedPairs), so the
        loss is the ELBO bound per response token; without weights, the plain mean over targets."""
        if targets is None or weights is None:
            return super().forward(idx, targets)
        logits = self.head(self.hidden(idx))
        ce = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1, reduction='none')
        return logits, (ce * weights.view(-1)).sum()

    def response_logits(self, context, response, banned):
        """float64 logits (B, L, V) of every response position, with the banned token ids impossible."""
        logits = self.head(self.hidden(torch.cat([context, response], dim=1))[:, -response.size(1):]).double()
        logits[..., banned] = -math.inf
        return logits

    @torch.no_grad()
    def refine(self, context, length, mask_id, steps, temperature=1.0, blocks=1):
        """Yield the response (B, length) after each of `steps` refinements of an all-<|mask|> start: every step
        predicts each masked position and commits the most confident predictions, so that `length` tokens are
        committed in all, as evenly as the steps allow; the rest stay masked until a later step. blocks > 1 is
        LLaDA's semi-autoregressive variant: the response in that many blocks, left to right, each given its share
        of the steps; a block's tokens see the later blocks masked (without it, a confident end token and padding
        are committed first and the reply comes out short)."""
        B = context.size(0)
        response = torch.full((B, length), mask_id, dtype=torch.long, device=context.device)
        position = torch.arange(length, device=context.device)
        for s in range(steps):
            block = next(b for b in range(blocks) if steps * (b + 1) // blocks > s)  # the block this step works on
            lo, hi = length * block // blocks, length * (block + 1) // blocks
            first, last = steps * block // blocks, steps * (block + 1) // blocks  # the block's steps: [first, last)
            masked = (response == mask_id) & (position >= lo) & (position < hi)
            logits = self.response_logits(context, response, [mask_id])  # a committed <|mask|> would stay masked
            if temperature == 0:
                pred = logits.argmax(-1)
            else:  # Gumbel-max in float64: float32 noise measurably lowers diversity (MDLM)
                gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-300, 1.0)))
                pred = (tempered(logits, temperature) + gumbel).argmax(-1)
            confidence = logits.log_softmax(-1).gather(-1, pred[..., None])[..., 0].masked_fill(~masked, -math.inf)
            k, n = s - first, last - first  # this block's k-th of n steps commits its share of the block's tokens
            commit = confidence.topk((hi - lo) * (k + 1) // n - (hi - lo) * k // n, dim=-1).indices
            response.scatter_(1, commit, pred.gather(1, commit))
            yield response.clone()

    def show(self, tok, ids):
        """A response's text up to its end token, each still-masked position shown as MASK_SHOWN."""
        mask_id, stops = tok.special('<|mask|>'), self.stops(tok)
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        text, run = '', []
        for t in ids[:end]:
            if t == mask_id:
                text, run = text + tok.decode(run) + self.MASK_SHOWN, []
            else:
                run.append(t)
        return text + tok.decode(run)

    @torch.no_grad()
    def reply_stream(self, tok, history, temperature=0.7, steps=0, blocks=1, template='', **_):
        """The reply as it is refined, from all masks to none, in `steps` steps (0: one token a step), block by block
        (refine); or, given a template with ___ blanks, the template filled in (fill_stream)."""
        if template:
            yield from self.fill_stream(tok, history, template)
            return
        L = self.config.response_len
        if not 1 <= blocks <= L:
            raise ValueError(f"blocks must be between 1 and the response length, {L}")
        steps = max(steps or L, blocks)  # every block needs a step at least
        for response in self.refine(self.context(tok, history), L, tok.special('<|mask|>'), steps, temperature, blocks):
            yield self.show(tok, response[0].tolist())

    @torch.no_grad()
    def score_replies(self, tok, history, replies, samples=8, seed=0):
        """[(-bound, tokens)] of each reply: the ELBO's upper bound on its NLL (end token and padding included),
        estimated with `samples` mask draws, the mask rates stratified over (0, 1]; every reply gets the same
        draws, so that their ranking doesn't rest on luck."""
        response, lengths = self.responses(tok, replies)
        n, L = response.shape
        g = torch.Generator().manual_seed(seed)
        t = ((torch.arange(samples) + torch.rand(samples, generator=g)) / samples).clamp(min=1e-3)  # (K,)
        masked = (torch.rand(samples, L, generator=g) < t[:, None]).to(response.device)  # (K, L), shared by replies
        x = response[:, None].expand(n, samples, L).masked_fill(masked, tok.special('<|mask|>')).flatten(0, 1)
        context = self.context(tok, history).expand(n * samples, -1)
        logits = self.head(self.hidden(torch.cat([context, x], dim=1))[:, -L:]).float()
        nll = -logits.log_softmax(-1).gather(-1, response.repeat_interleave(samples, 0)[..., None])[..., 0]
        bound = (nll.view(n, samples, L) * masked / t.to(nll.device)[:, None]).sum(-1).mean(1)
        return list(zip((-bound).tolist(), lengths))

    # -- FIB: fill in the blanks of a template, e.g. "I think ___ is ___{2} because ___", with Mask-Predict
    # (Ghazvininejad et al. 2019): predict every blank token, then re-mask the least confident ones, linearly fewer
    # at each iteration, and predict those again. The template's words are never touched.
    BLANK_LENGTHS = (1, 2, 3, 4)  # a bare ___ takes the length of these whose fill the model finds most likely

    def fill_stream(self, tok, history, template, iterations=4):
        """Yield the filled template as Mask-Predict refines it, after choosing each bare blank's length."""
        pieces = parse_template(template)
        check_template(tok, pieces, self.config.response_len - 1)
        chosen = [n for kind, n in pieces if kind == 'blank']
        lengths = [n or self.BLANK_LENGTHS[0] for n in chosen]
        for j in (j for j, n in enumerate(chosen) if n is None):  # in turn, the others as they stand
            tries = [lengths[:j] + [k] + lengths[j + 1:] for k in self.BLANK_LENGTHS]
            tries = [ls for ls in tries if len(template_ids(tok, pieces, ls)[0]) < self.config.response_len] or tries[:1]
            confidence = [self.mask_predict(tok, history, pieces, ls, iterations)[-1][1] for ls in tries]
            lengths = tries[confidence.index(max(confidence))]  # none fits: mask_predict has said why
        for response, _ in self.mask_predict(tok, history, pieces, lengths, iterations):
            yield self.show(tok, response)

    @torch.no_grad()
    def mask_predict(self, tok, history, pieces, lengths, iterations):
        """[(response ids, mean log-prob of the blank tokens)] after each Mask-Predict iteration."""
        ids, free = template_ids(tok, pieces, lengths)
        L, mask_id = self.config.response_len, tok.special('<|mask|>')
        if len(ids) + 1 > L:
            raise ValueError(f"the template takes {len(ids)} tokens with its blanks; a reply has room for {L - 1}")
        response, _ = self.responses(tok, [''])  # its end token, then padding
        response = torch.cat([torch.tensor([ids], device=response.device), response[:, :L - len(ids)]], dim=1)
        free = torch.tensor(free + [False] * (L - len(free)), device=response.device)
        banned = sorted(self.stops(tok) | {mask_id, tok.bos})  # a blank holds words, never an end or a mask
        context, logp, out = self.context(tok, history), torch.zeros(L, dtype=torch.float64, device=free.device), []
        for it in range(iterations):
            masked = response[0] == mask_id
            lp, pred = self.response_logits(context, response, banned)[0].log_softmax(-1).max(-1)
            response[0] = torch.where(masked, pred, response[0])
            logp = torch.where(masked, lp, logp)
            out.append((response[0].tolist(), logp[free].mean().item()))
            n = int(free.sum()) * (iterations - 1 - it) // iterations  # re-mask linearly fewer each iteration
            if n:
                response[0, logp.masked_fill(~free, math.inf).topk(n, largest=False).indices] = mask_id
        return out


def parse_template(template):
    """[('text', str) | ('blank', n or None)] of a template: ___ is a blank of a length the model chooses, ___{n}
    one of n tokens. A blank takes the space before it: 'I think ___' fills as 'I think' + ' pizza'."""
    parts = re.split(r'_{3,}(?:\{(\d+)\})?', template)  # text, blank's {n} or None, text, ...
    pieces = []
    for k, part in enumerate(parts):
        if k % 2:
            if part and len(part) > 18:  # int() of 4,300 digits or more raises; none of it fits a reply anyway
                raise ValueError(f"a blank ___{{{part[:8]}...}} of {len(part)} digits is longer than any reply")
            pieces.append(('blank', int(part) if part else None))
        elif part.rstrip() if k + 1 < len(parts) else part:
            pieces.append(('text', part.rstrip() if k + 1 < len(parts) else part))
    if len(parts) == 1:
        raise ValueError("a template needs at least one blank: ___ (the model picks its length) or ___{n}")
    if any(kind == 'blank' and n == 0 for kind, n in pieces):
        raise ValueError("a blank ___{n} needs n >= 1")
    return pieces


def check_template(tok, pieces, room):
    """A ValueError unless the template's words and blanks (a bare ___ at its shortest, one token) fit in room tokens,
    said before any ids are made: a ___{10**15} would be a MemoryError in template_ids."""
    n = sum(len(tok.encode(text)) if kind == 'text' else text or 1 for kind, text in pieces)
    if n > room:
        raise ValueError(f"the template takes {n} tokens with its blanks; a reply has room for {room}")


def template_ids(tok, pieces, lengths):
    """Token ids of a template with its blanks as <|mask|>s of the given lengths, and which ids are blanks."""
    ids, free, blanks = [], [], iter(lengths)
    for kind, text in pieces:
        new = [tok.special('<|mask|>')] * next(blanks) if kind == 'blank' else tok.encode(text)
        ids += new
        free += [kind == 'blank'] * len(new)
    return ids, free


# -----------------------------------------------------------------------------
# The BERT approximator: a sentence-transformer's sentence vector, approximated from a bag of vocabulary entries
# (words, n-grams, skip-grams: tokenizer.NgramTokenizer) whose vectors the teacher computed offline
# (prepare/approximator.py). DeepSets with attention pooling: phi maps each entry's vector alone, attention pools
# the bag (one learned query per head), rho maps the pool to the teacher's space. phi and the attention logits
# depend on the entry alone, so at inference both are looked up from tables made once (tables()): a sentence costs
# lookups, a softmax, a weighted sum and rho, not a transformer.


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
    dropout: float = 0.0
    mse_weight: float = 1.0    # squared distance to the teacher's raw vector (a dot-product teacher's norm matters)
    cos_weight: float = 1.0    # 1 - cosine to the teacher's vector
    sim_weight: float = 0.0    # squared error of the batch's pairwise cosines against the teacher's (what Spearman ranks)
    teacher: str = ''          # the teacher's name (teacher.py; '' is the packaged all-MiniLM-L6-v2), for consumers

    def __post_init__(self):
        if self.pooling not in ('mean', 'attention', 'self_attention'):
            raise ValueError(f"pooling must be 'mean', 'attention' or 'self_attention', got {self.pooling!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")


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
        self.mix = BagSelfAttention(c) if c.pooling == 'self_attention' else None
        self.query = nn.Linear(c.n_embd, c.n_head) if c.pooling != 'mean' else None  # one query per head: w . phi(e)
        self.rho = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.n_embd, 2 * c.n_embd), nn.GELU(),
                                 nn.Linear(2 * c.n_embd, c.teacher_dim))
        self._tables = self._sums = None  # phi and logits of every entry, for inference; made by tables(), dropped by train()

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
            self._tables = self._sums = None  # the weights are about to change (eval(), train(False), keeps them)
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
        else:
            h, sink_h = self.features(ids)
            if self.mix is not None:  # the sink takes part, as element 0
                mixed = self.mix(torch.cat([sink_h.expand(h.size(0), 1, -1), h], dim=1), F.pad(keep, (1, 0), value=True))
                sink_h, h = mixed[:, :1], mixed[:, 1:]
            logits = None if self.query is None else self.query(h)
            sink_logits = None if self.query is None else self.query(sink_h)
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
        self._sums = self.sum_tables(*self._tables)
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

    def embed_flat(self, ids, offsets):
        """(B, teacher_dim) sentence vectors of bags given flat, ids (n,) >= 0 and each bag's start in offsets (B,), from
        the tables (tables(): attention or mean pooling); equal to embed's up to float rounding, without padding."""
        table, sink = self._sums
        s = F.embedding_bag(ids, table, offsets, mode='sum') + sink
        C = self.config.n_embd
        H = s.size(1) - C
        return self.rho((s[:, :C].view(-1, H, C // H) / s[:, C:, None]).view(-1, C))

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

    EVAL_METRICS = ('cosine', 'spearman')  # what eval_metrics measures; train.py logs their means as val_<name>

    @torch.no_grad()
    def eval_metrics(self, pred, ids, target):
        """{name: value} of a val batch's predictions (forward's output on ids): the mean cosine to the teacher's
        vectors, and the Spearman correlation of the batch's pairwise cosines with the teacher's."""
        pred, target = pred.float(), target.float()
        s, t = (F.normalize(v, dim=-1) for v in (pred, target))
        upper = torch.triu_indices(len(s), len(s), 1, device=s.device)
        pairs = lambda m: m[upper[0], upper[1]]
        return {'cosine': F.cosine_similarity(pred, target, dim=-1).mean().item(),
                'spearman': spearman(pairs(s @ s.t()), pairs(t @ t.t()))}

    configure_optimizers = GPT.configure_optimizers  # AdamW with decayed matrices, as the GPT's

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        return None  # a bag isn't block_size tokens: flops per token mean nothing here

    def device(self):
        return self.sink.device


def spearman(a, b):
    """Spearman's rank correlation of two 1-D tensors: Pearson's of their ranks (ties broken by order)."""
    ranks = lambda x: torch.empty_like(x).scatter_(0, x.argsort(), torch.arange(len(x), dtype=x.dtype, device=x.device))
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()


# model kinds by name: checkpoints record their kind, train/sample/chat build it from here
MODELS = {'gpt': (GPTConfig, GPT), 'chatbert_ed': (ChatBERTConfig, ChatBERTED), 'chatbert_ra': (ChatBERTConfig, ChatBERTRA),
          'chatbert_imr': (ChatBERTConfig, ChatBERTIMR), 'approximator': (ApproximatorConfig, Approximator)}
