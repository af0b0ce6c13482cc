"""What a search kept to build its tickets: masks, weights, rewind point.

A search without a directory keeps them in memory; one with a directory
keeps them in its files (`search/directory.py`), read when needed. A
result read back from disk holds no model: the user passes one of the
searched architecture (its layer names may differ: masks and weights are
matched by order).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from keras_lottery.core.copy import copy_model
from keras_lottery.core.model import check_model
from keras_lottery.pruning.masks import set_masks
from keras_lottery.search.directory import SearchDirectory


class TicketStore:
    """The masks, trained weights and rewind point of a search's rounds.

    Args:
        masks: Per round, the masks by `"layer/weight"` (kept in memory).
        weights: Per round, `model.get_weights()` as it ended.
        rewind_weights: The rewind point, in `model.trainable_weights` order.
        model: The searched (wrapped) model, copied to build tickets.
        directory: The search directory, read for what is not in memory.
        origin: `"json"` for a result read with `SearchResult.from_json`
            (for the messages), else None.
    """

    def __init__(
        self,
        *,
        masks: dict[int, dict[str, np.ndarray]] | None = None,
        weights: dict[int, list[np.ndarray]] | None = None,
        rewind_weights: list[np.ndarray] | None = None,
        model: keras.Model | None = None,
        directory: str | os.PathLike | None = None,
        origin: str | None = None,
    ):
        self.masks = masks if masks is not None else {}
        self.weights = weights if weights is not None else {}
        self.rewind_weights = rewind_weights
        self.model = model
        self.directory = None if directory is None else Path(directory)
        self.origin = origin

    def _store(self) -> SearchDirectory | None:
        return None if self.directory is None else SearchDirectory(self.directory)

    def _missing(self, what: str, round: int | None = None) -> ValueError:
        """The error for what this search did not keep, saying where to get
        it."""
        where = "" if round is None else f" of round {round}"
        if self.directory is not None:
            return ValueError(
                f"The {what}{where} are missing from the search directory "
                f"{self.directory} (the round did not finish, or its files "
                "were removed)."
            )
        if self.origin == "json":
            return ValueError(
                f"The {what}{where} are not in this result: to_json keeps "
                "the numbers only. Read the search directory instead, "
                "SearchResult.load(directory, model=...) (run lottery_search "
                "with directory=... to keep masks and weights on disk)."
            )
        return ValueError(f"The {what}{where} were not kept in this result.")

    def round_masks(self, round: int) -> dict[str, np.ndarray]:
        """The masks of a round, as float32 0/1 arrays."""
        store = self._store()
        if round not in self.masks and store is not None:
            found = store.read_masks(round)
            if found is not None:
                self.masks[round] = found
        if round not in self.masks:
            raise self._missing("masks", round)
        return {k: v.astype("float32") for k, v in self.masks[round].items()}

    def trained_weights(self, round: int) -> list[np.ndarray]:
        """`model.get_weights()` as the round ended."""
        weights = self.weights.get(round)
        store = self._store()
        if weights is None and store is not None:
            weights = store.read_weights(round)
        if weights is None:
            raise self._missing("trained weights", round)
        return weights

    def rewind_point(self) -> list[np.ndarray]:
        """The rewind point, in `model.trainable_weights` order."""
        values = self.rewind_weights
        store = self._store()
        if values is None and store is not None:
            values = store.read_rewind()
        if values is None:
            raise self._missing("rewind weights")
        return values

    def build(
        self, round: int, *, trained: bool, model: keras.Model | None = None
    ) -> keras.Model:
        """A copy of `model` (or the searched model) with the round's masks
        and its trained weights or the rewind point."""
        base = model if model is not None else self.model
        if base is None:
            raise ValueError(
                "This result holds no model to build the ticket from (it was "
                "read from disk). Pass a wrapped model of the searched "
                f"architecture: result.ticket({round}, model=make_model()), "
                "or SearchResult.load(directory, model=make_model())."
            )
        masks = self.round_masks(round)
        values = self.trained_weights(round) if trained else self.rewind_point()
        copy = copy_model(check_model(base, what="model"))
        # The round's masks first: every weight written afterwards is masked
        # by them (a pruned weight cannot be written back).
        set_masks(copy, masks, by="order")
        if trained:
            copy.set_weights(values)
        else:
            for variable, value in zip(copy.trainable_weights, values):
                variable.assign(value)
        return copy
