"""TurnGPT: turn vectors, speaker embeddings, per-group learning rates, and the curriculum with data mixes."""
import numpy as np
import pytest
import torch

from conftest import CONVERSATIONS
from dataloader import SOURCES, pick_dataset
from helpers import read_log, run, train, train_losses
from model import GPT, GPTConfig
from tokenizer import SPEAKERS, render_conversation, reversal_index, speaker_ids

V, C, E = 300, 32, 8


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=32, n_layer=1, n_head=2, n_embd=C, **kw))


# -----------------------------------------------------------------------------
# speakers


def test_speaker_ids_line_up_with_the_rendered_turns(chat_tok):
    for conv in CONVERSATIONS:
        ids = render_conversation(chat_tok, conv)
        spk = speaker_ids(ids, chat_tok)
        assert spk[0] == 0  # BOS belongs to no one
        for k, (role, _) in enumerate(conv):  # a turn spans from its role token to the next turn's
            start, end = len(render_conversation(chat_tok, conv[:k])), len(render_conversation(chat_tok, conv[:k + 1]))
            assert (spk[start:end] == 1 + SPEAKERS.index(f'<|{role}|>')).all()


def test_speaker_ids_read_backward_are_the_forward_ones_reordered(chat_tok):
    ids = np.concatenate([render_conversation(chat_tok, conv) for conv in CONVERSATIONS])
    index = reversal_index(ids, chat_tok.bos)
    assert (speaker_ids(ids[index], chat_tok, backward=True) == speaker_ids(ids, chat_tok)[index]).all()


def test_speaker_batches_follow_the_turn_tokens(workdir, chat_data, chat_tok):
    data = SOURCES['speakers'](str(chat_data), 16, 8, 'cpu')
    x, y, s = data.get_batch('train')
    assert s.shape == x.shape and set(s.unique().tolist()) <= {0, 1, 2}
    for name, k in (('<|user|>', 1), ('<|assistant|>', 2), ('<|bos|>', 0)):
        assert (s[x == chat_tok.special(name)] == k).all()
    # inside a window the speaker changes only at a turn token or BOS
    changed = s[:, 1:] != s[:, :-1]
    turn_tokens = torch.isin(x[:, 1:], torch.tensor(sorted(chat_tok.turn_ends)))
    assert not (changed & ~turn_tokens).any()
    # the same rows as the plain source draws: speakers are extra, the windows are the same
    plain = SOURCES['tokens'](str(chat_data), 16, 8, 'cpu')
    x2, y2 = plain.get_batch('train')
    assert torch.equal(x, x2) and torch.equal(y, y2)


# -----------------------------------------------------------------------------
# turn vectors


@pytest.mark.parametrize('turn_map, features', [('linear', E), ('poly', 5 * E)])
def test_turn_vectors_count_and_ratio(turn_map, features):
    model, dense = tiny(turn_dim=E, turn_map=turn_map), tiny()
    c = model.compression()
    assert c['token_params'] == V * E + features * C  # the table and the map, shared by the input and the head
    assert c['embedding_ratio'] == pytest.approx(V * C / (V * E + features * C))
    assert c['dense_params'] == dense.get_num_params()  # the baseline, built and counted
    assert c['params'] == model.get_num_params() == dense.get_num_params() - V * C + V * E + features * C
    assert c['model_ratio'] == pytest.approx(dense.get_num_params() / model.get_num_params())
    assert f"{c['model_ratio']:.2f}x" in model.describe()[0] and f"{c['embedding_ratio']:.1f}x" in model.describe()[0]


@pytest.mark.parametrize('turn_map', ['linear', 'poly'])
def test_the_head_is_tied_through_the_turn_map(turn_map):
    model = tiny(turn_dim=E, turn_map=turn_map)
    h = torch.randn(2, 5, C)
    every_token = model.embed(torch.arange(V)[None])[0]  # (V, C): each token's input vector
    assert torch.allclose(model.head(h), h @ every_token.T, atol=1e-5)


