"""Files and tables: the one atomic writer and the one text-table formatter.

Every file keras-lottery writes (search rounds, results, plots, TFLite
exports) goes through `atomic_write`, so a reader never sees half a file:
the bytes go to a temporary file in the same directory, which is flushed,
synced to disk and renamed over the target (`os.replace`, atomic on POSIX
and Windows). A new file gets the permissions `open()` would give it (the
process umask); a file written over keeps its mode. Files are read back
through `read_json` and `load_arrays`, whose errors name the file and say
it is damaged (`BadFileError`). Every aligned text table (search rounds,
merged trials, reports) goes through `text_table`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_lottery.errors import KerasLotteryError

_UMASK_LOCK = threading.Lock()


class BadFileError(KerasLotteryError, ValueError):
    """A file keras-lottery reads is damaged, truncated, of another kind, or
    belongs to something else; the message names the file and the fix.

    Attributes:
        path: The file.

    Example:

    >>> from keras_lottery._internal.io import BadFileError, read_json
    >>> _ = open("bad.json", "w").write('{"a": ')
    >>> try:
    ...     read_json("bad.json", "a test file")
    ... except BadFileError as error:
    ...     print(error.path.name)
    bad.json
    """

    def __init__(self, message: str, path: str | os.PathLike):
        super().__init__(message)
        self.path = Path(path)


def _new_file_mode(path: Path) -> int:
    """The mode of the file `path` replaces, else `0o666` less the umask
    (what `open(path, "w")` gives a new file)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


