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
    build(str(out), DOCS, kind, vocab_size=300, block_size=16)
    texts = {}
    for split in ('train', 'val'):
        ids, tok = read_split(out, split)
        assert ids[0] == tok.bos
        starts = list(np.flatnonzero(ids == tok.bos)) + [len(ids)]
        texts[split] = [tok.decode(ids[a + 1:b]) for a, b in zip(starts, starts[1:])]  # each document after its <|bos|>
    test = split_documents(DOCS)['test']
    assert test  # 40 names: some hash to test; they are in no file
    assert sorted(texts['train'] + texts['val'] + test) == sorted(DOCS.values())  # every document once, whole
    assert texts['val'] and texts['train'] and not set(texts['train']) & set(texts['val'])


def test_the_split_is_splits_py_by_document_name():
    from splits import split_of
    a, b = split_documents(DOCS), split_documents(dict(reversed(list(DOCS.items()))))
    assert a == b  # the same documents whatever order they are read in
    assert sum(map(len, a.values())) == len(DOCS)
    assert a['test'] == [DOCS[n] for n in sorted(DOCS) if split_of(n) == 'test']
    assert sorted(a['train'] + a['val']) == sorted(DOCS[n] for n in DOCS if split_of(n) != 'test')
    assert all(split_of(n) != 'train' for n in DOCS if DOCS[n] in a['val']) or len(a['val']) == 1  # val by hash, or one


def test_a_tiny_folder_still_gets_a_val_document():
    docs = {f'{i}.txt': f'text {i}' for i in range(3)}
    parts = split_documents(docs)
    assert parts['val'] and parts['train'] and sum(map(len, parts.values())) == 3


def test_a_corpus_too_small_for_the_block_says_so(tmp_path):
    with pytest.raises(SystemExit, match='fewer than block_size'):
        build(str(tmp_path / 'small'), {'a.txt': 'hi there', 'b.txt': 'hello you'}, 'char', block_size=256)
    assert not (tmp_path / 'small' / 'train.bin').exists()  # nothing written


def test_one_document_cannot_be_split(tmp_path):
    with pytest.raises(SystemExit, match="can't be split"):
        split_documents({'only.txt': 'just one'})


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
    docs = {f'n{i}.txt': '\n'.join(f"{w} {i % 7} ok" for w in ('abc', 'bcd', 'cab', 'dab')[i % 4:] + ('ab',)) for i in range(200)}  # 200: val, 5% by hash, fills a block
    tok = build(str(work / 'data' / 'style'), docs, 'char', block_size=16)
    off = {'neutral': 0.0, 'expand': 0.0, 'normalize': 0.0, 'word_drop': 0.0, 'shuffle': 0.0}  # copy: the draft is the text
    parts = split_documents(docs)
    write_pairs(str(work / 'data' / 'pairs'), tok, {'train': make_pairs(parts['train'], max_chars=12, **off),
                                                      'val': make_pairs(parts['val'], max_chars=12, **off)}, 'tests')
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


# -- the people and the split of their text: prepare.vibejam's data against projects/vibejam/eval.py's test pieces
def test_senders_are_the_three_most_prolific():
    from prepare.common import SENDER, SENDERS, prolific_senders
    assert prolific_senders(3) == SENDERS and SENDER == SENDERS[0]


@pytest.fixture(scope='module')
def chitchat_texts():
    import projects.vibejam.eval as vibejam
    return vibejam.sender_texts()


@pytest.mark.parametrize('person', [0, 1, 2])
def test_no_test_piece_is_in_the_style_data_or_the_pairs(tmp_path, chitchat_texts, person):
    import projects.vibejam.eval as vibejam
    from prepare.common import SENDERS, chitchat_documents
    from prepare.vibejam import make_pairs
    from splits import split_of
    sender = SENDERS[person]
    pieces = vibejam.person_pieces(chitchat_texts, sender, 10 ** 9, 3)
    assert pieces['test'] == vibejam.person_pieces(chitchat_texts, sender, 10 ** 9, 3)['test']  # reproducible
    docs = chitchat_documents(sender)
    test_text = '\n'.join(t for cid, t in docs.items() if split_of(cid) == 'test')
    assert all(o in test_text and len(o) <= vibejam.max_chars for o, _ in pieces['test'])  # the person's test text
    assert sum(o != d for o, d in pieces['test']) > 0.8 * len(pieces['test'])  # the drafts lost the style
    # what the style model and the rewrite pairs are made of: the written files, decoded, and the pairs
    build(str(tmp_path / 'style'), docs, 'char', block_size=256)
    seen = [read_split(tmp_path / 'style', split) for split in ('train', 'val')]
    seen = [tok.decode([i for i in ids if i != tok.bos]) for ids, tok in seen]
    parts = split_documents(docs)
    seen += [d + '\n' + r for split in ('train', 'val') for d, r in make_pairs(parts[split], seed=0)]
    seen = '\n'.join(seen)
    # a short message ("yeah", "how are you?") recurs in any large text: pieces of a few words are too common to tell
    long = [o for o, _ in pieces['test'] if len(o) >= 40]
    assert len(long) > 50 and not [o for o in long if o in seen]
    assert not [o for o, _ in pieces['val'] if len(o) >= 40 and o in test_text]  # val pieces aren't test text either


