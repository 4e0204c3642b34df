"""
The statistics every results table uses, in one place:
- mean_std: mean ± sample std over seeds (the spread a reader should expect from another seed);
- mean_ci: the t interval of a mean over seeds (how well a few seeds pin the mean down);
- bootstrap_ci: a percentile bootstrap interval over test items (how much the number moves with other test items);
- paired_bootstrap: A - B on the same items, resampled together, for a table that claims A beats B;
- mcnemar: the exact McNemar test, for right/wrong outcomes of two systems on the same items;
- spearman: rank correlation, ties averaged.
The bootstrap is seeded, so a table written twice from the same outputs is the same table.
"""
import math

import numpy as np
import torch


def mean_std(xs, digits=4):
    """'mean ± std' over seeds (the sample std, ddof=1; 0 for one seed), for results tables."""
    return f"{np.mean(xs):.{digits}f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0:.{digits}f}"


def mean_ci(xs, level=0.95):
    """(lo, hi): Student's t interval of the mean over seeds, the one to quote when seeds are the noise (a handful
    of runs is too few for a bootstrap). Its half-width is the resolution: effects smaller cannot be told from 0."""
    from common import need
    t = need('scipy.stats', 'requirements-dev.txt').t  # not the core's: each project that quotes it lists scipy
    xs = np.asarray(xs, dtype=float)
    half = t.ppf((1 + level) / 2, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs))
    return float(xs.mean() - half), float(xs.mean() + half)


def _resamples(n, n_boot, seed):
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values, stat=np.mean, n_boot=2000, level=0.95, seed=0):
    """(lo, hi): the percentile bootstrap interval of stat over items. values: an array with one row per item (or a
    list); stat maps such an array (resampled rows) to a number: the mean by default, or any corpus-level metric."""
    values = np.asarray(values)
    boots = np.array([stat(values[i]) for i in _resamples(len(values), n_boot, seed)])
    return tuple(np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).tolist())


def paired_bootstrap(a, b, stat=np.mean, n_boot=2000, level=0.95, seed=0):
    """stat(a) - stat(b) of two systems scored on the same items (a[i] and b[i] are item i's scores), with the
    percentile interval from resampling items, both systems together, and a two-sided p: how often the resampled
    difference falls on the other side of 0 (doubled, at most 1). {'diff', 'lo', 'hi', 'p'}."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same items: {len(a)} against {len(b)}")
    diff = float(stat(a) - stat(b))
    boots = np.array([stat(a[i]) - stat(b[i]) for i in _resamples(len(a), n_boot, seed)])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).tolist()
    other_side = np.mean(boots <= 0) if diff > 0 else np.mean(boots >= 0) if diff < 0 else 1.0
    return {'diff': diff, 'lo': lo, 'hi': hi, 'p': float(min(1.0, 2 * other_side))}


def mcnemar(a, b):
    """The exact McNemar test of two systems' right/wrong (bool) outcomes on the same items: of the items where they
    disagree, is A right more often than chance (a fair coin) says? {'a_only', 'b_only', 'p'} with a two-sided p."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same items: {len(a)} against {len(b)}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {'a_only': a_only, 'b_only': b_only, 'p': p}


def fmt_ci(x, lo, hi, digits=3):
    """'x [lo, hi]' for a table cell."""
    return f"{x:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_diff(d, digits=3):
    """A paired_bootstrap result as a table cell: '+0.012 [+0.004, +0.020]'."""
    return f"{d['diff']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def ranks(x):
    """1-based ranks of a 1-D tensor, ties given their average rank (as scipy.stats.rankdata does): float16 teacher
    vectors and short texts make equal cosines common, and ranking ties by order would make up an order."""
    values, where, counts = x.unique(return_inverse=True, return_counts=True)  # unique sorts
    return (counts.cumsum(0) - (counts - 1) / 2).to(torch.float64)[where]


def spearman(a, b):
    """Spearman's rank correlation of two 1-D tensors: Pearson's of their tie-averaged ranks."""
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()