def test_gradients_reach_the_turn_table_the_map_and_the_speakers():
    model = tiny(turn_dim=E, n_speakers=2)
    x = torch.randint(V, (2, 16))
    _, loss = model(x, torch.randint(V, (2, 16)), torch.randint(3, (2, 16)))
    loss.backward()
    for p in (model.transformer.turn.weight, model.transformer.turn_map.weight, model.transformer.wse.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_speakers_change_the_output():
    model = tiny(n_speakers=2)
    torch.nn.init.normal_(model.transformer.wse.weight)
    x = torch.randint(V, (1, 8))
    assert not torch.allclose(model(x, speakers=torch.ones_like(x))[0], model(x, speakers=2 * torch.ones_like(x))[0])


def test_cached_generation_with_speakers_equals_recomputation():
    model = tiny(turn_dim=E, n_speakers=2).eval()
    torch.nn.init.normal_(model.transformer.wse.weight)
    prompt, speakers = torch.randint(V, (2, 5)), torch.tensor([[0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 2]])
    cached = model.generate(prompt, 40, temperature=0, use_cache=True, speakers=speakers)  # past block 32: a refill
    assert torch.equal(cached, model.generate(prompt, 40, temperature=0, use_cache=False, speakers=speakers))


def test_an_untied_turn_model_is_refused():
    with pytest.raises(ValueError, match='tie'):
        tiny(turn_dim=E, tie_weights=False)


def test_lr_scales_make_groups_by_parameter_name():
    model = tiny(turn_dim=E, n_speakers=2)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu', {'transformer.turn': 0.5, 'transformer.wse': 2.0})
    scale = {id(p): g['lr_scale'] for g in opt.param_groups for p in g['params']}
    t = model.transformer
    # 'transformer.turn' names the table, not the map, whose name merely starts with the same letters
    assert scale[id(t.turn.weight)] == 0.5 and scale[id(t.turn_map.weight)] == 1.0 and scale[id(t.wse.weight)] == 2.0
    assert len(scale) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="matches no parameter"):
        model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu', {'transformer.nope': 0.5})


# -----------------------------------------------------------------------------
# the curriculum: phases with data mixes and advance criteria


def test_pick_dataset_follows_the_weights():
    g = torch.Generator().manual_seed(0)
    draws = [pick_dataset({'a': 3.0, 'b': 1.0}, g) for _ in range(4000)]
    assert abs(draws.count('a') / len(draws) - 0.75) < 0.03
    state = g.get_state()
    assert pick_dataset({'a': 1.0}, g) == 'a' and torch.equal(g.get_state(), state)  # one dataset: no draw


@pytest.fixture(scope='module')
def chars2(workdir, char_data, text):
    """data/chars2: other text in data/chars' tokenizer, for mixes."""
    src = workdir / 'input2.txt'
    src.write_text(text[::-1], encoding='utf-8')
    proc = run('prepare.text', src, f'--tokenizer={char_data}', f'--out={workdir / "data" / "chars2"}')
    assert proc.returncode == 0, proc.stderr
    return 'chars2'


CURRICULUM = "{4: {'block_size': 8, 'batch_size': 2, 'learning_rate': 5e-3, 'data_mix': {'chars2': 1.0}}, " \
             "8: {'block_size': 12, 'data_mix': {'chars': 0.5, 'chars2': 0.5}}}"


def test_phases_switch_at_their_steps_with_their_block_batch_lr_and_mix(workdir, chars2, tmp_path):
    train(workdir, tmp_path, '--max_iters=12', '--eval_interval=4', '--decay_lr=False', f'--phases={CURRICULUM}')
    rows = read_log(tmp_path)
    assert [(r['iter'], r['phase']) for r in rows if 'phase' in r] == [(4, 1), (8, 2)]
    steps = {r['iter']: r for r in rows if 'loss' in r}
    tokens = {i: steps[i]['tokens'] - steps[i - 1]['tokens'] for i in range(2, 13)}  # this iteration's tokens
    assert [tokens[i] for i in (2, 4, 5, 8, 9, 12)] == [4 * 16, 4 * 16, 2 * 8, 2 * 8, 2 * 12, 2 * 12]
    assert [steps[i]['lr'] for i in (4, 5, 9)] == [1e-3, 5e-3, 5e-3]  # iteration i logs the lr of step i - 1
    evals = {r['iter']: r for r in rows if 'val_loss' in r}
    assert 'val_loss/chars2' not in evals[0] and 'val_loss/chars2' in evals[4] and 'val_loss/chars2' in evals[8]


def test_a_criterion_starts_the_next_phase_early_and_resume_keeps_it(workdir, chars2, tmp_path):
    # the criterion holds at the first eval: phase 2, set for iteration 100, starts at 0; dropout makes the RNG
    # matter, and a run stopped at 6 and resumed must continue in phase 2 with the same losses
    args = ['--eval_interval=3', '--decay_lr=False', '--dropout=0.1',
            "--phases={0: {'advance_when': {'val_loss': 100.0}}, 100: {'block_size': 8, 'data_mix': {'chars2': 1.0}}}"]
    train(workdir, tmp_path / 'straight', *args, '--max_iters=12')
    train(workdir, tmp_path / 'resumed', *args, '--max_iters=6')
    proc = train(workdir, tmp_path / 'resumed', '--init_from=resume', '--max_iters=12')
    assert 'phase 2 of 2 in force' in proc.stdout and 'iter 6: phase' not in proc.stdout  # none starts again
    phases = [r for r in read_log(tmp_path / 'straight') if 'phase' in r]  # the first, at 0, is in force from the start
    assert [(r['iter'], r['phase']) for r in phases] == [(0, 2)] and 'advance_when' in phases[0]['why']
    straight, resumed = train_losses(tmp_path / 'straight'), train_losses(tmp_path / 'resumed')
    assert sorted(resumed) == list(range(1, 13))
    assert np.allclose([resumed[i] for i in range(7, 13)], [straight[i] for i in range(7, 13)], rtol=1e-5, atol=0)
    steps = {r['iter']: r for r in read_log(tmp_path / 'resumed') if 'loss' in r}
    assert steps[8]['tokens'] - steps[7]['tokens'] == 4 * 8  # block 8 after the resume: still phase 2


