"""
Tokenizers for nanolab: one small class over three kinds.
- char: nanoGPT's character-level vocabulary (the sorted set of characters of a text).
- bpe:  a byte-level BPE trained with rustbpe and run with tiktoken, the nanochat way.
- gpt2: OpenAI's GPT-2 encoding through tiktoken (needs one download while online).
A Tokenizer is fully described by its `info` dict, which holds only JSON types, so it is saved as
data/<name>/tokenizer.json and can also ride inside a checkpoint (torch.load(weights_only=True) accepts it).
"""
import base64
import os
import re
import json

import numpy as np
import tiktoken

# reserved now so later projects (chat, masked diffusion, backward LMs) need no vocab change
SPECIAL_TOKENS = ['<|bos|>', '<|user|>', '<|assistant|>', '<|pad|>', '<|mask|>', '<|forward|>', '<|backward|>']

# GPT-4's split pattern, except numbers split into runs of 1-2 digits instead of 1-3 (as nanochat does):
# with a vocab of a few thousand we'd rather not spend merges on the many 3-digit numbers
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""


def _gpt2_encoding():
    try:
        return tiktoken.get_encoding('gpt2')  # tiktoken caches the download, so this works offline afterwards
    except Exception as e:
        raise SystemExit(f"GPT-2's encoding could not be loaded ({type(e).__name__}): it must be downloaded "
                         f"once while online, or use --tokenizer=bpe offline") from None


class Saved:
    """What every tokenizer is: its info dict (JSON types only), saved as JSON and loaded back through its class."""

    def save(self, path):
        with open(path, 'w') as f:
            json.dump(self.info, f)

    @classmethod
    def load(cls, path):
        """The tokenizer saved at path (a prepared data dir's tokenizer.json); one line naming the file if it isn't one
        (truncated, edited by hand, of another kind), for every script that reads prepared data."""
        try:
            with open(path, encoding='utf-8') as f:
                return cls(json.load(f))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            why = ' '.join(f"{type(e).__name__}: {e}".split())[:160]
            raise SystemExit(f"{path} is not a readable tokenizer ({why}); prepare {os.path.dirname(str(path)) or '.'} "
                             f"again, or pass another") from None


class Tokenizer(Saved):

    def __init__(self, info):
        self.info = info
        self.kind = info['kind']
        if self.kind == 'char':
            self.itos = info['chars'] + sorted(info['special'], key=info['special'].get)  # specials after the chars
            self.stoi = {ch: i for i, ch in enumerate(info['chars'])}  # specials deliberately left out: never encoded
            self.specials = dict(info['special'])
            self.vocab_size = len(self.itos)
        elif self.kind == 'bpe':
            ranks = {base64.b64decode(s): i for i, s in enumerate(info['ranks'])}
            self.enc = tiktoken.Encoding('nanolab-bpe', pat_str=info['pattern'], mergeable_ranks=ranks,
                                         special_tokens=info['special'])
            self.specials = dict(info['special'])
            self.vocab_size = self.enc.n_vocab
        elif self.kind == 'gpt2':
            self.enc = _gpt2_encoding()
            self.specials = {'<|bos|>': self.enc.eot_token}  # GPT-2 has one special, <|endoftext|> (50256)
            self.vocab_size = self.enc.n_vocab
        else:
            raise ValueError(f"unknown tokenizer kind {self.kind!r}, expected 'char', 'bpe' or 'gpt2'")

    def encode(self, text):
        if self.kind != 'char':
            return self.enc.encode_ordinary(text)  # ordinary: '<|bos|>' in a text is just text, never the special
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            raise ValueError(f"{len(unknown)} character(s) not in the char vocabulary: {''.join(unknown)!r}") from None

    def decode(self, ids):
        ids = [int(i) for i in ids]  # also takes a tensor or numpy array
        if self.kind == 'char':
            return ''.join(self.itos[i] for i in ids)
        return self.enc.decode(ids)  # invalid utf-8 (e.g. a token cut mid-character) becomes U+FFFD

    def special(self, name):
        return self.specials.get(name)

    def byte_lengths(self):
        """The UTF-8 bytes of each token id's text (0 for special tokens), as an array: for bits per byte."""
        special = set(self.specials.values())
        if self.kind == 'char':
            n = [len(ch.encode('utf-8')) for ch in self.info['chars']]
        else:
            n = [0 if i in special else len(self.enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)]
        return np.array(n + [0] * (self.vocab_size - len(n)), dtype=np.int64)

    @property
    def bos(self):
        return self.special('<|bos|>')

    @property
    def turn_ends(self):
        """The ids that end a reply or a document: BOS and the speaker tokens, those this tokenizer has."""
        return {self.special(s) for s in ('<|bos|>', '<|user|>', '<|assistant|>')} - {None}



