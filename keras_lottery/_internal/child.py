"""The one way keras_lottery runs Python in a child process.

Some work cannot share this process: converting to TFLite needs the
TensorFlow backend, reading a tfmot model needs tf_keras, and trials need a
fresh backend each. `run_child` starts `python <args>` with this process's
import path and an environment on top of this one, waits (with an optional
timeout) and raises an error that says what failed, with the end of the
child's output, when it exits with a nonzero status or runs too long.

`call_child` adds a JSON request and response: the child runs `serve` on a
handler, which receives the request (a dict) and returns the response (a
dict); an exception raised by the handler is re-raised in the parent with
its message (as ValueError, TypeError, ImportError or FileNotFoundError when
it was one, else as the caller's error class).

Example:

>>> from keras_lottery._internal.child import run_child
>>> run_child(["-c", "print('hi')"], what="A test process").stdout
'hi\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from keras_lottery.errors import KerasLotteryError

#: Lines of the child's output quoted in an error.
TAIL_LINES = 15

# Exceptions a child's handler raises that keep their type in the parent.
_KEPT_TYPES = {e.__name__: e for e in (ValueError, TypeError, ImportError,
                                       FileNotFoundError)}


class ChildError(KerasLotteryError, RuntimeError):
    """A child process failed or ran past its timeout.

    Example:

    >>> from keras_lottery._internal.child import ChildError, run_child
    >>> try:
    ...     run_child(["-c", "import sys; sys.exit('no data')"], what="A trial")
    ... except ChildError as error:
    ...     print(error)
    A trial exited with status 1. Its last output:
    no data
    """


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no signals (Windows)
        return True
    return True


def remove_stale_folders(parent: str | os.PathLike | None = None) -> list[Path]:
    """Removes the `temporary_folder`s left by processes that died (killed
    before they could clean up); returns what it removed."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError):
        for path in parent.glob("keras_lottery_*"):
            found = re.fullmatch(r"keras_lottery_[a-z]+\.pid(\d+)\.\w+",
                                 path.name)
            if found and path.is_dir() and not _alive(int(found.group(1))):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


@contextlib.contextmanager
def temporary_folder(kind: str) -> Iterator[str]:
    """A temporary folder for work done with a child process, removed on
    exit; named after this process, so that one left by a killed process
    is removed by the next call (`remove_stale_folders`).

    Example:

    >>> import os
    >>> from keras_lottery._internal.child import temporary_folder
    >>> with temporary_folder("convert") as tmp:
    ...     os.path.basename(tmp).startswith(f"keras_lottery_convert.pid{os.getpid()}.")
    True
    """
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"`kind` is lowercase letters. Received: kind={kind!r}.")
    remove_stale_folders()
    with tempfile.TemporaryDirectory(
            prefix=f"keras_lottery_{kind}.pid{os.getpid()}.") as tmp:
        yield tmp


def _environment(env: Mapping[str, str | None] | None) -> dict[str, str]:
    """`os.environ` with `env` on top (None removes a variable) and this
    process's import path, so the child imports what the parent does."""
    merged = dict(os.environ)
    merged["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(str(key), None)
        else:
            merged[str(key)] = str(value)
    return merged


def tail(text: str | None, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a child's output."""
    return "\n".join((text or "").strip().splitlines()[-lines:])


def run_child(
    args: Sequence[str | os.PathLike],
    *,
    what: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float | None = None,
    error: type[Exception] = ChildError,
    fix: str = "Pass a larger `timeout`.",
) -> subprocess.CompletedProcess:
    """Runs `python *args` in a child process and waits for it.

    Args:
        args: The arguments after the Python executable, e.g.
            `["-m", "package.module", ...]` or `[script, "--seed", "0"]`.
        what: Who the child is, for error messages, e.g. `"The TensorFlow
            process converting the model"`.
        env: Environment variables on top of this process's; None as a
            value removes a variable.
        timeout: Seconds the child may run before it is stopped.
        error: The exception class raised on failure.
        fix: What to do when the child runs past `timeout`.

    Returns:
        The `subprocess.CompletedProcess`, with text `stdout`/`stderr`.

    Raises:
        ChildError: (or `error`) When the child exits with a nonzero status
            (quoting the end of its stderr, else stdout) or runs too long.

    Example:

    >>> run_child(["-c", "import os; print(os.environ['X'])"],
    ...           what="A test process", env={"X": "1"}).stdout
    '1\\n'
    """
    command = [sys.executable, *map(os.fspath, args)]
    try:
        done = subprocess.run(command, env=_environment(env),
                              capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        raise error(
            f"{what} took longer than {timeout:g}s and was stopped. {fix}"
        ) from expired
    if done.returncode != 0:
        raise error(
            f"{what} exited with status {done.returncode}. Its last output:\n"
            + tail(done.stderr or done.stdout)
        )
    return done


def call_child(
    args: Sequence[str | os.PathLike],
    request: Mapping,
    *,
    what: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float | None = None,
    error: type[Exception] = ChildError,
    fix: str = "Pass a larger `timeout`.",
) -> dict:
    """`run_child` with a JSON request in and a JSON response out.

    The child, `python *args request.json response.json`, must call
    `serve(handler)`. Arguments as in `run_child`.

    Returns:
        The dict the child's handler returned.

    Raises:
        ValueError, TypeError, ImportError, FileNotFoundError: When the
            handler raised one, with its message.
        ChildError: (or `error`) When the handler raised another exception,
            or the child failed or ran too long.

    Example:

    >>> code = ("import sys; from keras_lottery._internal.child import serve;"
    ...         "sys.exit(serve(lambda r: {'twice': 2 * r['x']}))")
    >>> call_child(["-c", code], {"x": 21}, what="A test process")
    {'twice': 42}
    """
    with temporary_folder("child") as tmp:
        asked, answer = Path(tmp, "request.json"), Path(tmp, "response.json")
        asked.write_text(json.dumps(dict(request)), encoding="utf-8")
        try:
            run_child([*args, asked, answer], what=what, env=env,
                      timeout=timeout, error=error, fix=fix)
        except error:
            if not answer.is_file():
                raise
        response = json.loads(answer.read_text(encoding="utf-8"))
    if "error" in response:
        raised = response["error"]
        kind = _KEPT_TYPES.get(raised["type"], error)
        raise kind(raised["message"])
    return response["result"]


def _plain(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def serve(handler: Callable[[dict], Mapping],
          argv: Sequence[str] | None = None) -> int:
    """The child's side of `call_child`: answers one request.

    Reads the request from `argv[-2]`, calls `handler(request)` and writes
    its result (NumPy values become lists), or the exception it raised, to
    `argv[-1]`.

    Args:
        handler: Takes the request dict, returns the response dict.
        argv: The child's arguments; `sys.argv` when None.

    Returns:
        The exit status for `sys.exit`: 0, or 1 when the handler raised.

    Example:

    >>> import sys
    >>> sys.exit(serve(lambda request: {"ok": True}))  # doctest: +SKIP
    """
    asked, answer = (sys.argv if argv is None else argv)[-2:]
    request = json.loads(Path(asked).read_text(encoding="utf-8"))
    try:
        text = json.dumps({"result": dict(handler(request))}, default=_plain)
        status = 0
    except Exception as raised:  # reported to the parent, which re-raises
        text = json.dumps({"error": {"type": type(raised).__name__,
                                     "message": str(raised)}})
        status = 1
    Path(answer).write_text(text, encoding="utf-8")
    return status


__all__ = ["ChildError", "call_child", "remove_stale_folders", "run_child",
           "serve", "tail", "temporary_folder"]
