"""The shape of the imports, read from the source (ast), nothing run: no import cycles (lazy imports inside functions
count too), nothing outside projects/ imports projects/, and a file is either a library (defines things, runs nothing
on import) or a script (runs, and no other file imports it). Tests may import anything; config/ files are exec'd."""
import ast
import os

from helpers import REPO

SKIP = {'tests', 'config'}  # tests import what they test; config files are read by common.read_config_file
# what a library's top level may hold: defining things runs nothing (an `if` or `try` may choose what to define)
DEFINES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def modules():
    """{module name: path} of every .py file of the repo, prepare/__init__.py as 'prepare'."""
    out = {}
    for root, dirs, files in os.walk(REPO):
        rel = os.path.relpath(root, REPO)
        dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '__')) and not (rel == '.' and d in SKIP))
        for name in files:
            if name.endswith('.py'):
                parts = [] if rel == '.' else rel.split(os.sep)
                parts += [] if name == '__init__.py' else [name[:-3]]
                out['.'.join(parts)] = os.path.join(root, name)
    return out


def parse(path):
    with open(path, encoding='utf-8') as f:
        return ast.parse(f.read(), path)


def import_names(tree, name):
    """(dotted name, line) of every import in module `name`, lazy ones inside functions included; `from a import b`
    gives a and a.b (b may be a module of package a)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: from the module's own package
                base = '.'.join(name.split('.')[:len(name.split('.')) - node.level] + ([base] if base else []))
            yield base, node.lineno
            yield from ((f"{base}.{a.name}", node.lineno) for a in node.names)


def imported(tree, name, mods):
    """{module: line} of the repo modules a module imports anywhere in it, a package's __init__ included."""
    out = {}
    for target, line in import_names(tree, name):
        parts = target.split('.')
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            if '.'.join(parts[:i]) in mods and '.'.join(parts[:i]) != name:
                out.setdefault('.'.join(parts[:i]), line)
    return out


def graph():
    mods = modules()
    trees = {m: parse(p) for m, p in mods.items()}
    return mods, trees, {m: imported(t, m, mods) for m, t in trees.items()}


def is_main_guard(node):
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__')


def runs(body):
    """The line numbers of the top-level statements that run something (a docstring, a definition, an assignment,
    or an if/try holding only those, run nothing)."""
    lines = []
    for i, node in enumerate(body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if is_main_guard(node):
            lines.append(node.lineno)
        elif isinstance(node, (ast.If, ast.Try)):
            inner = node.body + node.orelse + getattr(node, 'finalbody', [])
            inner += [s for h in getattr(node, 'handlers', []) for s in h.body]
            lines += runs([ast.Pass()] + inner) if inner else []  # a leading Pass: no docstring inside
        elif not isinstance(node, DEFINES + (ast.Pass,)):
            lines.append(node.lineno)
    return lines


def test_no_cycles():
    _, _, edges = graph()
    state, stack, cycles = {}, [], []

    def visit(m):  # depth first; a module met again while still on the stack closes a cycle
        state[m] = 'open'
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 'open':
                cycle = stack[stack.index(n):] + [n]
                cycles.append(' -> '.join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {n}")
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 'done'

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + '\n'.join(cycles)


def test_root_does_not_import_projects():
    mods, trees, _ = graph()
    bad = [f"{os.path.relpath(mods[m], REPO)}:{line} imports {n}" for m in sorted(trees) if not m.startswith('projects.')
           for n, line in sorted(set(import_names(trees[m], m))) if n.split('.')[0] == 'projects']
    assert not bad, "only projects/ may import projects/:\n" + '\n'.join(bad)


def test_imported_files_run_nothing():
    """A file another file imports is a library: importing it defines things and runs nothing."""
    mods, trees, edges = graph()
    importers = {}
    for m in edges:
        for n in edges[m]:
            importers.setdefault(n, []).append(m)
    bad = [f"{os.path.relpath(mods[n], REPO)} (imported by {', '.join(sorted(by))}) runs code at line(s) "
           f"{', '.join(map(str, runs(trees[n].body)))}" for n, by in sorted(importers.items()) if runs(trees[n].body)]
    assert not bad, "a library runs nothing on import:\n" + '\n'.join(bad)


def test_scripts_are_not_imported():
    """A file that runs (an `if __name__ == '__main__':`, or statements at its top level) is imported by no other file."""
    mods, trees, edges = graph()
    scripts = {m for m, t in trees.items() if runs(t.body)}
    bad = [f"{os.path.relpath(mods[m], REPO)}:{line} imports the script {n}" for m in sorted(edges)
           for n, line in sorted(edges[m].items()) if n in scripts]
    assert not bad, "nothing imports a script:\n" + '\n'.join(bad)


def test_the_checks_see_what_they_check():
    """The parser finds a lazy import inside a function, a `from package import module`, and a main guard."""
    mods = {'a': '', 'pkg': '', 'pkg.b': '', 'c': ''}
    tree = ast.parse("import os\ndef f():\n    import c\nfrom pkg import b\nfrom . import c\n")
    assert imported(tree, 'pkg.a', mods) == {'c': 3, 'pkg': 4, 'pkg.b': 4}  # `from . import c` is pkg.c: none
    assert runs(ast.parse("'doc'\nimport os\nX = 1\ntry:\n    import y\nexcept ImportError:\n    y = None\n").body) == []
    assert runs(ast.parse("X = 1\nprint(X)\nif __name__ == '__main__':\n    pass\n").body) == [2, 3]
    assert {'common', 'prepare', 'prepare.common', 'projects.approximator.embedder'} <= set(modules())
