"""SearchResult and MergedResult tables: one row builder for both.

Plain Python on the records: run once, on JAX.
"""

from __future__ import annotations

import keras
import pytest

from keras_lottery.search.merge import merge_results
from keras_lottery.search.results import RoundRecord, SearchResult

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="tables do not depend on the backend: run once, on JAX",
)


def _search(accuracies, control_stops, seconds=2.0):
    return SearchResult([
        RoundRecord(
            i, 0.8 ** i, {}, {"accuracy": a, "loss": 1 - a}, early_stop=3 + i,
            controls={} if i == 0 else {
                "reinit": {"accuracy": a - 0.1, "loss": 1.1 - a}},
            controls_early_stop={} if i == 0 else {"reinit": control_stops[i]},
            seconds=seconds,
        )
        for i, a in enumerate(accuracies)
    ])


def test_a_merged_search_has_the_search_s_rows_plus_its_spread():
    one = _search([0.90, 0.92, 0.88], [None, 4, 5])
    rows, merged = one.rows(), merge_results([one]).rows()
    spread = ("n", "accuracy_std", "accuracy_min", "accuracy_max",
              "loss_std", "loss_min", "loss_max")
    for row, level in zip(rows, merged, strict=True):
        assert [k for k in level if k not in spread] == list(row)
        assert {k: v for k, v in level.items() if k not in spread} == (
            pytest.approx(row))
        assert level["n"] == 1 and level["accuracy_std"] == 0.0
    # The controls' columns: accuracy-like metrics only, and the early stop
    # (the mean across searches, rounded, as for the tickets).
    assert "reinit/accuracy" in rows[1] and "reinit/loss" not in rows[1]
    two = merge_results([one, _search([0.94, 0.96, 0.90], [None, 6, None])])
    assert [r["reinit/early_stop"] for r in two.rows()] == [None, 5, 5]
    assert [r["early_stop"] for r in two.rows()] == [3, 4, 5]
    assert "reinit/early_stop" in two.table().splitlines()[0]


def test_a_search_without_metrics_still_has_rows():
    bare = SearchResult([RoundRecord(0, 1.0, {}, {}, seconds=1.0),
                         RoundRecord(1, 0.5, {}, {}, seconds=1.0)])
    assert bare.rows()[1] == {"round": 1, "remaining_percent": 50.0,
                              "early_stop": None, "seconds": 1.0}
    assert merge_results([bare, bare]).rows()[1]["n"] == 0
    assert "50.00" in bare.table()