# ------------------------------------------------------------ atomic files
def atomic_write(
    path: str | os.PathLike, write: Callable[[io.BufferedWriter], object]
) -> Path:
    """Writes a file so that it is either complete or absent.

    Args:
        path: The file to write; its directory must exist.
        write: `write(f)` fills the binary file object `f` (a temporary file
            in the same directory, then flushed, synced and renamed over
            `path`). If it raises, `path` is left as it was.

    Returns:
        `path`, as a `Path`.

    Example:

    >>> from keras_lottery._internal.io import atomic_write
    >>> atomic_write("out.bin", lambda f: f.write(b"ok")).read_bytes()
    b'ok'
    """
    path = Path(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, content: bytes) -> Path:
    """Writes `content` to `path` atomically (see `atomic_write`).

    Example:

    >>> from keras_lottery._internal.io import atomic_write_bytes
    >>> atomic_write_bytes("model.bin", b"\\x00\\x01").stat().st_size
    2
    """
    return atomic_write(path, lambda f: f.write(bytes(content)))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` as UTF-8 to `path` atomically (see `atomic_write`).

    Example:

    >>> from keras_lottery._internal.io import atomic_write_text
    >>> atomic_write_text("note.txt", "héllo").read_text(encoding="utf-8")
    'héllo'
    """
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_save_arrays(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray]
) -> Path:
    """Saves named arrays as an `.npz` file atomically, in their order.

    Example:

    >>> import numpy as np
    >>> from keras_lottery._internal.io import atomic_save_arrays, load_arrays
    >>> _ = atomic_save_arrays("a.npz", {"w0": np.ones(2), "w1": np.zeros(1)})
    >>> {k: v.tolist() for k, v in load_arrays("a.npz").items()}
    {'w0': [1.0, 1.0], 'w1': [0.0]}
    """
    return atomic_write(path, lambda f: np.savez(f, **dict(arrays)))


def load_arrays(path: str | os.PathLike, what: str = "an array file",
                fix: str = "") -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file, by name, in the order they were saved.

    Pickled objects are never loaded: a file that is not a plain `.npz`
    (garbage, truncated, or holding objects) is a `BadFileError` naming
    `path` and `what` it is, followed by `fix`.

    Example:

    >>> import numpy as np
    >>> from keras_lottery._internal.io import atomic_save_arrays, load_arrays
    >>> _ = atomic_save_arrays("b.npz", {"w0": np.arange(3)})
    >>> load_arrays("b.npz")["w0"].tolist()
    [0, 1, 2]
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds a single array, not named arrays")
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        reason = ("it is neither a .npz nor a .npy file (keras-lottery never "
                  "loads pickled data)" if "pickle" in str(error)
                  else f"{type(error).__name__}: {error}".rstrip("."))
        raise BadFileError(
            f"{path} ({what}) is damaged or not a NumPy .npz file: {reason}."
            + (f" {fix}" if fix else ""), path) from None


def read_json(path: str | os.PathLike, what: str = "a JSON file",
              fix: str = ""):
    """The JSON value in `path`; a `BadFileError` naming the file (and
    `what` it is, then `fix`) when it is truncated or not JSON.

    Example:

    >>> from keras_lottery._internal.io import atomic_write_text, read_json
    >>> _ = atomic_write_text("ok.json", '{"a": 1}')
    >>> read_json("ok.json")
    {'a': 1}
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise BadFileError(
            f"{path} ({what}) is damaged: it is truncated or not JSON "
            f"({error})." + (f" {fix}" if fix else ""), path) from None


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB pieces).

    Example:

    >>> from keras_lottery._internal.io import atomic_write_bytes, file_digest
    >>> file_digest(atomic_write_bytes("x.bin", b""))[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def probe_writable(directory: str | os.PathLike, what: str,
                   create: bool = True) -> Path:
    """Checks, before any long work, that files can be written in
    `directory` (creating it, or not): a clear error naming it otherwise.

    Args:
        directory: The folder that will be written.
        what: Who asks, for the message, e.g. `"lottery_search(directory=...)"`.
        create: Create the folder if it is missing; else that is an error.

    Raises:
        NotADirectoryError: `directory` or a parent is a file.
        FileNotFoundError: `directory` is missing and `create` is False.
        PermissionError: Files cannot be created there.

    Example:

    >>> from keras_lottery._internal.io import probe_writable
    >>> probe_writable("out/models", "export_tflite").is_dir()
    True
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"{what}: {directory} is a file, not a folder. Received: "
            f"{directory}. Choose a folder (it is created if missing).")
    if not create and not directory.exists():
        raise FileNotFoundError(
            f"{what}: the folder {directory} does not exist. Create it first, "
            "or choose an existing folder.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise NotADirectoryError(
            f"{what}: a parent of {directory} is a file, not a folder. "
            "Choose another folder.") from None
    except OSError as error:
        raise PermissionError(
            f"{what}: cannot write files in {directory} "
            f"({type(error).__name__}: {error.strerror or error}). Choose a "
            "folder you can write, or change its permissions.") from None
    return directory


# ------------------------------------------------------------------ tables
def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Dicts with the same keys as CSV text, a header line first ("" for
    no rows; None as an empty cell)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def format_cell(value: Any, spec: str | None = None) -> str:
    """One table cell: None as `-`, floats with 4 decimals (or `spec`),
    anything else as `str`."""
    if value is None:
        return "-"
    if spec is not None:
        return format(value, spec)
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def text_table(
    rows: Sequence[Mapping[str, Any] | Sequence[Any]],
    headers: Sequence[str] | None = None,
    *,
    formats: Mapping[str, str] | None = None,
    titles: Mapping[str, str] | None = None,
    left: Collection[str | int] = (),
    total: bool = False,
    empty: str = "(no rows)",
) -> str:
    """`rows` as an aligned text table: header, rule, one line per row.

    Args:
        rows: Dicts with the same keys (the columns, in order), or sequences
            of cells with `headers` given.
        headers: The column names; the first row's keys when None.
        formats: Per column, a format spec for its values
            (`{"seconds": ".1f"}`); see `format_cell` for the others.
        titles: Per column, the title shown instead of its name.
        left: Columns (names or indices) aligned left; the others align
            right.
        total: The last row is a total: a rule above it too.
        empty: What an empty table shows.

    Returns:
        The table, lines joined by newlines, without a trailing newline.

    Example:

    >>> from keras_lottery._internal.io import text_table
    >>> print(text_table([{"layer": "fc1", "kept": 0.5, "note": None},
    ...                   {"layer": "out", "kept": 0.75, "note": "head"}],
    ...                  left=["layer"]))
    layer    kept  note
    -------------------
    fc1    0.5000     -
    out    0.7500  head
    """
    if not rows:
        return empty
    if headers is None:
        first = rows[0]
        if not isinstance(first, Mapping):
            raise TypeError(
                "text_table needs `headers` for rows that are not dicts. "
                f"Received a first row of type {type(first).__name__}."
            )
        headers = list(first)
    headers = list(headers)
    formats, titles = dict(formats or {}), dict(titles or {})
    cells = []
    for row in rows:
        values = (
            [row.get(h) for h in headers] if isinstance(row, Mapping) else list(row)
        )
        if len(values) != len(headers):
            raise ValueError(
                f"A row has {len(values)} cells for {len(headers)} columns "
                f"{headers}. Received: {row!r}"
            )
        cells.append([format_cell(v, formats.get(h)) for h, v in zip(headers, values)])
    names = [titles.get(h, str(h)) for h in headers]
    widths = [max(len(names[i]), *(len(c[i]) for c in cells))
              for i in range(len(headers))]
    lefts = {i for i, h in enumerate(headers) if h in left or i in left}

    def line(row):
        return "  ".join(
            c.ljust(w) if i in lefts else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    head = line(names)
    rule = "-" * len(head)
    body = [line(c) for c in cells]
    if total and len(body) > 1:
        body = [*body[:-1], rule, body[-1]]
    return "\n".join([head, rule, *body])
