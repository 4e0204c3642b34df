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
    (tmp_path / 'bad' / 'a.txt').write_bytes(b'\xff not utf-8 \xff')
    with pytest.raises(SystemExit, match=r"a.txt: not UTF-8 text \(line 1, byte 1: 0xff\)"):  # where, as every text input says
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


# -- rewrite pairs
TEXT = "lol yeah im gonna go\nidk tbh, it's kinda weird!!!\nwe should totally hang out this weekend haha"


def content_overlap(draft, original):
    """The share of the original's content words (lowercased, casual forms neutralized away) that the draft keeps."""
    from prepare.common import NEUTRAL
    words = lambda t: {w.strip('.,!?').lower() for w in t.split()} - set(NEUTRAL) - {''}
    return len(words(draft) & words(original)) / len(words(original))


@pytest.mark.parametrize('noise', [{}, {'word_drop': 0.1}, {'shuffle': 0.3}, {'neutral': 0.0, 'expand': 0.0}])
def test_corruption_is_seeded_changes_the_text_and_keeps_its_content(noise):
    import random
    from prepare.common import corrupt
    a, b = corrupt(TEXT, random.Random(3), **noise), corrupt(TEXT, random.Random(3), **noise)
    assert a == b  # reproducible with a seed
    assert a != TEXT  # the style is gone
    assert content_overlap(a, TEXT) >= 0.6


def test_each_noise_does_its_own_thing():
    import random
    from prepare.common import corrupt
    off = {'neutral': 0.0, 'expand': 0.0, 'normalize': 0.0}
    assert corrupt(TEXT, random.Random(0), **off) == TEXT  # all off: the text as it was
    assert 'going to' in corrupt(TEXT, random.Random(0), **{**off, 'neutral': 1.0})
    assert 'it is' in corrupt(TEXT, random.Random(0), **{**off, 'expand': 1.0})
    normalized = corrupt(TEXT, random.Random(0), **{**off, 'normalize': 1.0}).split('\n')
    assert all(line[0].isupper() and line[-1] in '.!?' for line in normalized) and '!!!' not in ''.join(normalized)
    dropped = corrupt(' '.join(['word'] * 400), random.Random(0), **{**off, 'word_drop': 0.5})
    assert 120 < len(dropped.split()) < 280


def test_a_rendered_pair_masks_the_draft_out_of_the_loss(chat_tok):
    from prepare.vibejam import render_pair
    ids, mask = render_pair(chat_tok, 'Hello there.', 'hey there')
    assert len(ids) == len(mask) and ids[0] == chat_tok.bos
    first = mask.index(1)
    assert chat_tok.decode(ids[:first]).endswith('Draft:\nHello there.\nRewrite:\n')
    assert chat_tok.decode(ids[first:]) == 'hey there' and all(mask[first:])  # the loss is on the rewrite alone


def test_pairs_are_reproducible_and_skip_empty_drafts():
    from prepare.vibejam import make_pairs
    texts = [TEXT, 'haha\nlol', 'short one\nand another line here']
    assert make_pairs(texts, seed=1) == make_pairs(texts, seed=1)
    pairs = make_pairs(texts, seed=1)
    assert pairs and all(d.strip() for d, _ in pairs)
    assert 'haha\nlol' not in [r for _, r in pairs]  # its draft would be empty: nothing to rewrite from


def test_edits_file_is_read_and_bad_lines_say_where(tmp_path):
    from prepare.vibejam import read_edits
    good = tmp_path / 'edits.jsonl'
    good.write_text('{"draft": "Hello.", "rewrite": "hey"}\n\n{"draft": "Thanks a lot.", "rewrite": "thx!!"}\n')
    assert read_edits(str(good)) == [('Hello.', 'hey'), ('Thanks a lot.', 'thx!!')]
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"draft": "ok", "rewrite": "k"}\n{"draft": "no rewrite"}\n')
    with pytest.raises(SystemExit, match='bad.jsonl:2'):
        read_edits(str(bad))


