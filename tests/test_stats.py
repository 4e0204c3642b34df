"""stats.py against brute-force answers: the sample std, the bootstrap, the paired bootstrap and exact McNemar."""
import math

import numpy as np
import pytest

import torch

from stats import bootstrap_ci, fmt_diff, mcnemar, mean_ci, mean_std, paired_bootstrap, ranks, spearman


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 2.0, 4.0], 3) == f"{7 / 3:.3f} ± {math.sqrt(((1 - 7/3)**2 + (2 - 7/3)**2 + (4 - 7/3)**2) / 2):.3f}"
    assert mean_std([0.5], 2) == "0.50 ± 0.00"


def test_bootstrap_interval_matches_the_normal_approximation():
    """For the mean of 2,000 coin flips the 95% interval is about p ± 1.96 sqrt(p(1-p)/n)."""
    x = np.random.default_rng(0).random(2000) < 0.3
    lo, hi = bootstrap_ci(x.astype(float), n_boot=4000)
    half = 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_takes_a_corpus_level_statistic():
    rows = np.array([[1, 2], [3, 4], [5, 6]], dtype=float)  # ratio of sums, not a mean of rows
    lo, hi = bootstrap_ci(rows, stat=lambda r: r[:, 0].sum() / r[:, 1].sum(), n_boot=500)
    assert 1 / 6 <= lo <= 9 / 12 <= hi <= 5 / 6


def test_paired_bootstrap_sees_a_small_shift_that_unpaired_noise_hides():
    """Two systems whose per-item scores differ by a constant 0.05 on top of big item noise: paired, the interval is
    tight around 0.05 and excludes 0; the same gap between two unrelated samples would not be resolved."""
    rng = np.random.default_rng(1)
    item = rng.normal(0, 1, 300)
    a, b = item + 0.05 + rng.normal(0, 0.01, 300), item
    d = paired_bootstrap(a, b)
    assert d['lo'] > 0 and d['diff'] == pytest.approx(np.mean(a - b)) and d['hi'] < 0.06 and d['p'] < 0.01
    same = paired_bootstrap(b, b)
    assert same['diff'] == 0 and same['p'] == 1.0
    assert fmt_diff(d, 2).startswith('+0.05 [+0.0')
    with pytest.raises(ValueError, match='same items'):
        paired_bootstrap(a, b[:-1])


def test_mcnemar_is_the_exact_binomial_on_the_disagreements():
    a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 30, dtype=bool)  # 10 items only A gets right, 2 only B
    b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 30, dtype=bool)
    r = mcnemar(a, b)
    brute = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12
    assert (r['a_only'], r['b_only']) == (10, 2) and r['p'] == pytest.approx(brute)
    assert mcnemar(b, a)['p'] == pytest.approx(brute) and mcnemar(a, a)['p'] == 1.0
    scipy = pytest.importorskip('scipy.stats')
    assert r['p'] == pytest.approx(scipy.binomtest(10, 12, 0.5).pvalue)


def test_mean_ci_is_students_t_interval():
    xs = [0.3, -0.1, 0.5, 0.2, 0.0]
    lo, hi = mean_ci(xs)
    half = 2.7764451 * np.std(xs, ddof=1) / np.sqrt(5)  # t(0.975, 4 dof), from a table
    assert (lo, hi) == pytest.approx((np.mean(xs) - half, np.mean(xs) + half), rel=1e-6)
    assert mean_ci(xs, level=0.5)[1] - mean_ci(xs, level=0.5)[0] < hi - lo  # less confidence, narrower


def test_spearman_averages_ties_as_scipy_does():
    scipy_stats = pytest.importorskip('scipy.stats')
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 300).astype(float), rng.integers(0, 4, 300) + 0.1 * rng.integers(0, 3, 300)  # many ties
    want = scipy_stats.spearmanr(a, b).statistic
    assert spearman(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(want, abs=1e-12)
    ranked = ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranked.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]  # the three 3.0s share ranks 3, 4 and 5
