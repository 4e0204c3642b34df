"""Requirements in layers: requirements.txt is the core's (the design's six and what the quickstart needs), the web
chat and each project list their extras in a file of their own, requirements-dev.txt is all of them and the test
tools; a package that isn't installed stops a script with one line naming the pip install that brings it."""
import ast
import importlib.metadata
import os
import re
import subprocess
import sys

from helpers import ENV, REPO
from test_imports import modules, parse

CORE = {'torch', 'numpy', 'tiktoken', 'datasets', 'h5py', 'tqdm', 'rustbpe', 'chitchat-dataset', 'matplotlib'}
PROJECTS = sorted(p.parent.name for p in (REPO / 'projects').glob('*/requirements.txt'))


def norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def lines(path):
    """The requirement lines of a file, comments and blank lines out."""
    return [line.split('#')[0].strip() for line in path.read_text().splitlines() if line.split('#')[0].strip()]


def names(path):
    """{package name} of a requirements file, its -r files' included (as pip reads them: relative to the file)."""
    out = set()
    for line in lines(path):
        if line.startswith('-r'):
            out |= names((path.parent / line[2:].strip()).resolve())
        else:
            out.add(norm(re.split(r'[\[<>=!~; ]', line)[0]))
    return out


def test_requirements_txt_is_exactly_the_core():
    assert {norm(n) for n in names(REPO / 'requirements.txt')} == {norm(n) for n in CORE}
    assert 'torch==2.13.0' in lines(REPO / 'requirements.txt')  # the version the project is tested with


def test_dev_is_everything_and_each_extra_file_brings_the_core():
    dev = lines(REPO / 'requirements-dev.txt')
    files = ['requirements.txt', 'requirements-web.txt'] + [f'projects/{p}/requirements.txt' for p in PROJECTS]
    assert [f'-r {f}' for f in files] == [line for line in dev if line.startswith('-r')]  # a new project's file too
    assert {'pytest', 'selenium', 'httpx'} <= names(REPO / 'requirements-dev.txt')
    for f in files[1:]:  # one install line sets up the web chat or a project on a fresh machine
        assert CORE <= names(REPO / f), f


def need_calls():
    """[(file, line, module, requirements)] of every need(module, requirements) call in the repo."""
    out = []
    for path in modules().values():
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'need':
                out.append((path, node.lineno, *(ast.literal_eval(a) for a in node.args)))
    return out


def test_every_need_names_a_file_that_lists_the_package():
    """need(module, file) names a file that brings the module's package; one in projects/<name>/ names its own."""
    dists = importlib.metadata.packages_distributions()  # {top-level module: [its package]}: everything is installed here
    calls = need_calls()
    assert len(calls) >= 10 and {'faiss', 'bm25s', 'sentence_transformers', 'fastapi', 'sacrebleu'} <= {c[2] for c in calls}
    for path, line, module, requirements in calls:
        rel, package = os.path.relpath(path, REPO), norm(dists[module.split('.')[0]][0])
        assert package not in CORE, f"{rel}:{line}"  # the core's packages are imported plainly
        assert (REPO / requirements).is_file() and package in names(REPO / requirements), f"{rel}:{line}"
        if rel.startswith('projects' + os.sep):
            assert requirements == f"projects/{rel.split(os.sep)[1]}/requirements.txt", f"{rel}:{line}"


def missing(module, code, main=None):
    """(exit code, stderr) of Python code run with `module` missing (None in sys.modules: import fails as if it weren't
    installed), as the script `main` (a module name, as python -m runs it) if given."""
    setup = f"import sys; sys.modules[{module!r}] = None; "
    if main:
        setup += f"import importlib.machinery; sys.modules['__main__'].__spec__ = importlib.machinery.ModuleSpec({main!r}, None); "
    proc = subprocess.run([sys.executable, '-c', setup + code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def test_a_missing_extra_says_in_one_line_what_to_install():
    assert missing('faiss', "from common import need; need('faiss', 'projects/chatbert/requirements.txt')") == \
        (1, "faiss is not installed: pip install -r projects/chatbert/requirements.txt\n")
    # the web chat's own file, before anything else is done
    assert missing('fastapi', "import chat_web; chat_web.make_app(None, 'run')") == \
        (1, "fastapi is not installed: pip install -r requirements-web.txt\n")
    # a library shared by projects: the list of the project being run, else the file it names
    teacher = "import teacher; teacher.load()"
    assert missing('sentence_transformers', teacher) == \
        (1, "sentence_transformers is not installed: pip install -r projects/approximator/requirements.txt\n")
    assert missing('sentence_transformers', teacher, main='projects.turngpt.eval') == \
        (1, "sentence_transformers is not installed: pip install -r projects/turngpt/requirements.txt\n")
    assert missing('sacrebleu', "import convmetrics; convmetrics.chrf(['a'], ['a'])", main='projects.vibejam.eval') == \
        (1, "sacrebleu is not installed: pip install -r projects/vibejam/requirements.txt\n")


def test_chat_demo_without_bm25s_says_what_to_install():
    """chat.py --demo, a core entry point with a project's extra: one line, and no traceback."""
    code = ("import runpy, sys; sys.argv = ['chat.py', '--demo=True', '--device=cpu']; "
            f"runpy.run_path({str(REPO / 'chat.py')!r}, run_name='__main__')")
    assert missing('bm25s', code) == (1, "bm25s is not installed: pip install -r projects/chatbert/requirements.txt\n")