# -- the rules a rewrite model must beat, the features, the style classifiers
def test_strip_periods_takes_one_final_period_a_line():
    import projects.vibejam.eval as vibejam
    assert vibejam.strip_periods("Yes.\nI know...\nok.\nWhat?\nDr. Who is here.") == "Yes\nI know...\nok\nWhat?\nDr. Who is here"


def test_the_inverse_rule_undoes_what_the_person_does_more_often():
    import random
    import projects.vibejam.eval as vibejam
    from prepare.common import corrupt
    train = "yeah im gonna go\ndont know lol\ni'm here\nyeah that's it\nyes one\nthat's fine\ni'm tired"
    fitted = vibejam.fit_inverse(train)
    swaps = dict(fitted['swaps'])
    assert swaps['yes'] == 'yeah' and swaps['going to'] == 'gonna' and swaps["don't"] == 'dont'
    assert swaps['I am'] == "I'm" and swaps['that is'] == "that's"  # contractions back, "I" in capitals
    assert 'okay' not in swaps  # never written either way: left alone
    assert fitted['lower'] and fitted['strip']
    draft = corrupt("yeah im gonna go\nthat's it", random.Random(0), word_drop=0.0, shuffle=0.0)
    assert draft == "Yes I'm going to go.\nThat is it."
    assert vibejam.inverse(draft, fitted) == "yeah I'm gonna go\nthat's it"
    formal = vibejam.fit_inverse("Yes, I am here.\nThat is fine.\nYes.")
    assert formal['swaps'] == [] and not formal['lower'] and not formal['strip']
    assert vibejam.inverse("Yes.\nME TOO.", formal) == "Yes.\nME TOO."  # a formal writer's rule changes nothing


def test_features_of_constructed_texts():
    import projects.vibejam.eval as vibejam
    f = vibejam.features("haha I don't know.\nthat's fine lol\nOk.")
    assert f['final_period'] == pytest.approx(2 / 3) and f['lower_start'] == pytest.approx(2 / 3)
    assert f['contractions'] == pytest.approx(100 * 2 / 8) and f['laughs'] == pytest.approx(100 * 2 / 8)  # 8 words
    assert f['chars_per_line'] == pytest.approx((18 + 15 + 3) / 3)
    g = vibejam.features("Hahaha.\nLMAO\nhello")
    assert g['laughs'] == pytest.approx(100 * 2 / 3) and g['contractions'] == 0 and g['lower_start'] == pytest.approx(1 / 3)


def test_the_blind_classifier_cannot_see_case_or_final_punctuation():
    import projects.vibejam.eval as vibejam
    assert vibejam.blind("Yes. I Know!\nWhat?") == vibejam.blind("yes i know\nwhat") == "yes i know\nwhat"


def test_calibration_of_a_known_classifier():
    import projects.vibejam.eval as vibejam

    class Coin:  # says 0.8 for texts with 'x', 0.2 otherwise
        def predict_proba(self, xs):
            p = np.array([0.8 if 'x' in t else 0.2 for t in xs])
            return np.stack([1 - p, p], 1)
    xs, ys = ['x'] * 10 + ['y'] * 10, [1] * 8 + [0] * 2 + [1] * 2 + [0] * 8  # calibrated: 80% and 20% are the person
    c = vibejam.calibration(Coin(), xs, ys)
    assert c['accuracy'] == pytest.approx(0.8) and c['brier'] == pytest.approx(0.16)
    assert [(b['n'], b['predicted'], b['observed']) for b in c['reliability']] == [(10, 0.2, 0.2), (10, 0.8, 0.8)]


def test_scores_on_constructed_texts():
    import projects.vibejam.eval as vibejam

    class Person:  # the person writes 'lol'
        def predict(self, texts):
            return [int('lol' in t) for t in texts]
    originals, drafts = ['lol that is fun', 'yeah lol ok'], ['That is fun.', 'Yes ok.']
    row = vibejam.scores(originals, drafts, originals, {'raw': Person()})
    assert row['chrf'] == pytest.approx([100, 100]) and list(row['closer']) == [1, 1] and list(row['style_raw']) == [1, 1]
    row = vibejam.scores(drafts, drafts, originals, {'raw': Person()})
    assert (row['chrf'] < 60).all() and list(row['closer']) == [0, 0] and list(row['final_period']) == [1, 1]
    # the final periods, stripped from both sides, no longer count against the draft
    assert (row['chrf_nodot'] > row['chrf']).all()
