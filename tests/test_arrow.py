"""projects/backward/arrow.py's aggregation on constructed results: the means, spreads and BW/FW - 1 it reports are the right ones."""
import numpy as np

from projects.backward.arrow import aggregate, plot_positions


def summary(fw, bw, buckets_fw=(3.0, 2.0), buckets_bw=(3.3, 2.1)):
    b = lambda xs: [{'positions': f'[{2**i}, {2**(i + 1)})', 'nll': x} for i, x in enumerate(xs)]
    return {'loss': {'forward': {'bpb': fw, 'buckets': b(buckets_fw)}, 'backward': {'bpb': bw, 'buckets': b(buckets_bw)}}}


def test_aggregate_reports_the_seed_paired_gap(tmp_path):
    results = {('s', 'forward', 1): summary(2.0, 3.0), ('s', 'forward', 2): summary(2.2, 3.1),
               ('s', 'backward', 1): summary(3.0, 2.02), ('s', 'backward', 2): summary(3.2, 2.31),
               ('s', 'bidirectional', 1): summary(2.1, 2.1), ('s', 'bidirectional', 2): summary(2.3, 2.3)}
    table, numbers = aggregate(results, ['s'], ['forward', 'backward', 'bidirectional'], [1, 2])
    gaps = numbers['bw_over_fw_minus_1']['s/one-way models']
    assert np.allclose(gaps, [2.02 / 2.0 - 1, 2.31 / 2.2 - 1])  # backward model on backward text / forward on forward
    assert np.allclose(numbers['bw_over_fw_minus_1']['s/bidirectional model'], [0, 0])
    assert f"{np.mean(gaps) * 100:+.2f}% ± {np.std(gaps, ddof=1) * 100:.2f}%" in table
    assert '| s | forward | 2.1000 ± 0.1414 |' in table  # mean ± sample std over the 2 seeds
    plot_positions(results, tmp_path / 'p.png', ['s'], ['forward', 'backward'], [1, 2])
    assert (tmp_path / 'p.png').stat().st_size > 1000
