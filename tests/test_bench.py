"""bench.py end to end on a tiny model: the JSON it writes, and an A/B comparison with time to a target."""
import json

from helpers import TINY, read_log, run


def test_bench_writes_speed_and_val_loss(workdir, char_data):
    proc = run('bench.py', '--bench_iters=4', '--bench_tokens=8', '--bench_name=tiny', *TINY, '--dataset=chars', cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((workdir / 'bench' / 'tiny.json').read_text())
    assert result['iters'] == 4 and result['train_ms_per_iter'] > 0 and result['sample_tokens_per_s_kv_cache'] > 0
    assert result['final_val_loss'] == round(read_log(workdir / 'out-bench' / 'tiny')[-1]['val_loss'], 4)


def test_bench_compares_two_arms_in_alternation(workdir, char_data):
    proc = run('bench.py', '--bench_iters=4', '--bench_name=ab', '--bench_pairs=2', '--bench_target=100',
               '--bench_against=--pos=learned --mlp=gelu', *TINY, '--dataset=chars', cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((workdir / 'bench' / 'ab.json').read_text())
    assert [r['out_dir'].split('/')[-1] for r in result['a'] + result['b']] == ['ab-a1', 'ab-a2', 'ab-b1', 'ab-b2']
    # the B runs really ran the other architecture
    b_config = json.loads((workdir / 'out-bench' / 'ab-b1' / 'meta.json').read_text())['config']
    assert b_config['pos'] == 'learned' and b_config['mlp'] == 'gelu'
    ratio = result['ratio_ms_per_iter']
    assert ratio['pairs'] == 2 and ratio['min'] <= ratio['median'] <= ratio['max']
    assert result['ratio_seconds_to_target']['pairs'] == 2  # a loss of 100 is reached at the first eval
    # the order of the commands it printed alternates A B A B
    order = [line.split('--out_dir=')[1].split()[0].split('/')[-1] for line in proc.stdout.splitlines() if '--out_dir=' in line]
    assert order == ['ab-a1', 'ab-b1', 'ab-a2', 'ab-b2']
