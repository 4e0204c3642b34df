"""The fork server (tests/forkserver.py) must run a script as a fresh `python script` would: the same exit status,
output and argv, so that every test through helpers.run means what it would mean without it."""
import helpers
import pytest
from helpers import run

SCRIPT = '''import os, sys
print('argv', sys.argv[1:], 'path0', os.path.basename(sys.path[0]), 'main', __name__, 'cwd', os.path.basename(os.getcwd()))
sys.stderr.write('step 1\\rstep 2\\r\\n')  # tqdm's carriage returns
what = sys.argv[1]
if what == 'stdin':
    print('read', sys.stdin.read().upper())
elif what == 'code':
    sys.exit(3)
elif what == 'message':
    sys.exit('say what to do')
elif what == 'raise':
    raise ValueError('boom')
'''


@pytest.mark.parametrize('what', ['ok', 'stdin', 'code', 'message', 'raise'])
def test_a_forked_run_is_a_fresh_interpreters_run(what, tmp_path, monkeypatch):
    script = tmp_path / 'script.py'
    script.write_text(SCRIPT)
    cwd = tmp_path / 'here'
    cwd.mkdir()
    forked = run(str(script), what, cwd=cwd, stdin='hi there')
    monkeypatch.setattr(helpers, 'FORK', False)
    fresh = run(str(script), what, cwd=cwd, stdin='hi there')
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    assert forked.returncode == {'code': 3, 'message': 1, 'raise': 1}.get(what, 0)
    # a traceback shows runpy's frames too when forked: the first and last lines, what the tests read, are the same
    lines = lambda p: p.stderr.splitlines()
    assert (lines(forked)[0], lines(forked)[-1]) == (lines(fresh)[0], lines(fresh)[-1])
    assert 'step 2' in forked.stderr and '\r' not in forked.stderr


def test_a_forked_module_run_and_a_timeout(tmp_path, monkeypatch):
    forked = run('train.py', '--nonsense=1')
    monkeypatch.setattr(helpers, 'FORK', False)
    fresh = run('train.py', '--nonsense=1')
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    monkeypatch.setattr(helpers, 'FORK', True)
    assert run('projects.approximator.embed', '--help').returncode == 0  # -m, from the repo's root on sys.path
    script = tmp_path / 'slow.py'
    script.write_text('import time\ntime.sleep(60)\n')
    with pytest.raises(helpers.subprocess.TimeoutExpired):
        run(str(script), timeout=1)
    assert run(str(script).replace('slow', 'missing')).returncode != 0  # and the server still answers
