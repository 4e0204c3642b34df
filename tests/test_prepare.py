"""prepare.text: a text file becomes train/test/val token streams that decode back to the text, in that order."""
import json

import numpy as np

from helpers import run
from tokenizer import Tokenizer


def load_splits(out):
    meta = json.loads((out / 'meta.json').read_text())
    splits = {s: np.fromfile(out / f'{s}.bin', dtype=meta['dtype']) for s in ('train', 'val', 'test')}
    assert all(len(splits[s]) == meta[f'{s}_tokens'] for s in splits)
    return Tokenizer.load(out / 'tokenizer.json'), splits


def test_bpe_prepare_round_trips_the_text(text, tmp_path):
    (tmp_path / 'in.txt').write_text(text, encoding='utf-8')
    proc = run('prepare.text', tmp_path / 'in.txt', '--tokenizer=bpe', '--vocab_size=300', f'--out={tmp_path / "out"}')
    assert proc.returncode == 0, proc.stderr
    tok, splits = load_splits(tmp_path / 'out')
    assert tok.vocab_size == 300 and splits['train'][0] == tok.bos and tok.bos not in splits['val']
    assert tok.bos not in splits['test'] and len(splits['test']) > 0
    assert tok.decode(splits['train'][1:]) + tok.decode(splits['test']) + tok.decode(splits['val']) == text


def test_prepare_missing_file_says_one_line(tmp_path):
    proc = run('prepare.text', tmp_path / 'nope.txt', f'--out={tmp_path / "out"}')
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip() == f"no such file: {tmp_path / 'nope.txt'}; pass a text file or an http(s) URL, " \
                                  f"e.g. ../shared/data/tinyshakespeare.txt"
