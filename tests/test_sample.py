"""sample.py on a tiny trained checkpoint."""
import pytest

from helpers import run


def sample(out_dir, *args):
    proc = run('sample.py', f'--out_dir={out_dir}', '--device=cpu', '--num_samples=1', '--max_new_tokens=12', *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ''.join(line for line in proc.stdout.splitlines(keepends=True) if not line.startswith('config: '))


@pytest.mark.parametrize('use_cache', [True, False])
def test_sample_prints_tokens_per_second(char_run, use_cache):
    out = sample(char_run, f'--use_cache={use_cache}')
    assert '12 tokens in ' in out and f"tokens/s (KV cache {'on' if use_cache else 'off'})" in out


def test_sample_is_the_same_with_and_without_cache(char_run):
    # same seed, prompt "\n" + 12 new tokens within the block of 16: the cache must change nothing
    texts = [sample(char_run, '--temperature=1.0', f'--use_cache={c}').split('---------------')[0] for c in (True, False)]
    assert texts[0] == texts[1] and len(set(texts[0])) > 3


def test_sample_reads_the_prompt_from_a_file(char_run, text, tmp_path):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text(text[:10], encoding='utf-8')
    assert sample(char_run, f'--start=FILE:{prompt}').startswith(text[:10])


def test_sample_takes_top_k_0_and_top_p_1_for_all(char_run):
    # the docstring says "0 for all" and "1.0 for all": the command line must be able to say so
    sample(char_run, '--top_k=0', '--top_p=1.0')