def char_tokenizer(text, specials=()):
    chars = sorted(set(text))
    return Tokenizer({'kind': 'char', 'chars': chars, 'special': {s: len(chars) + i for i, s in enumerate(specials)}})


def train_bpe(texts, vocab_size):
    """Train a byte-level BPE on an iterable of strings; vocab_size counts the special tokens too."""
    import rustbpe  # only needed to train, not to use a trained tokenizer
    n_merged = vocab_size - len(SPECIAL_TOKENS)
    if n_merged < 256:
        raise SystemExit(f"a BPE vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + "
                         f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts, n_merged, pattern=SPLIT_PATTERN)
    ranks = sorted(bpe.get_mergeable_ranks(), key=lambda kv: kv[1])
    assert [r for _, r in ranks] == list(range(len(ranks)))  # ranks are ids: a list in rank order is enough
    # base64 because info must hold JSON types only, and token bytes need not be valid utf-8
    info = {'kind': 'bpe', 'pattern': bpe.get_pattern(),
            'ranks': [base64.b64encode(bytes(b)).decode('ascii') for b, _ in ranks],
            'special': {s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)}}  # specials after the merges
    if len(ranks) < n_merged:  # merging stops once every distinct chunk of the text (about a word) is one token
        print(f"note: the BPE has {len(ranks) + len(SPECIAL_TOKENS):,} tokens, not the {vocab_size:,} asked: by then "
              f"every distinct word of the training text is a single token; use a smaller --vocab_size or more text")
    return Tokenizer(info)


def gpt2_tokenizer():
    return Tokenizer({'kind': 'gpt2'})


# -----------------------------------------------------------------------------
# direction: a backward model reads every document right to left, its BOS kept first; a bidirectional model
# reads either way, told which by a <|forward|>/<|backward|> token right after BOS. Data, chat, sampling and
# evaluation all orient token ids through these two functions.

DIRECTIONS = ('forward', 'backward', 'bidirectional')


def reversal_index(tokens, bos):
    """The permutation that reverses each document's tokens and keeps its BOS first:
    tokens[reversal_index(tokens, bos)] turns [BOS a b c BOS d e] into [BOS c b a BOS e d]. Text before the
    first BOS counts as one document. Applying it twice gives back the input."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    starts = np.flatnonzero(tokens == bos) if bos is not None else np.zeros(0, dtype=np.int64)
    pos = np.arange(n)
    doc = np.searchsorted(starts, pos, side='right')  # 0 before the first BOS, d after the d-th
    begin = np.concatenate([[0], starts + 1])[doc]  # where each position's document content begins
    end = np.concatenate([starts, [n]])[doc]  # and ends (exclusive)
    index = begin + end - 1 - pos  # mirrored within its document
    index[starts] = starts  # BOS stays put
    return index


def orient(tokens, tok, backward, marker=False, mask=None):
    """Token ids (and their loss mask) as a model of some direction reads them: each document reversed if
    backward, and with marker=True the direction token right after each document's BOS (at the start of a
    document that has none). Returns an int64 array, or (array, mask) when a mask is given."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if backward:
        index = reversal_index(tokens, tok.bos)
        tokens, mask = tokens[index], (None if mask is None else np.asarray(mask)[index])
    if marker:
        name = '<|backward|>' if backward else '<|forward|>'
        if tok.special(name) is None:
            raise ValueError(f"a bidirectional model needs the {name} token, which this {tok.kind} tokenizer lacks")
        at = np.flatnonzero(tokens == tok.bos) + 1
        if len(tokens) and tokens[0] != tok.bos:
            at = np.concatenate([[0], at])
        tokens = np.insert(tokens, at, tok.special(name))
        mask = None if mask is None else np.insert(np.asarray(mask), at, 0)
    return tokens if mask is None else (tokens, mask)


def reading(model_direction, asked=''):
    """(backward, marker): how a model of model_direction reads, asked '' (its own way; forward for a
    bidirectional model) or 'forward'/'backward' (a bidirectional model reads either, the others only theirs)."""
    if asked not in ('', 'forward', 'backward'):
        raise ValueError(f"a reading direction is 'forward' or 'backward', got {asked!r}")
    if model_direction == 'bidirectional':
        return asked == 'backward', True
    if asked and asked != model_direction:
        raise ValueError(f"this model was trained {model_direction} only; it can't read {asked}")
    return model_direction == 'backward', False


SPEAKERS = ('<|user|>', '<|assistant|>')  # speaker ids 1 and 2 (TurnGPT's speaker embedding); 0 is no one


