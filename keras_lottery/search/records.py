"""`RoundRecord`: what one round of a search produced, as JSON-safe numbers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def clean(value):
    """Plain-Python, JSON-safe copy of a metric value (NaN and inf become
    None)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


@dataclasses.dataclass
class RoundRecord:
    """What one round of a search produced.

    Attributes:
        round: 0 for the dense network, then one per pruning step.
        remaining: Fraction of the prunable weights remaining (1.0 dense).
        layers: Per weight `"layer/weight"`: `[remaining, total]` counts.
        metrics: The `fit_fn` metrics (last epoch) and `eval_fn` metrics
            (prefixed `test_`).
        early_stop: Epoch (1-based) of the minimum validation loss, or the
            `"early_stop"` value `fit_fn` returned; None when unknown.
        controls: Per control (`"reinit"`, `"random_prune"`), its metrics.
        controls_early_stop: Per control, its early-stop epoch.
        seconds: Wall time of the round, controls included.
        early_bird: The epoch (1-based) at which `lottery_search`'s
            `early_bird` ended the round's training; None when it did not
            fire or was not used (and in files written before it existed).

    A record holds numbers, not a model: `SearchResult.ticket(record)`
    builds the model of its round, and `SearchResult.best_model()` the
    trained model of the best round.

    Example:

    >>> from keras_lottery import RoundRecord
    >>> record = RoundRecord(1, 0.8, {"fc/kernel": [80, 100]},
    ...                      {"accuracy": 0.97})
    >>> RoundRecord.from_dict(record.to_dict()) == record
    True
    """

    round: int
    remaining: float
    layers: dict[str, list[int]]
    metrics: dict[str, float]
    early_stop: int | None = None
    controls: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    controls_early_stop: dict[str, int | None] = dataclasses.field(
        default_factory=dict
    )
    seconds: float = 0.0
    early_bird: int | None = None

    def to_dict(self) -> dict:
        """The record as a JSON-safe dict (NaN as None)."""
        return clean(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RoundRecord:
        """Reads `to_dict` output; unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})
