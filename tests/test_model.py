"""The GPT itself: causality, the KV cache, sampling, learning, the loss mask."""
import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, KVCache, ReLU2, apply_rotary, rotary_cos_sin, sample_next

VOCAB, BLOCK = 32, 16


# every knob of the architecture: nanoGPT's GPT-2 recipe, the default, and the other modern options
ARCHS = [dict(pos='learned', norm='layer', mlp='gelu', bias=True), dict(), dict(norm='rms', qk_norm=True, tie_weights=False)]
ARCH_IDS = ['gpt2', 'default', 'rms-qknorm-untied']


def tiny_gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{'block_size': BLOCK, 'vocab_size': VOCAB, 'n_layer': 2, 'n_head': 2, 'n_embd': 32, **kw})).eval()


def all_logits(model, idx):
    return model(idx, targets=idx)[0]  # with targets, forward returns every position's logits


@pytest.mark.parametrize('arch', ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize('t', [0, 7, BLOCK - 2])
def test_changing_a_token_never_changes_earlier_logits(arch, t):
    model = tiny_gpt(**arch)
    x = torch.randint(VOCAB, (1, BLOCK))
    x2 = x.clone()
    x2[0, t + 1] = (x[0, t + 1] + 1) % VOCAB
    a, b = all_logits(model, x), all_logits(model, x2)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-4)


def test_encoder_sees_later_tokens():
    model = tiny_gpt(causal=False)
    x = torch.randint(VOCAB, (1, BLOCK))
    x2 = x.clone()
    x2[0, -1] = (x[0, -1] + 1) % VOCAB
    assert not torch.allclose(all_logits(model, x)[:, 0], all_logits(model, x2)[:, 0], atol=1e-4)


def test_rope_attention_depends_only_on_relative_position():
    cos, sin = rotary_cos_sin(BLOCK, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        return (apply_rotary(q, cos[m], sin[m]) * apply_rotary(k, cos[n], sin[n])).sum()
    assert torch.allclose(score(3, 1), score(12, 10), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)


def test_rope_and_relu2_backwards_match_autograd():
    # both are autograd.Functions with hand-written backwards, for speed; check them against the plain formulas
    cos, sin = (t.double() for t in rotary_cos_sin(BLOCK, 8))
    x = torch.randn(2, BLOCK, 3, 8, dtype=torch.double, requires_grad=True)
    cs, sn = cos[:, None], sin[:, None]
    plain = x * cs + torch.cat([-x[..., 4:], x[..., :4]], dim=-1) * sn  # (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
    assert torch.allclose(apply_rotary(x, cs, sn), plain)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cs, sn), (x,))
    assert torch.equal(ReLU2.apply(x), F.relu(x) ** 2)
    assert torch.autograd.gradcheck(ReLU2.apply, (x,))


def test_forward_past_block_size_fails_clearly():
    with pytest.raises(AssertionError, match='block_size is only 16'):
        tiny_gpt()(torch.zeros(1, BLOCK + 1, dtype=torch.long))


@pytest.mark.parametrize('arch', ARCHS, ids=ARCH_IDS)
def test_greedy_generation_same_with_and_without_cache(arch):
    model = tiny_gpt(**arch)
    prompt = torch.randint(VOCAB, (2, 4))
    n = BLOCK - prompt.size(1) + 1  # the last step feeds exactly block_size tokens
    cached = model.generate(prompt, n, temperature=0, use_cache=True)
    uncached = model.generate(prompt, n, temperature=0, use_cache=False)
    assert cached.shape == (2, 4 + n)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize('arch', ARCHS, ids=ARCH_IDS)
def test_prefill_in_two_chunks_equals_one_forward(arch):
    model = tiny_gpt(**arch)
    x = torch.randint(VOCAB, (2, 12))
    cache = KVCache(model.config.n_layer, BLOCK)
    with torch.no_grad():
        model(x[:, :5], cache=cache)
        last, _ = model(x[:, 5:], cache=cache)
        full, _ = model(x)
    assert cache.pos == 12
    assert torch.allclose(last, full, atol=1e-5)


@pytest.mark.parametrize('use_cache', [True, False])
def test_generation_runs_past_block_size(use_cache):
    out = tiny_gpt().generate(torch.zeros(1, 3, dtype=torch.long), 3 * BLOCK, use_cache=use_cache)
    assert out.shape == (1, 3 + 3 * BLOCK)
    assert 0 <= out.min() and out.max() < VOCAB


def test_generate_stops_at_a_stop_token():
    model = tiny_gpt()
    prompt = torch.randint(VOCAB, (1, 4))
    first = model.generate(prompt, 1, temperature=0)[0, -1].item()
    out = model.generate(prompt, 10, temperature=0, stop=[first])
    assert out.shape == (1, 5)


def test_sample_temperature_zero_is_argmax():
    logits = torch.randn(8, VOCAB)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1, keepdim=True))


def test_sample_top_k_1_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(8, VOCAB)
    for _ in range(20):
        assert torch.equal(sample_next(logits, temperature=2.0, top_k=1), logits.argmax(-1, keepdim=True))


def test_sample_tiny_top_p_keeps_only_the_top_token():
    torch.manual_seed(0)
    logits = torch.randn(8, VOCAB) * 0.1  # nearly uniform: without the nucleus, anything goes
    for _ in range(20):
        assert torch.equal(sample_next(logits, top_p=1e-3), logits.argmax(-1, keepdim=True))


def test_sample_top_k_0_and_top_p_1_cut_nothing():
    logits = torch.randn(4, VOCAB)
    torch.manual_seed(1)
    free = [sample_next(logits, top_k=None, top_p=None) for _ in range(10)]
    torch.manual_seed(1)
    off = [sample_next(logits, top_k=0, top_p=1.0) for _ in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(free, off))


def test_sampling_draws_more_than_one_token_without_limits():
    torch.manual_seed(0)
    logits = torch.zeros(1, VOCAB)
    assert len({sample_next(logits).item() for _ in range(50)}) > 1


def test_overfits_one_batch():
    model = tiny_gpt().train()
    x, y = torch.randint(VOCAB, (4, BLOCK)), torch.randint(VOCAB, (4, BLOCK))
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.99), 'cpu')
    losses = []
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_loss_ignores_targets_of_minus_one():
    model = tiny_gpt()
    x, y = torch.randint(VOCAB, (2, BLOCK)), torch.randint(VOCAB, (2, BLOCK))
    keep = torch.rand(2, BLOCK) < 0.5
    logits, loss = model(x, y.masked_fill(~keep, -1))
    assert torch.allclose(loss, F.cross_entropy(logits[keep], y[keep]), atol=1e-6)
    assert not torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), y.flatten()), atol=1e-4)