def speaker_ids(tokens, tok, backward=False):
    """Each token's speaker, as render_conversation lays turns out: 1 through a user's turn, 2 through an
    assistant's (its role token included), 0 outside turns (plain text, BOS, a direction marker). Read forward a
    turn starts at its role token; read backward (orient) it ends at it. BOS and a marker end every turn. The
    data source and the chat prompt both call this, so training and chat agree. Returns a uint8 array."""
    tokens = np.asarray(tokens)
    events = np.zeros(len(tokens), dtype=np.int64)  # k: the k-th speaker's role token; -1: no one from here
    for k, name in enumerate(SPEAKERS, 1):
        if tok.special(name) is not None:
            events[tokens == tok.special(name)] = k
    for name in ('<|bos|>', '<|forward|>', '<|backward|>'):
        if tok.special(name) is not None:
            events[tokens == tok.special(name)] = -1
    if backward:  # the role token that closes a turn comes after it: scan from the end
        events = events[::-1]
    at = np.maximum.accumulate(np.where(events != 0, np.arange(len(events)), -1))  # the latest event so far
    out = np.where(at >= 0, events[at.clip(0)], 0).clip(0).astype(np.uint8)
    return out[::-1].copy() if backward else out


def render_conversation(tok, turns):
    """Token ids of a chat: [bos] then, per turn, the role's special token and the turn's text.
    prepare/chitchat.py and chat.py both call this, so a chat is rendered exactly as in training."""
    if None in (tok.bos, tok.special('<|user|>'), tok.special('<|assistant|>')):
        raise ValueError(f"chat needs <|bos|>, <|user|> and <|assistant|>, which this {tok.kind} tokenizer lacks")
    ids = [tok.bos]
    for role, text in turns:
        assert role in ('user', 'assistant'), f"role must be 'user' or 'assistant', got {role!r}"
        ids.append(tok.special(f'<|{role}|>'))
        ids.extend(tok.encode(text))
    return ids


def render_prompt(tok, turns, max_len, backward=False, marker=False):
    """The prompt for the assistant's next reply, as a model of that direction reads it.
    Forward: the conversation so far, then <|assistant|>; the reply comes after the newest turn.
    Backward: the conversation reversed, ending with the oldest turn's reversed text and its role token; the
    reply comes before the oldest turn, and the model writes it right to left up to its role token.
    Longer than max_len tokens, the prompt loses the turns farthest from the reply first, then, if the nearest
    turn alone is too long, that turn's farthest tokens; <|bos|> (and a bidirectional marker) stays first."""
    head = 2 if marker else 1
    assert max_len >= head + 1, "the prompt needs room for <|bos|> and one more token at least"
    turns = list(turns)

    def render(turns):
        ids = render_conversation(tok, turns) + ([] if backward else [tok.special('<|assistant|>')])
        return orient(ids, tok, backward, marker).tolist()
    ids = render(turns)
    while len(ids) > max_len and len(turns) > 1:
        turns.pop(-1 if backward else 0)  # the turn farthest from the reply
        ids = render(turns)
    if len(ids) > max_len:
        ids = ids[:head] + ids[len(ids) - max_len + head:]
    return ids


def render_rewrite(tok, draft):
    """vibejam's rewrite prompt, as its pairs are laid out (prepare/vibejam.py): the rewrite follows, then <|bos|>."""
    return [tok.bos] + tok.encode(f"Draft:\n{draft}\nRewrite:\n")


def render_context(tok, turns, length):
    """ChatBERT's context: render_prompt's forward prompt cut to length tokens, then left-padded with <|pad|> to
    exactly length (prepare/chatbert.py lays its training pairs out so; a test checks the two agree)."""
    ids = render_prompt(tok, turns, length)
    return [tok.special('<|pad|>')] * (length - len(ids)) + ids


def render_response(tok, text, length):
    """ChatBERT's response: the text's tokens and the <|user|> that ends the turn, cut to length, then right-padded
    with <|pad|>. Also returns how many tokens are not padding."""
    ids = (tok.encode(text) + [tok.special('<|user|>')])[:length]
    return ids + [tok.special('<|pad|>')] * (length - len(ids)), len(ids)


def decode_growing(tok, ids, stop=(), backward=False):
    """Yield the text so far, in reading order, of a stream of generated ids, until a stop id. Forward the text
    grows at its end (decode_stream's pieces added up); backward it grows at its start, each new token coming
    before the ones already written."""
    if not backward:
        text = ''
        for piece in decode_stream(tok, ids, stop):
            text += piece
            yield text
        return
    out = []
    for t in ids:
        if t in stop:
            return
        out.append(t)
        text = tok.decode(out[::-1])
        if not text.startswith('\ufffd'):  # a character whose first bytes are still to come
            yield text


def decode_stream(tok, ids, stop=()):
    """Yield the text of a stream of token ids piece by piece, until a stop id. A BPE token can end
    mid-character (its text alone is U+FFFD): that piece waits for the rest of the character."""
    out, printed = [], 0
    for t in ids:
        if t in stop:
            return
        out.append(t)
        text = tok.decode(out)  # all so far, then the new part: simple, and exact across characters
        if not text.endswith('\ufffd'):
            yield text[printed:]
            printed = len(text)