# -- rewrite mode
def test_rewrite_stream_stops_at_the_end_marker(chat_tok, monkeypatch):
    import torch
    from engine import chat_for
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=chat_tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    said = chat_tok.encode('hey you') + [chat_tok.bos] + chat_tok.encode(' and more')
    monkeypatch.setattr(model, 'generate_stream', lambda x, *a, **k: (torch.tensor([[t]]) for t in said))
    bot = chat_for(model, chat_tok)
    assert list(bot.rewrite_stream('Hello.'))[-1] == 'hey you'
    with pytest.raises(ValueError, match='shorten'):
        next(bot.rewrite_stream('word ' * 100))


@pytest.fixture(scope='module')
def rewrite_runs(tmp_path_factory):
    """A tiny char style run on made-up notes, then its rewrite fine-tuning on copy pairs (draft = rewrite)."""
    from helpers import train
    from prepare.vibejam import build, make_pairs, split_documents, write_pairs
    work = tmp_path_factory.mktemp('vibejam')
    docs = {f'n{i}.txt': '\n'.join(f"{w} {i % 7} ok" for w in ('abc', 'bcd', 'cab', 'dab')[i % 4:] + ('ab',)) for i in range(60)}
    tok = build(str(work / 'data' / 'style'), docs, 'char', val_frac=0.2, block_size=16)
    off = {'neutral': 0.0, 'expand': 0.0, 'normalize': 0.0, 'word_drop': 0.0, 'shuffle': 0.0}  # copy: the draft is the text
    train_docs, val_docs = split_documents(docs, 0.2)
    write_pairs(str(work / 'data' / 'pairs'), tok, {'train': make_pairs(train_docs, max_chars=12, **off),
                                                      'val': make_pairs(val_docs, max_chars=12, **off)}, 'tests')
    train(work, work / 'style', '--max_iters=30', '--eval_interval=30', '--block_size=48', dataset='style')
    proc = train(work, work / 'rewrite', '--init_from=style', '--max_iters=150', '--eval_interval=150',
                 '--learning_rate=3e-3', '--warmup_iters=10', '--block_size=48', '--batch_size=16', dataset='pairs')
    return work, proc


def test_a_tiny_model_learns_to_copy_a_drafts_content(rewrite_runs):
    from helpers import read_log
    work, _ = rewrite_runs
    evals = [r for r in read_log(work / 'rewrite') if 'val_loss' in r]
    assert evals[-1]['val_loss'] < 0.5 * evals[0]['val_loss'] and evals[-1]['val_loss'] < 1.0


