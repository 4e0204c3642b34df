"""
Chatting with a model: a conversation in, the reply's text out, for every model kind that chats. The engine knows
the chat format (tokenizer.render_*: a conversation as ids, ids back as text), what each kind does with it, and the
files a kind answers from (ChatBERT-RA's response pool). It knows nothing of how a model computes: it hands the
model ids and takes back ids, logits or vectors (the model files' tensor methods). Nor does it know the terminal or
the web: chat.py and chat_web.py ask it, as do convmetrics.py, train.py's samples and the projects' evaluations.

chat_for(model, tok, ckpt) is the Chat of a model's kind (CHATS); BM25Chat chats with no model at all. Every Chat:
    reply_stream(history, max_new_tokens, temperature, top_k, top_p, backward, marker, **settings)
                                      the reply as it forms: the text so far, in reading order, each time it changes
    reply(history, ...)               the whole reply
    score_replies(history, replies)   [(score, tokens)] of each reply after the history (a likelihood, a bound, a cosine)
    scores                            what score_replies gives: 'likelihood', 'bound' (on the NLL) or 'similarity'
    settings, options(settings)       what reply_stream takes beyond the sampling knobs, and their check
    features                          what more it does: 'candidates' (a retriever's best replies), 'rewrite' (a draft
                                      in the model's style), 'fill' (the blanks of a template)
    prepare()                         what is slow to make (RA's response pool), made before the first reply
history is [(role, text), ...], oldest first.
"""

import math
import re

import torch

from common import MODELS, cannot, check_value, need
from model import sample_next, sequence_logprobs
from retrieval import ResponsePool
from tokenizer import SPEAKERS, decode_growing, render_context, render_prompt, render_response, render_rewrite, speaker_ids


class Chat:
    """What every kind's chat shares: the model, its tokenizer, its checkpoint (None for a model in training or in a
    test), and the check of the settings. A kind that doesn't chat gets this bare one, which cannot_chat refuses."""
    # {name: (type, rule, what it does)}: what reply_stream takes beyond the sampling knobs (chat.py /name, the page's
    # boxes); rule: the interval a number must be in, as a config key's annotation ('[0, 32]'), or None
    settings = {}
    features = ()  # what it does beyond replying and scoring: 'candidates', 'rewrite', 'fill'
    scores = 'likelihood'  # what score_replies gives: 'likelihood', 'bound' (an upper bound on the NLL), 'similarity'

    def __init__(self, model, tok, ckpt=None):
        self.model, self.tok, self.ckpt = model, tok, ckpt

    def options(self, settings):
        """settings {name: value as typed or sent} converted to their types and checked against their rules, for
        reply_stream; or a ValueError that names the setting and says why. chat.py and the web check here, before
        anything is generated, so that no setting can hold a reply for long; a kind adds what needs its tokenizer."""
        unknown = set(settings) - set(self.settings)
        if unknown:
            named = sorted(unknown)[:5] + ([f'and {len(unknown) - 5} more'] if len(unknown) > 5 else [])
            raise ValueError(f"unknown settings {named}; this model takes {sorted(self.settings) or 'none'}")
        out = {}
        for name, value in settings.items():
            kind, rule, what = self.settings[name]
            try:
                out[name] = kind(value)
            except (TypeError, ValueError, OverflowError):  # 'many', 1e400 (inf), a 5,000-digit number
                raise ValueError(f"{name} takes a {kind.__name__}: {what}") from None
            why = rule and check_value(out[name], rule)
            if why:
                raise ValueError(f"{name} must be {why}, got {out[name]!r}: {what}")
        return out

    def prepare(self):
        """What chatting needs that is slow to make (ChatBERT-RA's response pool): made here, once, before the first
        reply, so that no reply waits for it (chat.py and the web call it at start)."""

    def reply(self, history, *args, **kwargs):
        """reply_stream's whole reply: its last text ('' if the model ends its turn at once)."""
        text = ''
        for text in self.reply_stream(history, *args, **kwargs):
            pass
        return text


