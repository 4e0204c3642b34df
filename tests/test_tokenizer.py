"""Tokenizers: BPE and char round trips, special tokens, and the tokenizer info in checkpoints."""
import json

import numpy as np
import pytest
import torch

from tokenizer import SPECIAL_TOKENS, Tokenizer, char_tokenizer, decode_stream

TEXTS = ['hello world', 'Ünïcödé — ça va? 日本語', 'emoji 🙂🚀 and 👩‍👩‍👧', 'digits 1234567890 3.14159',
         'new\nlines\r\n\n  and\ttabs  ', '', "it's <|bos|> not special"]


@pytest.mark.parametrize('text', TEXTS)
def test_bpe_round_trips_any_text(chat_tok, text):
    assert chat_tok.decode(chat_tok.encode(text)) == text


def test_bpe_vocab_is_merges_then_specials(chat_tok):
    assert chat_tok.vocab_size == 300
    assert sorted(chat_tok.specials.values()) == list(range(300 - len(SPECIAL_TOKENS), 300))


def test_bpe_merges_shorten_seen_text(chat_tok):
    text = 'hello, how are you?'
    assert len(chat_tok.encode(text)) < len(text.encode('utf-8'))


@pytest.mark.parametrize('name', SPECIAL_TOKENS)
def test_special_strings_in_text_are_plain_text(chat_tok, name):
    ids = chat_tok.encode(f'a {name} b')
    assert chat_tok.special(name) not in ids and chat_tok.decode(ids) == f'a {name} b'


def test_char_tokenizer_never_encodes_specials():
    tok = char_tokenizer('<|bos|> abc', specials=SPECIAL_TOKENS)
    assert max(tok.encode('<|bos|>')) < len(tok.info['chars'])
    assert tok.decode([tok.bos]) == '<|bos|>'


def test_char_tokenizer_names_unknown_characters():
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the char vocabulary: 'xz'"):
        char_tokenizer('abc').encode('axbz')


def test_tokenizer_info_survives_a_weights_only_checkpoint(chat_tok, tmp_path):
    torch.save({'tokenizer': chat_tok.info}, tmp_path / 'ckpt.pt')
    info = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['tokenizer']
    tok = Tokenizer(info)
    assert info == chat_tok.info
    assert all(tok.encode(t) == chat_tok.encode(t) for t in TEXTS)


def test_tokenizer_save_load_round_trips(chat_tok, tmp_path):
    chat_tok.save(tmp_path / 'tokenizer.json')
    assert Tokenizer.load(tmp_path / 'tokenizer.json').encode(TEXTS[2]) == chat_tok.encode(TEXTS[2])


def test_char_prepare_round_trips_the_text(char_data, text):
    meta = json.loads((char_data / 'meta.json').read_text())
    tok = Tokenizer.load(char_data / 'tokenizer.json')
    train, test, val = (np.fromfile(char_data / f'{s}.bin', dtype=meta['dtype']) for s in ('train', 'test', 'val'))
    assert tok.decode(train) + tok.decode(test) + tok.decode(val) == text  # test is the stretch before nanoGPT's val
    assert len(val) == pytest.approx(0.1 * len(text), abs=1) and len(test) == pytest.approx(0.05 * len(text), abs=1)


def test_char_prepare_vocab_is_the_sorted_char_set(char_data, text):
    tok = Tokenizer.load(char_data / 'tokenizer.json')
    assert tok.info['chars'] == sorted(set(text)) and tok.vocab_size == len(set(text)) + 2
    # the direction tokens a bidirectional model needs come after the characters, never from text
    assert [tok.special('<|forward|>'), tok.special('<|backward|>')] == [len(set(text)), len(set(text)) + 1]


def test_decode_stream_waits_out_split_characters_and_stops(chat_tok):
    ids = chat_tok.encode('hi 🙂 there')
    stop = chat_tok.special('<|user|>')
    pieces = list(decode_stream(chat_tok, ids + [stop] + chat_tok.encode('never'), {stop}))
    assert ''.join(pieces) == 'hi 🙂 there'  # nothing after the stop id
    assert all('\ufffd' not in p for p in pieces)  # the emoji's bytes arrive whole