def test_a_mix_of_another_tokenizer_or_an_unknown_metric_is_refused(workdir, char_data, chat_data, tmp_path):
    for bad, said in (("--data_mix={'chat': 1.0}", 'another tokenizer'), ("--advance_when={'bleu': 1.0}", 'advance_when')):
        proc = train(workdir, tmp_path, bad, check=False)
        assert proc.returncode == 1 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not tmp_path.joinpath('ckpt.pt').exists()


# -----------------------------------------------------------------------------
# a TurnGPT run, end to end on the tiny conversations


def test_a_turngpt_run_trains_prints_both_ratios_and_chats(workdir, chat_data, tmp_path):
    proc = train(workdir, tmp_path, '--block_size=32', '--max_iters=12', '--eval_interval=6', '--learning_rate=1e-2',
                 '--warmup_iters=0', '--turn_dim=8', '--n_speakers=2', '--data_source=speakers', '--keep_best=True',
                 "--lr_scales={'transformer.turn': 0.5}", "--sample_prompts=['hello']", dataset='chat')
    assert 'token parameters' in proc.stdout and 'whole model' in proc.stdout
    losses = train_losses(tmp_path)
    assert losses[12] < losses[1]
    assert any(r.get('samples') and r['samples'][0][0] == 'hello' for r in read_log(tmp_path))
    assert (tmp_path / 'best.pt').is_file()
    chat = run('chat.py', f'--out_dir={tmp_path}', '--device=cpu', '--max_new_tokens=8', cwd=workdir, stdin='hello\n/quit\n')
    assert chat.returncode == 0 and 'Bot:' in chat.stdout, chat.stderr[-2000:]


def test_semantic_init_and_analogies_are_the_sources_business(workdir, chat_data, tmp_path):
    # data_args reach the token stream: it initializes a new model's listed words and measures analogies at each
    # eval, which advance_when may name
    proc = train(workdir, tmp_path, '--max_iters=2', '--eval_interval=2', '--turn_dim=8', '--block_size=32',
                 "--data_args={'semantic_init': True, 'eval_analogies': True}",
                 "--advance_when={'analogy/distance_rel': 100.0}", dataset='chat')
    assert 'parameters, from scratch; semantic init: ' in proc.stdout
    evals = [r for r in read_log(tmp_path) if 'val_loss' in r]
    assert [r['iter'] for r in evals] == [0, 2]
    assert all({f'analogy/{k}' for k in ('top1_excl', 'top1_incl', 'distance', 'distance_rel', 'rank_mean')} <= r.keys()
               for r in evals)


# -----------------------------------------------------------------------------
# the A/B (projects/turngpt/eval.py --ab=True)


def test_the_equal_parameter_dense_arms_match_their_turn_models_within_1_percent():
    from projects.turngpt import eval as ab
    for dense, turn in ab.EQUAL_PARAMS.items():
        assert ab.arm_params(dense) != ab.arm_params(turn)  # a different model (no turn table), not the same one
        assert abs(ab.arm_params(dense) / ab.arm_params(turn) - 1) < 0.01, (dense, turn)
    assert ab.arm_params('dense4x128') > 1.4 * ab.arm_params('simple')  # the old dense arm is the larger one


def test_the_ab_compares_seed_averaged_values_on_the_same_pairs():
    from projects.turngpt import eval as ab
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, 60)

    def run(shift, seed_noise, val):
        return {'val_loss': val, 'items': {'ref': ['r'] * 60, 'similarity': list(base + shift + seed_noise),
                                           'logprob': [-4.0] * 60, 'tokens': [2] * 60, 'rank': [1] * 30 + [5] * 30}}
    # per seed the noise is large, but it cancels in the seeds' mean: A is B + 0.05 on every pair
    noise = [rng.normal(0, 0.3, 60) for _ in range(2)]
    results = {('dense2x128', 1): run(0.05, noise[0], 4.0), ('dense2x128', 2): run(0.05, -noise[0], 4.1),
               ('simple', 1): run(0.0, noise[1], 4.2), ('simple', 2): run(0.0, -noise[1], 4.3)}
    [c] = ab.comparisons(results, [1, 2])  # only the claim whose arms ran
    assert (c['a'], c['b']) == ('dense2x128', 'simple')
    assert c['similarity']['diff'] == pytest.approx(0.05) and 0.04 < c['similarity']['lo'] < c['similarity']['hi'] < 0.06
    assert c['logprob_per_token']['diff'] == 0 and c['hits@1/20']['diff'] == 0
    assert c['val_loss']['diff'] == pytest.approx(-0.2)
