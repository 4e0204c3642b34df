"""
The tests' fork server (helpers.run): a Python that has imported torch and the other heavy libraries once, and forks
a child for each script run, so a run costs a fork, not a fresh interpreter's imports (seconds each on a busy
2-core machine, hundreds of runs). It computes nothing itself, so no thread pool exists to be broken by fork.

Protocol, one JSON line each way on stdin/stdout: {"argv", "cwd", "stdin", "stdout", "stderr"} (the last three file
paths) in; {"pid"} out as soon as the child is forked, {"rc"} when it ends. argv is python's own: [script.py, ...]
or ['-m', module, ...]. The child does what `python argv...` would: sys.argv, sys.path[0], __main__, exit status.
"""
import atexit
import importlib
import json
import os
import runpy
import sys
import threading
import traceback

for name in ('numpy', 'torch', 'tiktoken', 'h5py', 'tqdm'):  # what nearly every script imports; the rest it imports itself
    try:
        importlib.import_module(name)
    except ImportError:
        pass


def child(req):
    """Become `python *req['argv']` in req['cwd'], with its stdio on the request's files; never returns."""
    code = 1
    try:
        for fd, (path, flags) in enumerate([(req['stdin'], os.O_RDONLY), (req['stdout'], os.O_WRONLY),
                                            (req['stderr'], os.O_WRONLY)]):
            f = os.open(path, flags)
            os.dup2(f, fd)
            os.close(f)
        code = run(req['argv'], req['cwd'])
        threading._shutdown()  # as the interpreter ends: wait for non-daemon threads, then run atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)  # never back into the server's loop, whatever happened


def run(argv, cwd):
    """What `python *argv` in cwd would do, as its exit status: None is 0, a non-int exit is printed and is 1."""
    try:
        os.chdir(cwd)
        if argv[0] == '-m':
            sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
            runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
        else:
            sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name='__main__')
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main():
    reply = os.fdopen(os.dup(1), 'w')
    requests = os.fdopen(os.dup(0), 'r')
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # stdio is the protocol: children get their own files, nothing of the server's leaks to them
        os.dup2(null, fd)
    for line in requests:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            reply.close()
            child(req)
        print(json.dumps({'pid': pid}), file=reply, flush=True)
        status = os.waitpid(pid, 0)[1]
        print(json.dumps({'rc': os.waitstatus_to_exitcode(status)}), file=reply, flush=True)


if __name__ == '__main__':
    main()