def test_sample_rewrites_with_a_rewrite_tuned_model_and_refuses_others(rewrite_runs):
    work, _ = rewrite_runs
    proc = run('sample.py', f'--out_dir={work / "style"}', '--rewrite=abc 1 ok', cwd=work)
    assert proc.returncode != 0 and 'never fine-tuned on rewrite pairs' in proc.stderr and 'Traceback' not in proc.stderr
    proc = run('sample.py', f'--out_dir={work / "rewrite"}', '--rewrite=abc 1 ok', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=30', cwd=work)
    assert proc.returncode == 0, proc.stderr
    draft_part, rewrite_part = proc.stdout.split('Rewrite:', 1)
    assert 'abc 1 ok' in draft_part and rewrite_part.strip()  # a rewrite, stopped at the end marker


def test_rewrite_windows_start_at_a_pair_and_pairs_too_long_are_left_out(tmp_path, chat_tok, capsys):
    from dataloader import TokenStream
    from prepare.vibejam import write_pairs
    pairs = [(f'Hello there number {i}.', f'hey there {i}') for i in range(30)]
    long = ('Word ' * 60, 'word ' * 60)
    write_pairs(str(tmp_path), chat_tok, {'train': pairs + [long], 'val': pairs}, 'tests', block_size=64)
    assert 'longer than 64 tokens' in capsys.readouterr().out
    meta = json.loads((tmp_path / 'meta.json').read_text())
    assert meta['windows'] == 'document' and meta['pairs'] == {'train': 30, 'val': 30}  # the long one is out
    src = TokenStream(str(tmp_path), block_size=64, batch_size=64, device='cpu')
    x, y = src.get_batch('train')
    assert (x[:, 0] == chat_tok.bos).all()  # no window starts inside a pair, cut from its draft
    prompt = len(chat_tok.encode('Draft:\n'))
    assert (y[:, :prompt] == -1).all()  # and its first targets are the draft's, out of the loss


# -- projects/vibejam/eval.py, the measurement
def test_test_pieces_are_the_persons_held_out_text_and_reproducible():
    import projects.vibejam.eval as vibejam
    from prepare.common import chitchat_documents, is_val
    pieces = vibejam.test_pieces(40, seed=3)
    assert pieces == vibejam.test_pieces(40, seed=3) and len(pieces) == 40
    docs = chitchat_documents()
    held = '\n'.join(t for cid, t in docs.items() if is_val(cid, vibejam.HELD_OUT))
    assert all(o in held and len(o) <= vibejam.max_chars for o, _ in pieces)  # none from text any model trained on
    assert sum(o != d for o, d in pieces) > 0.8 * len(pieces)  # the drafts lost the style


def test_fluency_is_the_judges_perplexity_per_token(chat_tok):
    import math
    import torch
    import projects.vibejam.eval as vibejam
    from engine import chat_for
    from model import GPT, GPTConfig
    from tokenizer import render_prompt
    torch.manual_seed(0)
    judge = GPT(GPTConfig(vocab_size=chat_tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    texts = ['hey there', 'how are you doing today', 'ok']
    lp = n = 0  # brute force: each text after <|bos|><|assistant|>, then the <|user|> that ends it, token by token
    for text in texts:
        seq = render_prompt(chat_tok, [], 64) + chat_tok.encode(text) + [chat_tok.special('<|user|>')]
        start = len(render_prompt(chat_tok, [], 64))
        for j in range(start, len(seq)):
            logits, _ = judge(torch.tensor([seq[:j]]))
            lp += torch.log_softmax(logits[0, -1], -1)[seq[j]].item()
            n += 1
    assert vibejam.fluency(chat_for(judge, chat_tok), texts, batch=2) == pytest.approx(math.exp(-lp / n), rel=1e-4)


def test_measure_rows_on_constructed_texts():
    import projects.vibejam.eval as vibejam

    class Judge:  # every text equally likely per token: perplexity e
        def score_replies(self, history, replies):
            return [(-float(len(r.split())), len(r.split())) for r in replies]

    class Person:  # the person writes 'lol'
        def predict(self, texts):
            return [int('lol' in t) for t in texts]
    originals, drafts = ['lol that is fun', 'yeah lol ok'], ['That is fun.', 'Yes ok.']
    row = vibejam.measure(originals, drafts, originals, Person(), Judge())
    assert row['chrf'] == pytest.approx(100) and row['style'] == 1.0 and row['copy'] == 0.0 and row['edit'] > 0.2
    assert row['closer'] == 1.0  # every original is closer to itself than its draft was
    row = vibejam.measure(drafts, drafts, originals, Person(), Judge())
    assert row['copy'] == 1.0 and row['edit'] == 0.0 and row['style'] == 0.0 and row['chrf'] < 60 and row['closer'] == 0.0
    assert row['ppl'] == pytest.approx(2.718281828, rel=1e-6) and row['chrf_draft'] == pytest.approx(100)
    layer2 = vibejam.measure(drafts, drafts, None, Person(), Judge())
    assert layer2['chrf'] is None and layer2['closer'] is None  # Layer 2: no original
