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
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_lottery._internal.io import (
    atomic_save_arrays,
    atomic_write_text,
    load_arrays,
)
from keras_lottery.search.records import RoundRecord

ARGS_FILE = "search.json"
REWIND_FILE = "rewind.npz"
_ROUND_GLOB = "round_[0-9][0-9][0-9].json"


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

    def read_args(self) -> dict:
        """The saved arguments; a clear error where there is no search."""
        if not self.exists():
            raise FileNotFoundError(
                f"{self.path} is not a search directory: it has no "
                f"{ARGS_FILE}. Pass the `directory` given to lottery_search."
            )
        return json.loads((self.path / ARGS_FILE).read_text(encoding="utf-8"))

    def start(self, args: dict) -> bool:
        """Saves `args` for a new search, or checks them against the saved
        ones. True when a search with these arguments is here (resume).

        Raises:
            ValueError: The saved search has other arguments or another
                architecture (the message says what differs), or there are
                round files without arguments. Nothing is written then.
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
        atomic_write_text(self.path / ARGS_FILE, json.dumps(canonical, indent=2))
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

    def finished_rounds(self) -> list[int]:
        """The rounds whose record exists, in order."""
        return sorted(int(p.name[6:9]) for p in self.path.glob(_ROUND_GLOB))

    def read_record(self, round: int) -> RoundRecord:
        text = Path(f"{self._stem(round)}.json").read_text(encoding="utf-8")
        return RoundRecord.from_dict(json.loads(text))

    def read_records(self) -> list[RoundRecord]:
        return [self.read_record(r) for r in self.finished_rounds()]

    def read_masks(self, round: int) -> dict[str, np.ndarray] | None:
        """The masks of a round (bool, by `"layer/weight"`), or None."""
        path = Path(f"{self._stem(round)}.masks.npz")
        return load_arrays(path) if path.is_file() else None

    def read_weights(self, round: int) -> list[np.ndarray] | None:
        """`model.get_weights()` as the round ended, or None."""
        path = Path(f"{self._stem(round)}.weights.npz")
        return _listed(load_arrays(path)) if path.is_file() else None

    def save_round(self, record: RoundRecord, weights, masks) -> None:
        """Saves a finished round: masks, weights, then the record (the
        commit)."""
        stem = self._stem(record.round)
        atomic_save_arrays(f"{stem}.masks.npz",
                           {k: np.asarray(v).astype(bool) for k, v in masks.items()})
        atomic_save_arrays(f"{stem}.weights.npz", _numbered(weights))
        atomic_write_text(f"{stem}.json", json.dumps(record.to_dict(), indent=2))

    # -------------------------------------------------------------- rewind
    def save_rewind(self, values) -> None:
        atomic_save_arrays(self.path / REWIND_FILE, _numbered(values))

    def read_rewind(self) -> list[np.ndarray] | None:
        """The rewind point, or None if the search has not saved it."""
        path = self.path / REWIND_FILE
        return _listed(load_arrays(path)) if path.is_file() else None
