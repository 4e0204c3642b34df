"""
ChatBERT: chatting with a bidirectional encoder (model.py's GPT blocks with causal=False), three ways. Each reads a
(context, response) pair laid out by tokenizer.render_context/render_response (prepare/chatbert.py): the context
left-padded to block_size - response_len tokens, the response its tokens, the <|user|> that ends the turn, and
<|pad|>s to response_len. dataloader.PairSource tells the model response_len and the pad id.
    ChatBERT-ED   an encoder over the context and a decoder that writes the response (cross-attention)
    ChatBERT-RA   a bi-encoder: the response retrieved among the training set's (engine.RAChat holds the pool)
    ChatBERT-IMR  iterative masked refinement (masked diffusion); the same weights fill in templates (FIB)
Ids in, ids, logits or vectors out, as in every model file: engine.py renders a conversation as a context and reads
the reply back (EDChat, RAChat, IMRChat).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, Block, GPTConfig, KVCache, Norm, sample_next, tempered


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
    """What the three kinds share: they answer a conversation (engine.py renders it as their context and responses)."""
    can = ('chat',)  # they answer a conversation: no text to continue, and they read it both ways
    usage = "chat with it: python chat.py --out_dir={out_dir}"


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
    def reply_tokens(self, context, max_new_tokens, temperature=1.0, top_k=None, top_p=None):
        """Yield (B, 1) reply tokens after the context (B, S), response_len at most: the context encoded once, each
        decoder block's self-attention keys and values cached as the reply grows (see KVCache), the
        cross-attention's computed once by encode. The decoder starts from the context's last token, <|assistant|>."""
        kv, mask = self.encode(context)
        cache = KVCache(self.config.n_layer, self.config.response_len)
        x = context[:, -1:]
        for _ in range(min(max_new_tokens, self.config.response_len)):
            x = sample_next(self.decode(x, kv, mask, cache)[:, -1], temperature, top_k, top_p)
            yield x


# -- ChatBERT-RA: a bi-encoder. The same encoder embeds contexts and responses (the mean of its outputs over the
# tokens that aren't padding, unit length); trained with in-batch negatives, each context's true response against
# the batch's others, both ways (CLIP's loss), at a learned temperature. It answers with a response of the
# training set's (engine.RAChat: a Faiss index beside the checkpoint, retrieval.ResponsePool).

class ChatBERTRA(ChatBERT):

    def __init__(self, config):
        super().__init__(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # 1/temperature, learned; CLIP starts at 1/0.07

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



# -- ChatBERT-IMR: iterative masked refinement (masked diffusion, as in MDLM and LLaDA). [context; response] read
# both ways. Training (dataloader.MaskedPairs) masks each response token with probability t ~ U(eps, 1) and weights the
# loss on the masked tokens by 1/t: the continuous-time ELBO, an upper bound on the response's NLL. Sampling starts
# from an all-mask response and commits the most confident predictions step by step (LLaDA's low-confidence
# remasking). The same weights fill in the blanks of a template (FIB, Mask-Predict: engine.IMRChat).

class ChatBERTIMR(ChatBERT):

    def forward(self, idx, targets=None, weights=None):
        """weights (B, T): each target's weight, 1/(t B L) on a masked response token (dataloader.MaskedPairs), so the
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

    @torch.no_grad()
    def nll_bound(self, context, response, mask_id, samples=8, seed=0):
        """(B,) the ELBO's upper bound on the NLL of each response (B, L) after the context (1, S), end token and
        padding included, estimated with `samples` mask draws, the mask rates stratified over (0, 1]; every response
        gets the same draws, so that their ranking doesn't rest on luck."""
        n, L = response.shape
        g = torch.Generator().manual_seed(seed)
        t = ((torch.arange(samples) + torch.rand(samples, generator=g)) / samples).clamp(min=1e-3)  # (K,)
        masked = (torch.rand(samples, L, generator=g) < t[:, None]).to(response.device)  # (K, L), shared by responses
        x = response[:, None].expand(n, samples, L).masked_fill(masked, mask_id).flatten(0, 1)
        logits = self.head(self.hidden(torch.cat([context.expand(n * samples, -1), x], dim=1))[:, -L:]).float()
        nll = -logits.log_softmax(-1).gather(-1, response.repeat_interleave(samples, 0)[..., None])[..., 0]
        return (nll.view(n, samples, L) * masked / t.to(nll.device)[:, None]).sum(-1).mean(1)
