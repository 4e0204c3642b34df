"""vibejam's personal corpus: documents joined by the separator, split by document, and clear errors."""
import json

import numpy as np
import pytest

from helpers import run
from prepare.vibejam import build, folder_documents, split_documents
from tokenizer import Tokenizer

DOCS = {f'note{i}.md': f"hey, this is note {i}.\nlol same as always {i * 7}" * 3 for i in range(40)}


def read_split(out, split):
    meta = json.loads((out / 'meta.json').read_text())
    return np.fromfile(out / f'{split}.bin', dtype=meta['dtype']), Tokenizer.load(str(out / 'tokenizer.json'))


@pytest.mark.parametrize('kind', ['char', 'bpe'])
def test_documents_are_joined_by_the_separator_and_split_whole(tmp_path, kind):
    out = tmp_path / kind
    build(str(out), DOCS, kind, vocab_size=300, val_frac=0.2, block_size=16)
    texts = {}
    for split in ('train', 'val'):
        ids, tok = read_split(out, split)
        assert ids[0] == tok.bos
        starts = list(np.flatnonzero(ids == tok.bos)) + [len(ids)]
        texts[split] = [tok.decode(ids[a + 1:b]) for a, b in zip(starts, starts[1:])]  # each document after its <|bos|>
    assert sorted(texts['train'] + texts['val']) == sorted(DOCS.values())  # every document once, whole
    assert texts['val'] and texts['train'] and not set(texts['train']) & set(texts['val'])


def test_the_split_is_deterministic_and_by_document_name():
    a, b = split_documents(DOCS, 0.2), split_documents(dict(reversed(list(DOCS.items()))), 0.2)
    assert a == b  # the same documents whatever order they are read in
    assert len(a[1]) >= 1 and len(a[0]) + len(a[1]) == len(DOCS)


def test_a_corpus_too_small_for_the_block_says_so(tmp_path):
    with pytest.raises(SystemExit, match='fewer than block_size'):
        build(str(tmp_path / 'small'), {'a.txt': 'hi there', 'b.txt': 'hello you'}, 'char', val_frac=0.5, block_size=256)
    assert not (tmp_path / 'small' / 'train.bin').exists()  # nothing written


def test_one_document_cannot_be_split(tmp_path):
    with pytest.raises(SystemExit, match="can't be split"):
        split_documents({'only.txt': 'just one'}, 0.1)


def test_folder_errors_are_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match='no folder'):
        folder_documents(str(tmp_path / 'missing'))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'image.png').write_bytes(b'\x89PNG')
    with pytest.raises(SystemExit, match='no .txt or .md'):
        folder_documents(str(tmp_path / 'empty'))
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'a.txt').write_bytes(b'\xff\xfe not utf-8 \xff')
    with pytest.raises(SystemExit, match="can't read"):
        folder_documents(str(tmp_path / 'bad'))


def test_folder_documents_are_read_recursively(tmp_path):
    (tmp_path / 'raw' / 'sub').mkdir(parents=True)
    (tmp_path / 'raw' / 'a.txt').write_text('first doc')
    (tmp_path / 'raw' / 'sub' / 'b.md').write_text('# second doc')
    (tmp_path / 'raw' / 'skip.csv').write_text('not,text')
    assert folder_documents(str(tmp_path / 'raw')) == {'a.txt': 'first doc', 'sub/b.md': '# second doc'}


def test_cli_on_an_empty_folder_says_one_line(tmp_path):
    (tmp_path / 'raw').mkdir()
    proc = run('prepare.vibejam', f'--folder={tmp_path / "raw"}', f'--out={tmp_path / "out"}')
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr and 'no .txt or .md' in proc.stderr
