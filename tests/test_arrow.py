"""projects/backward/arrow.py's aggregation on constructed results: the means, spreads, gaps, intervals and paired
comparisons it reports are the right ones."""
import numpy as np
import pytest

from projects.backward.arrow import aggregate, bucket_slices, plot_positions


def summary(fw, bw, nll=None, correct=None):
    s = {'loss': {'forward': {'bpb': fw}, 'backward': {'bpb': bw}}}
    if nll is not None:
        s['positions_nll'] = nll
    if correct is not None:
        s['mc_correct'] = correct
    return s


def test_aggregate_reports_the_seed_paired_gap_and_its_resolution():
    results = {('s', 'forward', 1): summary(2.0, 3.0), ('s', 'forward', 2): summary(2.2, 3.1), ('s', 'forward', 3): summary(2.1, 3.0),
               ('s', 'backward', 1): summary(3.0, 2.02), ('s', 'backward', 2): summary(3.2, 2.31), ('s', 'backward', 3): summary(3.0, 2.1),
               ('s', 'bidirectional', 1): summary(2.1, 2.1), ('s', 'bidirectional', 2): summary(2.3, 2.3)}
    seeds = {'forward': [1, 2, 3], 'backward': [1, 2, 3], 'bidirectional': [1, 2]}
    table, numbers = aggregate(results, ['s'], seeds)
    g = numbers['s']['gap']['one-way models, each on its own direction']
    want = [2.02 / 2.0 - 1, 2.31 / 2.2 - 1, 2.1 / 2.1 - 1]  # backward model on backward text / forward on forward
    assert np.allclose(g['per_seed'], want) and g['mean'] == pytest.approx(np.mean(want))
    half = 4.302653 * np.std(want, ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    assert g['resolution'] == pytest.approx(half) and g['ci95'][0] == pytest.approx(np.mean(want) - half)
    assert np.allclose(numbers['s']['gap']['the bidirectional model, its backward / its forward']['per_seed'], [0, 0])
    assert '| forward | 3 | 2.1000 ± 0.1000 |' in table  # mean ± sample std over the seeds


def test_positions_are_compared_on_paired_targets_and_mc_on_paired_items(tmp_path):
    rng = np.random.default_rng(0)
    T, n = 8, 400
    hard = rng.uniform(1, 5, size=(n, 1))  # targets differ a lot; the same target is equally hard both ways
    fw = lambda: hard + rng.normal(0, 0.01, (n, T))  # noqa: E731
    bw = lambda: hard * np.linspace(0.9, 1.1, T) + rng.normal(0, 0.01, (n, T))  # -10% at c=1 to +10% at c=8  # noqa: E731
    items = rng.random(200) < 0.5
    results = {('s', 'forward', k): summary(2.0, 3.0, {'forward': fw()}, {'forward': items}) for k in (1, 2)}
    results |= {('s', 'backward', k): summary(3.0, 2.0, {'backward': bw()}, {'backward': items | (rng.random(200) < 0.3)})
                for k in (1, 2)}
    table, numbers = aggregate(results, ['s'], {'forward': [1, 2], 'backward': [1, 2]})
    rows = numbers['s']['positions']['one-way models']['buckets']
    assert [r['positions'] for r in rows] == [name for name, _ in bucket_slices(T)] == ['[1, 2)', '[2, 4)', '[4, 8)', '[8, 9)']
    assert rows[0]['gap'] == pytest.approx(-0.1, abs=0.005) and rows[-1]['gap'] == pytest.approx(0.1, abs=0.005)
    # paired targets: target-to-target spread cancels, so the interval is narrow (unpaired it would be ~±10%)
    assert all(r['ci95'][1] - r['ci95'][0] < 0.01 and r['ci95'][0] <= r['gap'] <= r['ci95'][1] for r in rows)
    mc = numbers['s']['next_turn']
    assert mc['forward model read forward']['mean'] == pytest.approx(items.mean())
    assert mc['backward minus forward']['diff'] > 0 and mc['backward minus forward']['lo'] > 0  # strictly more right
    plot_positions(numbers, tmp_path / 'p.png')
    assert (tmp_path / 'p.png').stat().st_size > 1000