def cannot_chat(tok, ckpt, name):
    """Why a checkpoint can't chat, in one line ('' if it can): chat.py and the web page ask the same question."""
    if why := cannot(ckpt, 'chat', name):
        return why
    if tok.special('<|user|>') is None or tok.special('<|assistant|>') is None:
        return (f"{name} was not trained on conversations (its tokenizer has no <|user|>/<|assistant|> tokens); "
                f"use sample.py, or train config/quickstart.py")
    formats = set(ckpt.get('formats') or [])  # what its lineage trained on (older checkpoints don't say)
    if 'rewrite' in formats and not formats - {'text', 'rewrite'}:  # vibejam: a style model tuned to rewrite
        return (f"{name} was tuned to rewrite drafts, never on conversations; rewrite with it: python sample.py "
                f"--out_dir={name} --rewrite=\"...\"")
    return ''


# -----------------------------------------------------------------------------
# GPT: the reply grows token by token after the conversation, rendered as in training


class GPTChat(Chat):
    features = ('rewrite',)  # a GPT fine-tuned on rewrite pairs (vibejam) rewrites drafts; the checkpoint says if it was

    @torch.no_grad()
    def reply_stream(self, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95, backward=False, marker=False):
        """Yield the assistant's reply to history as growing text in reading order, ending at a turn token: after
        the newest turn, or, backward, before the oldest one."""
        model, tok = self.model, self.tok
        block, device = model.config.block_size, model.device()
        # room for the reply, but never more than half the block: the history matters too (a longer reply
        # goes on past the block through the KV cache's refill)
        ids = render_prompt(tok, history, block - min(max_new_tokens, block // 2), backward, marker)
        x = torch.tensor(ids, dtype=torch.long, device=device)[None, ...]
        # who says what, for a model with speaker embeddings (the others ignore it): the prompt's speakers as in
        # training, and the reply is the assistant's
        speakers = torch.tensor(speaker_ids(ids, tok, backward).astype('int64'), device=device)[None, ...]
        speakers = torch.cat([speakers, torch.full_like(speakers[:, :1], 1 + SPEAKERS.index('<|assistant|>'))], dim=1)
        sampled = (t.item() for t in model.generate_stream(x, max_new_tokens, temperature, top_k, top_p, speakers=speakers))
        yield from decode_growing(tok, sampled, tok.turn_ends, backward)

    @torch.no_grad()
    def rewrite_stream(self, draft, max_new_tokens=256, temperature=0.7, top_k=50, top_p=0.95):
        """Yield the rewrite of a draft in this model's style (vibejam's rewrite mode) as growing text, ending at the
        end marker, <|bos|>. A model fine-tuned on rewrite pairs (prepare/vibejam.py --pairs) knows the layout."""
        model, tok = self.model, self.tok
        ids = render_rewrite(tok, draft)
        if len(ids) >= model.config.block_size:
            raise ValueError(f"the draft takes {len(ids)} tokens with its prompt; this model reads {model.config.block_size}: shorten it")
        x = torch.tensor(ids, dtype=torch.long, device=model.device())[None, ...]
        sampled = (t.item() for t in model.generate_stream(x, max_new_tokens, temperature, top_k, top_p))
        yield from decode_growing(tok, sampled, {tok.bos})

    @torch.no_grad()
    def score_replies(self, history, replies, marker=False):
        """[(log-likelihood, tokens)] of each reply after the history and <|assistant|>, with the turn token that
        ends it (the next <|user|>, as render_conversation puts it: a model must also know when its reply is done).
        Read forward; marker=True for a bidirectional model, which reads forward behind <|forward|>.
        One batch: all replies share one prompt, the history cut (whole turns first) to fit the block with the
        longest reply. A reply longer than half the block is scored on its first half block of tokens, as
        reply_stream leaves the history at least half the block."""
        tok, block = self.tok, self.model.config.block_size
        end = tok.special('<|user|>')
        targets = [(tok.encode(r) + [end])[:block // 2] for r in replies]
        prompt = render_prompt(tok, history, block + 1 - max(map(len, targets)), marker=marker)  # +1: the last token is no input
        seqs = [prompt + t for t in targets]
        speakers = [speaker_ids(seq, tok) for seq in seqs]  # for a model with speaker embeddings
        logps = sequence_logprobs(self.model, seqs, [len(prompt)] * len(seqs), speakers)
        return [(lp, len(t)) for lp, t in zip(logps, targets)]


# -----------------------------------------------------------------------------
# ChatBERT (model_chatbert.py): the conversation as the context it reads, replies as response rows


class ChatBERTChat(Chat):
    """What the three ChatBERT kinds share: the context and response of a chat turn as ids."""

    def __init__(self, model, tok, ckpt=None):
        super().__init__(model, tok, ckpt)
        self.stops = tok.turn_ends | {tok.special('<|pad|>')}  # the ids a reply ends at: a turn token, or padding

    def context(self, history):
        """(1, block_size - response_len): the history as the encoder reads it, left-padded."""
        c = self.model.config
        return torch.tensor([render_context(self.tok, history, c.block_size - c.response_len)], dtype=torch.long,
                            device=self.model.device())

    def responses(self, texts):
        """(B, response_len) and each one's length without padding."""
        rows = [render_response(self.tok, t, self.model.config.response_len) for t in texts]
        return (torch.tensor([r for r, _ in rows], dtype=torch.long, device=self.model.device()), [n for _, n in rows])


class EDChat(ChatBERTChat):

    @torch.no_grad()
    def reply_stream(self, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95, backward=False, marker=False):
        """The reply token by token, as the decoder writes it (ChatBERTED.reply_tokens: the context encoded once)."""
        tokens = self.model.reply_tokens(self.context(history), max_new_tokens, temperature, top_k, top_p)
        yield from decode_growing(self.tok, (t.item() for t in tokens), self.stops)

    @torch.no_grad()
    def score_replies(self, history, replies):
        """[(log-likelihood, tokens)] of each reply and its end token (cut to response_len)."""
        response, lengths = self.responses(replies)
        logits, targets = self.model.teacher_forced(self.context(history).expand(len(replies), -1), response)
        logp = logits.float().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return list(zip((logp * (targets >= 0)).sum(1).tolist(), lengths))


class RAChat(ChatBERTChat):
    """ChatBERT-RA answers with a response of the training set's: the pool (retrieval.ResponsePool) beside its
    checkpoint, embedded from the run's training responses the first time."""
    features = ('candidates',)
    scores = 'similarity'
    pool = None  # the responses to choose from: made by prepare() or at the first reply (or given: a test's few)

    def response_pool(self):
        if self.pool is None:
            if not (self.ckpt or {}).get('path'):
                raise ValueError("ChatBERT-RA answers from the response pool of a saved checkpoint (engine.chat_for "
                                 "finds it beside the checkpoint); chat with python chat.py --out_dir=<run>")
            self.pool = ResponsePool.for_checkpoint(self.model, self.tok, self.ckpt, self.stops)
        return self.pool

    def prepare(self):
        self.response_pool()  # embedding every training response takes minutes the first time: before any reply

    @torch.no_grad()
    def candidates(self, history, k):
        """The k best responses of the pool for history, [(cosine, text)], best first."""
        pool = self.response_pool()
        scores, ids = pool.search(self.model.encode(self.context(history)), min(k, len(pool.texts)))
        return [(s, pool.texts[i]) for s, i in zip(scores[0].tolist(), ids[0].tolist())]

    @torch.no_grad()
    def reply_stream(self, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95, backward=False, marker=False):
        """The best response (temperature 0), or one sampled among the top_k (0: all) by softmax(scale x cosine /
        temperature)."""
        found = self.candidates(history, top_k or len(self.response_pool().texts))
        logits = self.model.scale().float() * torch.tensor([[s for s, _ in found]])
        yield found[sample_next(logits, temperature).item()][1]

    @torch.no_grad()
    def score_replies(self, history, replies):
        """[(scaled cosine, 1)] of each reply with the history: a ranking, not a likelihood."""
        r, _ = self.responses(replies)
        sims = self.model.scale() * (self.model.encode(r) @ self.model.encode(self.context(history))[0])
        return [(s, 1) for s in sims.tolist()]


class IMRChat(ChatBERTChat):
    """ChatBERT-IMR's reply fills in from all masks (ChatBERTIMR.refine), shown as it does; given a template, the
    template's blanks are filled instead (FIB)."""
    features = ('fill',)
    scores = 'bound'
    MASK_SHOWN = '░'  # how a still-masked position looks in a reply that is filling in

    def __init__(self, model, tok, ckpt=None):
        super().__init__(model, tok, ckpt)
        L = model.config.response_len  # a reply's tokens: more steps or blocks than that would commit nothing
        self.settings = {'steps': (int, f'[0, {L}]', f"refinement steps; 0 or {L}: one token a step"),
                         'blocks': (int, f'[1, {L}]', "semi-autoregressive blocks, filled left to right; 1: the whole reply at once"),
                         'template': (str, None, "a reply with ___ blanks to fill (FIB), e.g. I think ___ is ___{2}; none: free replies")}

    def options(self, settings):
        out = super().options(settings)
        if out.get('template'):
            try:
                check_template(self.tok, parse_template(out['template']), self.model.config.response_len - 1)
            except ValueError as e:
                raise ValueError(f"template: {e}") from None
        return out

    def show(self, ids):
        """A response's text up to its end token, each still-masked position shown as MASK_SHOWN."""
        tok, mask_id = self.tok, self.tok.special('<|mask|>')
        end = next((i for i, t in enumerate(ids) if t in self.stops), len(ids))
        text, run = '', []
        for t in ids[:end]:
            if t == mask_id:
                text, run = text + tok.decode(run) + self.MASK_SHOWN, []
            else:
                run.append(t)
        return text + tok.decode(run)

    @torch.no_grad()
    def reply_stream(self, history, max_new_tokens=128, temperature=0.7, top_k=50, top_p=0.95, backward=False, marker=False,
                     steps=0, blocks=1, template=''):
        """The reply as it is refined, from all masks to none, in `steps` steps (0: one token a step), block by block
        (refine); or, given a template with ___ blanks, the template filled in (fill_stream)."""
        if template:
            yield from self.fill_stream(history, template)
            return
        L = self.model.config.response_len
        if not 1 <= blocks <= L:
            raise ValueError(f"blocks must be between 1 and the response length, {L}")
        steps = max(steps or L, blocks)  # every block needs a step at least
        for response in self.model.refine(self.context(history), L, self.tok.special('<|mask|>'), steps, temperature, blocks):
            yield self.show(response[0].tolist())

    @torch.no_grad()
    def score_replies(self, history, replies, samples=8, seed=0):
        """[(-bound, tokens)] of each reply: the ELBO's upper bound on its NLL (ChatBERTIMR.nll_bound), the same mask
        draws for every reply."""
        response, lengths = self.responses(replies)
        bound = self.model.nll_bound(self.context(history), response, self.tok.special('<|mask|>'), samples, seed)
        return list(zip((-bound).tolist(), lengths))

    # -- FIB: fill in the blanks of a template, e.g. "I think ___ is ___{2} because ___", with Mask-Predict
    # (Ghazvininejad et al. 2019): predict every blank token, then re-mask the least confident ones, linearly fewer
    # at each iteration, and predict those again. The template's words are never touched.
    BLANK_LENGTHS = (1, 2, 3, 4)  # a bare ___ takes the length of these whose fill the model finds most likely

    def fill_stream(self, history, template, iterations=4):
        """Yield the filled template as Mask-Predict refines it, after choosing each bare blank's length."""
        tok, L = self.tok, self.model.config.response_len
        pieces = parse_template(template)
        check_template(tok, pieces, L - 1)
        chosen = [n for kind, n in pieces if kind == 'blank']
        lengths = [n or self.BLANK_LENGTHS[0] for n in chosen]
        for j in (j for j, n in enumerate(chosen) if n is None):  # in turn, the others as they stand
            tries = [lengths[:j] + [k] + lengths[j + 1:] for k in self.BLANK_LENGTHS]
            tries = [ls for ls in tries if len(template_ids(tok, pieces, ls)[0]) < L] or tries[:1]
            confidence = [self.mask_predict(history, pieces, ls, iterations)[-1][1] for ls in tries]
            lengths = tries[confidence.index(max(confidence))]  # none fits: mask_predict has said why
        for response, _ in self.mask_predict(history, pieces, lengths, iterations):
            yield self.show(response)

    @torch.no_grad()
    def mask_predict(self, history, pieces, lengths, iterations):
        """[(response ids, mean log-prob of the blank tokens)] after each Mask-Predict iteration."""
        tok = self.tok
        ids, free = template_ids(tok, pieces, lengths)
        L, mask_id = self.model.config.response_len, tok.special('<|mask|>')
        if len(ids) + 1 > L:
            raise ValueError(f"the template takes {len(ids)} tokens with its blanks; a reply has room for {L - 1}")
        response, _ = self.responses([''])  # its end token, then padding
        response = torch.cat([torch.tensor([ids], device=response.device), response[:, :L - len(ids)]], dim=1)
        free = torch.tensor(free + [False] * (L - len(free)), device=response.device)
        banned = sorted(self.stops | {mask_id, tok.bos})  # a blank holds words, never an end or a mask
        context, logp, out = self.context(history), torch.zeros(L, dtype=torch.float64, device=free.device), []
        for it in range(iterations):
            masked = response[0] == mask_id
            lp, pred = self.model.response_logits(context, response, banned)[0].log_softmax(-1).max(-1)
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
# chatting with no model: BM25 over the training conversations


class BM25Chat(Chat):
    """Replies by lexical retrieval over conversations [[(role, text), ...], ...]: each turn is a query, the turn
    after it the reply it got; a message gets the reply of the turn most like it (BM25 by bm25s, English stopwords
    out). No model and no tokenizer: chat.py --demo, and the lexical baseline of projects/chatbert/eval.py's table."""
    features = ('candidates',)

    def __init__(self, conversations):
        super().__init__(None, None)
        # not the core's: ChatBERT's lexical baseline, and chat.py --demo's
        self.bm25s = bm25s = need('bm25s', 'projects/chatbert/requirements.txt')
        queries, self.replies = [], []
        for turns in conversations:
            for (_, said), (_, answer) in zip(turns, turns[1:]):
                if said.strip() and answer.strip():
                    queries.append(said)
                    self.replies.append(answer)
        self.retriever = bm25s.BM25()
        self.retriever.index(self.tokenize(queries), show_progress=False)

    def tokenize(self, texts):
        return self.bm25s.tokenize(texts, stopwords='en', show_progress=False)

    def candidates(self, history, k):
        """[(BM25 score, reply)] of the k turns most like the history's last message, best first."""
        k = min(k, len(self.replies))
        found = self.retriever.retrieve(self.tokenize([history[-1][1] if history else '']), k=k, show_progress=False)
        return [(float(s), self.replies[i]) for i, s in zip(found.documents[0], found.scores[0])]

    def reply_stream(self, history, max_new_tokens=None, temperature=0.0, top_k=50, top_p=None, backward=False, marker=False):
        """The best match's reply (temperature 0), or one sampled among the top_k (0: all) by softmax(score / temperature)."""
        found = self.candidates(history, top_k or len(self.replies))
        yield found[sample_next(torch.tensor([[s for s, _ in found]]), temperature).item()][1]


# -----------------------------------------------------------------------------
# each kind's Chat, and the samples train.py writes into its log

CHATS = {'gpt': GPTChat, 'chatbert_ed': EDChat, 'chatbert_ra': RAChat, 'chatbert_imr': IMRChat}  # by common.MODELS' kinds


def chat_for(model, tok, ckpt=None):
    """The Chat of the model's kind, with its tokenizer and, if it was loaded from one, its checkpoint (what a kind
    answers from lives beside it: ChatBERT-RA's response pool). A kind that doesn't chat gets the bare Chat."""
    kind = next((k for k, (_, cls) in MODELS.items() if type(model) is cls), None)
    return CHATS.get(kind, Chat)(model, tok, ckpt)


@torch.no_grad()
def sample_replies(model, tok, prompts, device, max_new_tokens=32):
    """[(prompt, greedy reply)] for a model being trained (train.py's sample_prompts): each prompt is a user's
    first message, or, for a tokenizer without chat tokens, the opening of a text."""
    was_training = model.training
    model.eval()
    out = []
    for p in prompts:
        if tok.special('<|user|>') is not None and tok.special('<|assistant|>') is not None:
            text = chat_for(model, tok).reply([('user', p)], max_new_tokens, 0, None, None)
        else:
            x = torch.tensor([([tok.bos] if tok.bos is not None else []) + tok.encode(p)], device=device)
            text = tok.decode(model.generate(x[:, -model.config.block_size:], max_new_tokens, temperature=0)[0, x.size(1):].tolist())
        out.append((p, text))
    model.train(was_training)
    return out