# -----------------------------------------------------------------------------
# the BERT approximator's tokenizer: a text becomes a bag of vocabulary entries (words, n-grams, skip-grams), each
# with a vector the teacher computed offline (prepare/approximator.py); the student only pools the bag.

WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")  # words (with inner apostrophes: don't, it's) and single symbols
NGRAM_SPECIALS = ['<|unk|>']  # id 0: a character no entry spells (an emoji unseen in training); never dropped


def words(text, max_words=None):
    """The lowercased words and symbols of a text, the first max_words of them."""
    return WORD.findall(text.lower())[:max_words]


class NgramTokenizer(Saved):
    """Longest match over a vocabulary of words, n-grams ('how are you') and skip-grams ('how _ you'). A word-level
    trie finds the longest n-gram at each position; the matches tile the text. A skip-gram w1 _ w3 in the vocabulary
    is added to the bag wherever w1 ? w3 occurs and not inside one matched n-gram, since it adds what the tiling
    misses. A word with no entry backs off to the longest entries that spell it (after its first piece, the
    teacher's WordPiece continuations such as '##ule', where the vocabulary has them), letter runs at worst; a
    character no entry spells becomes <|unk|>. Only the first max_words words count (the teacher truncates too).
        tok = NgramTokenizer({'kind': 'ngram', 'entries': ['how', 'are', 'you', 'how are you', 'how _ you']})
        tok.encode('How are you?')  # [id('how are you'), <|unk|>]: '?' isn't spelled by any entry
    """

    def __init__(self, info):
        self.info, self.kind = info, 'ngram'
        self.entries = NGRAM_SPECIALS + list(info['entries'])
        self.vocab_size = len(self.entries)
        self.max_words = info.get('max_words', 512)
        self.trie, self.skip, self.spell, self.cont = {}, {}, {}, {}  # trie: {word: (id or None, {next word: ...})}
        for i, e in enumerate(self.entries[len(NGRAM_SPECIALS):], len(NGRAM_SPECIALS)):
            if e.startswith('##') and len(e) > 2:  # a WordPiece continuation: a piece of a word, never a word
                self.cont[e[2:]] = i
                continue
            ws = e.split(' ')
            if len(ws) == 3 and ws[1] == '_':
                self.skip[ws[0], ws[2]] = i
                continue
            node = self.trie
            for w in ws[:-1]:
                node = node.setdefault(w, [None, {}])[1]
            node.setdefault(ws[-1], [None, {}])[0] = i
            if len(ws) == 1:
                self.spell[e] = i
        self.spell_len, self.cont_len = (max(map(len, d), default=1) for d in (self.spell, self.cont))

    def special(self, name):
        return self.entries.index(name) if name in NGRAM_SPECIALS else None

    def back_off(self, word):
        """Ids of the longest entries that spell an unknown word, left to right: after its first piece, the teacher's
        WordPiece continuations ('##ule') where the vocabulary has them, as the teacher splits it; other entries
        (letter runs at worst) where none fits; <|unk|> for a character nothing spells."""
        ids, i = [], 0
        while i < len(word):
            found = (i > 0 and self.longest(word, i, self.cont, self.cont_len)) or self.longest(word, i, self.spell, self.spell_len)
            ids.append(found[0] if found else 0)
            i = found[1] if found else i + 1
        return ids

    @staticmethod
    def longest(word, i, pieces, most):
        """(id, end) of the longest of pieces (none longer than most) that word[i:] starts with, or None."""
        for j in range(min(len(word), i + most), i, -1):
            if word[i:j] in pieces:
                return pieces[word[i:j]], j
        return None

    def encode(self, text):
        ws = words(text, self.max_words)
        ids, i, n = [], 0, len(ws)
        ends = []  # (start, end) of each matched n-gram, for the skip-grams
        while i < n:
            node, best, j = self.trie, None, i
            while j < n and ws[j] in node:  # walk the trie as far as the words go, keeping the longest entry
                entry, node = node[ws[j]]
                j += 1
                if entry is not None:
                    best = (entry, j)
            if best is None:
                ids.extend(self.back_off(ws[i]))
                ends.append((i, i + 1))
                i += 1
            else:
                ids.append(best[0])
                ends.append((i, best[1]))
                i = best[1]
        if self.skip:
            inside = {k for s, e in ends if e - s >= 3 for k in range(s, e - 2)}  # skips a trigram already holds
            ids.extend(self.skip[ws[k], ws[k + 2]] for k in range(n - 2) if k not in inside and (ws[k], ws[k + 2]) in self.skip)
        return ids

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        """The entries of a bag, for reading: 'how are you | ?'."""
        return ' | '.join(self.entries[int(i)] for i in ids)

