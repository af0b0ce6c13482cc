"""The search directory: the one reader and writer of its files.

`lottery_search(..., directory=...)` writes, and `SearchResult` reads:

- `search.json`: the search's arguments, and the shape of every prunable
  weight (keyed by `"layer/weight"`, in the model's order);
- `rewind.npz`: the rewind point (`w0`, `w1`, ... in the order of
  `model.trainable_weights`);
- per finished round `NNN`: `round_NNN.masks.npz` (the masks, by
  `"layer/weight"`, in order), `round_NNN.weights.npz` (`model.get_weights()`
  as `w0`, `w1`, ...) and `round_NNN.json` (the `RoundRecord`), written
  last: a round counts as finished once its record exists.

Every file is written atomically (`keras_lottery._internal.io`). A search
is matched to a model by its architecture, the order and shapes of its
prunable weights, not by layer names: Keras names unnamed layers per
process (`dense`, `dense_1`, ...), so the same model built again gets new
names.

Integrity: `search.json` holds a random search id; each `round_NNN.json`
holds, under `"integrity"`, that id, its round and the SHA-256 of its two
`.npz` files (round 0: of `rewind.npz` too). The record is the round's
manifest, written last, and an existing one is removed before a round is
written again, so a reader sees all of a round or none of it. On reading,
a round of another search, at another position, or with a file that does
not match its checksum is refused by name (`RoundDamagedError`); a damaged last
round counts as unfinished (resume redoes it, with a warning). Searches
written before ids existed have none and are read as before. One process
writes a directory at a time (`lock`, `keras_lottery._internal.lock`); of
several JAX processes running one search, process 0 (`open`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from keras_lottery._internal.io import (
    BadFileError,
    atomic_save_arrays,
    atomic_write_text,
    file_digest,
    load_arrays,
    probe_writable,
    read_json,
)
from keras_lottery._internal.lock import FolderLock
from keras_lottery._internal.processes import WriterError, WriterSync
from keras_lottery.search.records import RoundRecord

ARGS_FILE = "search.json"
REWIND_FILE = "rewind.npz"
_ROUND_GLOB = "round_[0-9][0-9][0-9].json"
ID_KEY = "search_id"
CHECK_KEY = "integrity"


class RoundDamagedError(BadFileError):
    """A round's file is damaged, missing, or belongs to another search or
    round (the message names it and the fix).

    Attributes:
        path: The file.
        round: The round.
        foreign: The file is whole but belongs to another search or round
            (never replaced by a resumed search); else it is damaged.
    """

    def __init__(self, message: str, path, round: int, foreign: bool = False):
        super().__init__(message, path)
        self.round, self.foreign = round, foreign


def _listed(data: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [data[f"w{i}"] for i in range(len(data))]


def _numbered(values) -> dict[str, np.ndarray]:
    return {f"w{i}": np.asarray(v) for i, v in enumerate(values)}


def architecture_difference(saved: dict, now: dict) -> str | None:
    """How two `{"layer/weight": shape}` dicts differ as architectures
    (the order and shapes of the weights; names may differ), or None."""
    a, b = list(saved.items()), list(now.items())
    if len(a) != len(b):
        return (
            f"the saved search has {len(a)} prunable weights "
            f"{[list(s) for _, s in a]}, this model has {len(b)} "
            f"{[list(s) for _, s in b]}"
        )
    differ = [
        f"prunable weight {i} ('{ka}' saved, '{kb}' now) has shape "
        f"{list(sa)} saved vs {list(sb)} now"
        for i, ((ka, sa), (kb, sb)) in enumerate(zip(a, b))
        if list(sa) != list(sb)
    ]
    if not differ:
        return None
    more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
    return "; ".join(differ[:3]) + more


class SearchDirectory:
    """The files of one search (see the module docstring for the layout).

    Args:
        path: The directory.

    Example:

    >>> from keras_lottery.search.directory import SearchDirectory
    >>> store = SearchDirectory("search")
    >>> store.exists(), store.finished_rounds()
    (False, [])
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SearchDirectory({os.fspath(self.path)!r})"

    # ---------------------------------------------------------- arguments
    def exists(self) -> bool:
        """Whether a search was started here (its `search.json` exists)."""
        return (self.path / ARGS_FILE).is_file()

    @classmethod
    def holding(cls, args: dict, *paths) -> Path | None:
        """The first of `paths` that holds a search with these arguments."""
        for path in paths:
            if path is not None and cls(path).exists() and (
                cls(path).read_args() == args
            ):
                return Path(path)
        return None

    def refuse_overwrite(self, path: str | os.PathLike) -> None:
        """A clear error if writing `path` would overwrite a file of this
        search (`result.to_json("search.json")` inside its directory)."""
        path = Path(path)
        if self.exists() and path.resolve().parent == self.path.resolve() and (
            path.name in (ARGS_FILE, REWIND_FILE) or path.name.startswith("round_")
        ):
            raise ValueError(
                f"{path} is a file of the search directory {self.path}; "
                "writing it would break the search. Choose another file name, "
                "e.g. result.json."
            )

    def _read_saved(self) -> dict:
        if not self.exists():
            raise FileNotFoundError(
                f"{self.path} is not a search directory: it has no "
                f"{ARGS_FILE}. Pass the `directory` given to lottery_search."
            )
        saved = read_json(
            self.path / ARGS_FILE, "the search's arguments",
            "Without it the search cannot be read or resumed: restore it "
            "from a backup, or start the search again in a new directory.")
        if not isinstance(saved, dict):
            raise BadFileError(
                f"{self.path / ARGS_FILE} is not a search's arguments: it holds "
                f"a {type(saved).__name__}, not a JSON object. Restore it from "
                "a backup, or start the search again in a new directory.",
                self.path / ARGS_FILE)
        return saved

    def read_args(self) -> dict:
        """The saved arguments; a clear error where there is no search or
        its `search.json` is damaged."""
        saved = self._read_saved()
        saved.pop(ID_KEY, None)
        return saved

    def search_id(self) -> str | None:
        """The search's id (None for a search saved before ids existed)."""
        return self._read_saved().get(ID_KEY)

    @contextlib.contextmanager
    def lock(self, what: str = "lottery_search"):
        """Creates the directory (a write probe first: a file in the way or
        a read-only folder is a clear error before any training) and holds
        its one-writer lock (`FolderLocked` if another process has it)."""
        probe_writable(self.path, f"{what}(directory={os.fspath(self.path)!r})")
        with FolderLock(self.path, what):
            yield self

    def open(self, args: dict, sync: WriterSync, stack: contextlib.ExitStack,
             what: str = "lottery_search") -> bool:
        """`lock` (held until `stack` closes) and `start`, on the writer
        only: process 0 of several JAX processes, which all pass the same
        directory (`keras_lottery._internal.processes`). The others wait
        for it, then check that they read the search it started (shared
        storage). Returns `start`'s answer on every process.

        Raises:
            FolderLockedError, OSError: The directory cannot be written
                (every process raises it).
            WriterError: Process 0 failed or did not answer in time, or
                this process does not see the search process 0 started.
            ValueError: As `start`.
        """
        sync.on_writer("lock", lambda: stack.enter_context(self.lock(what))
                       and None)
        opened = sync.on_writer("start", lambda: {
            "resume": self.start(args, what), "id": self.search_id()})
        if not sync.writer and (
            not self.exists() or self.search_id() != opened["id"]
        ):
            raise WriterError(
                f"{what} on process {sync.index} of {sync.count}: {self.path} "
                f"does not hold the search that process 0 started there (id "
                f"{opened['id']}). Every process passes the directory process "
                "0 writes and reads it: put it on storage they all share (one "
                "machine, or a shared file system)."
            )
        return opened["resume"]

    def start(self, args: dict, what: str = "lottery_search") -> bool:
        """Saves `args` for a new search, or checks them against the saved
        ones. True when a search with these arguments is here (resume).

        Raises:
            ValueError: The saved search has other arguments or another
                architecture (the message says what differs), or there are
                round files without arguments. Nothing is written then.
            OSError: `search.json` could not be written (a full disk, a
                permission): the message names it, with the fix; no part
                of it is left behind (`lottery_search` raises it as a
                `SearchError`, as it does for the files of a round).
        """
        canonical = json.loads(json.dumps(args))
        if self.exists():
            self._check_same(self.read_args(), canonical)
            return True
        if any(self.path.glob(_ROUND_GLOB)):
            raise ValueError(
                f"{self.path} holds round files but no {ARGS_FILE}; refusing "
                "to overwrite them. Choose an empty directory."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        saved = {ID_KEY: uuid.uuid4().hex, **canonical}
        try:
            atomic_write_text(self.path / ARGS_FILE, json.dumps(saved, indent=2))
        except OSError as error:
            failed = OSError(
                f"{what} could not save the search's arguments ({ARGS_FILE}) "
                f"in {self.path}: {type(error).__name__}: {error}. The search "
                "did not start; free disk space (or fix the permissions) and "
                "rerun.")
            failed.errno = error.errno
            raise failed from error
        return False

    def _check_same(self, saved: dict, now: dict) -> None:
        keys = sorted(k for k in set(saved) | set(now)
                      if k != "weights" and saved.get(k) != now.get(k))
        if keys:
            details = ", ".join(
                f"{k}: saved {saved.get(k)!r} vs now {now.get(k)!r}" for k in keys
            )
            raise ValueError(
                f"{self.path} holds a search with different arguments "
                f"({details}). Resume it with the same arguments, or choose "
                "another directory; nothing was overwritten."
            )
        differ = architecture_difference(saved.get("weights") or {},
                                         now.get("weights") or {})
        if differ:
            raise ValueError(
                f"{self.path} holds a search of a model of another "
                f"architecture: {differ}. Resume it with a model built as the "
                "first one was (layer names may differ; the order and shapes "
                "of the prunable weights may not), or choose another "
                "directory; nothing was overwritten."
            )


    # -------------------------------------------------------------- rounds
    def _stem(self, round: int) -> Path:
        return self.path / f"round_{round:03d}"

    def _round_files(self) -> list[int]:
        return sorted(int(p.name[6:9]) for p in self.path.glob(_ROUND_GLOB))

    def _damaged(self, path, round: int, what: str,
                 foreign: bool = False) -> RoundDamagedError:
        return RoundDamagedError(f"{path.name} in {self.path} {what}", path, round,
                            foreign)

    def check_round(self, round: int, previous: RoundRecord | None = None,
                    search_id: str | None = None,
                    files: bool = True) -> RoundRecord:
        """The record of a round, after checking that the round is whole:
        its record belongs to this search at this position, and each of its
        files exists and matches its checksum (rounds saved before ids
        existed: their record only). `RoundDamagedError` names the bad file."""
        path = Path(f"{self._stem(round)}.json")
        try:
            data = read_json(path, f"the record of round {round}")
        except BadFileError as error:
            raise RoundDamagedError(str(error), path, round) from None
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise self._damaged(path, round, "is not a round record.")
        check = data.get(CHECK_KEY)
        if check is not None and check.get(ID_KEY) != search_id:
            raise self._damaged(
                path, round, f"belongs to another search (id "
                f"{check.get(ID_KEY)}; this search's id is {search_id}).", True)
        if check is None and search_id is not None:
            raise self._damaged(path, round, "belongs to another search (it "
                                "has no search id; this search's id is "
                                f"{search_id}).", True)
        position = data.get("round") if check is None else check.get("round")
        if position != round or data.get("round") != round:
            raise self._damaged(path, round, f"is the record of round "
                                f"{position}, not of round {round}.", True)
        record = RoundRecord.from_dict(data)
        if previous is not None and record.remaining > previous.remaining + 1e-9:
            raise self._damaged(
                path, round, f"does not follow round {previous.round}: "
                f"{100 * record.remaining:.2f}% of weights remaining after "
                f"{100 * previous.remaining:.2f}% (a round of another search).",
                True)
        listed = (check or {}).get("files", {}) if files else {}
        for name, digest in listed.items():
            file = self.path / name
            if not file.is_file():
                raise self._damaged(file, round, "is missing.")
            if file_digest(file) != digest:
                raise self._damaged(file, round, "is damaged: checksum "
                                    "mismatch (changed after it was saved).")
        return record

    def finished_rounds(self, upto: int | None = None) -> list[int]:
        """The finished rounds (their records checked, see `check_round`;
        not their files, so that this stays cheap), in order, up to round
        `upto` if given. A damaged last round is left out with a
        warning (it counts as unfinished; a resumed search redoes it).

        Raises:
            RoundDamagedError: An earlier round is damaged, missing or foreign;
                the message names the file and how to read the rounds
                before it.
        """
        return [r.round for r in self.read_records(upto, files=False)]

    def read_records(self, upto: int | None = None,
                     files: bool = True) -> list[RoundRecord]:
        """The records of `finished_rounds(upto)`; with `files`, each
        round's files are checked against their checksums too."""
        rounds = [r for r in self._round_files() if upto is None or r <= upto]
        if not rounds:
            return []
        search_id = self.search_id()
        records: list[RoundRecord] = []
        for round in range(rounds[-1] + 1):
            try:
                if round not in rounds:
                    raise self._damaged(Path(f"{self._stem(round)}.json"), round,
                                        "is missing.")
                records.append(self.check_round(
                    round, records[-1] if records else None, search_id, files))
            except RoundDamagedError as error:
                if round == rounds[-1] and not error.foreign:
                    warnings.warn(
                        f"{error} Round {round} counts as unfinished: "
                        "lottery_search(directory=...) redoes it.", stacklevel=3)
                    break
                read = (f"SearchResult.load(directory, upto={round - 1}) "
                        f"reads rounds 0-{round - 1}." if round else
                        "No round of it can be read.")
                move = (f"move {error.path.name} out of the directory" if
                        error.foreign and round == rounds[-1] else
                        f"move round_{round:03d}.* and the later rounds' files "
                        "out of the directory")
                raise RoundDamagedError(
                    f"{error} {read} To resume, restore the file, or {move} "
                    "and rerun lottery_search to redo those rounds.",
                    error.path, round, error.foreign) from None
        return records

    def _checked(self, round: int, name: str) -> Path | None:
        """`name` of a finished round, checked against its checksum."""
        path = self.path / name
        if not path.is_file():
            return None
        record = Path(f"{self._stem(round)}.json")
        if record.is_file():
            check = read_json(record, f"the record of round {round}").get(
                CHECK_KEY) or {}
            digest = check.get("files", {}).get(name)
            if digest is not None and file_digest(path) != digest:
                raise self._damaged(path, round, "is damaged: checksum "
                                    "mismatch (changed after it was saved).")
        return path

    def read_masks(self, round: int) -> dict[str, np.ndarray] | None:
        """The masks of a round (bool, by `"layer/weight"`), or None."""
        path = self._checked(round, f"round_{round:03d}.masks.npz")
        return None if path is None else load_arrays(
            path, f"the masks of round {round}")

    def read_weights(self, round: int) -> list[np.ndarray] | None:
        """`model.get_weights()` as the round ended, or None."""
        path = self._checked(round, f"round_{round:03d}.weights.npz")
        return None if path is None else _listed(load_arrays(
            path, f"the weights of round {round}"))

    def save_round(self, record: RoundRecord, weights, masks) -> None:
        """Saves a finished round: masks, weights, then the record with the
        search id and the files' checksums (the commit). A record already
        there is removed first, so the round is never half old, half new."""
        stem, round = self._stem(record.round), record.round
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{stem}.json")
        files = [f"{stem}.masks.npz", f"{stem}.weights.npz"]
        atomic_save_arrays(files[0], {k: np.asarray(v).astype(bool)
                                      for k, v in masks.items()})
        atomic_save_arrays(files[1], _numbered(weights))
        if round == 0 and (self.path / REWIND_FILE).is_file():
            files.append(self.path / REWIND_FILE)
        check = {ID_KEY: self.search_id(), "round": round,
                 "files": {Path(f).name: file_digest(f) for f in files}}
        data = {**record.to_dict(), CHECK_KEY: check}
        atomic_write_text(f"{stem}.json", json.dumps(data, indent=2))

    # -------------------------------------------------------------- rewind
    def save_rewind(self, values) -> None:
        atomic_save_arrays(self.path / REWIND_FILE, _numbered(values))

    def read_rewind(self) -> list[np.ndarray] | None:
        """The rewind point, or None if the search has not saved it."""
        path = self._checked(0, REWIND_FILE)
        return None if path is None else _listed(load_arrays(
            path, "the search's rewind point"))
