"""
ChatBERT: chatting with a bidirectional encoder (model.py's GPT blocks with causal=False), three ways. Each reads a
(context, response) pair laid out by tokenizer.render_context/render_response (prepare/chatbert.py): the context
left-padded to block_size - response_len tokens, the response its tokens, the <|user|> that ends the turn, and
<|pad|>s to response_len. dataloader.PairSource tells the model response_len and the pad id.
    ChatBERT-ED   an encoder over the context and a decoder that writes the response (cross-attention)
    ChatBERT-RA   a bi-encoder: the response retrieved among the training set's (retrieval.ResponsePool)
    ChatBERT-IMR  iterative masked refinement (masked diffusion); the same weights fill in templates (FIB)
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, Block, GPTConfig, KVCache, Norm, sample_next, tempered
from tokenizer import decode_growing, render_context, render_response


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
