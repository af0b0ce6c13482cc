"""Many trials: run_trials in fresh processes, merge_results mean and spread."""

from __future__ import annotations

import json
import textwrap

import keras
import numpy as np
import pytest
from harness import tiny_search

import keras_lottery as kl
from keras_lottery.search.merge import MergedResult, merge_results
from keras_lottery.search.results import RoundRecord, SearchResult
from keras_lottery.search.trials import run_trials


def _search(accuracies, remaining=(1.0, 0.8, 0.64), seed=None, controls=None):
    rounds = [
        RoundRecord(
            i, r, {}, {"accuracy": a, "loss": 1 - a},
            early_stop=3 + i, seconds=1.0,
            controls={} if controls is None or i == 0
            else {"reinit": {"accuracy": controls[i]}},
        )
        for i, (r, a) in enumerate(zip(remaining, accuracies))
    ]
    return SearchResult(rounds, {"seed": seed, "rate": 0.2})


# ------------------------------------------------------------------ merge
def test_merge_gives_mean_and_spread_per_level():
    merged = merge_results([
        _search([0.90, 0.92, 0.88], seed=0, controls=[None, 0.80, 0.70]),
        _search([0.94, 0.96, 0.90], seed=1, controls=[None, 0.84, 0.74]),
        _search([0.92, 0.94, 0.95], seed=2, controls=[None, 0.82, 0.72]),
    ])
    assert isinstance(merged, MergedResult)
    assert [r.remaining for r in merged.rounds] == [1.0, 0.8, 0.64]
    np.testing.assert_allclose(
        [r.metrics["accuracy"] for r in merged.rounds], [0.92, 0.94, 0.91]
    )
    stats = merged.stats[2]["accuracy"]
    assert stats["n"] == 3
    assert (stats["min"], stats["max"]) == (0.88, 0.95)
    assert stats["std"] == pytest.approx(np.std([0.88, 0.90, 0.95], ddof=1))
    assert merged.spread("accuracy") == [(0.90, 0.94), (0.92, 0.96), (0.88, 0.95)]
    assert merged.spread("accuracy", "reinit") == [None, (0.80, 0.84), (0.70, 0.74)]
    assert merged.args["seeds"] == [0, 1, 2] and merged.args["rate"] == 0.2
    assert merged.best_ticket(tolerance=0.02).round == 2

    row = merged.rows()[2]
    assert row["n"] == 3 and row["accuracy_max"] == 0.95
    assert row["reinit/accuracy"] == pytest.approx(0.72)
    table = merged.table()
    assert "0.9100 ± 0.0361" in table and " n " in table.splitlines()[0]
    assert "accuracy_min" not in table
    csv = merged.to_csv()
    assert "accuracy_std" in csv.splitlines()[0]
    assert json.loads(merged.to_json())["stats"][2]["accuracy"]["n"] == 3


def test_merged_plot_draws_the_spread(tmp_path):
    a, b = _search([0.90, 0.92, 0.88]), _search([0.94, 0.96, 0.90])
    merged = merge_results([a, b])
    means_only = SearchResult(merged.rounds)  # the same lines, no spread
    with_bars = merged.plot(tmp_path / "merged.png")
    without = means_only.plot(tmp_path / "means.png")
    assert with_bars.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert with_bars.read_bytes() != without.read_bytes()
    # One search alone has no spread and plots as before.
    assert a.spread("accuracy") == [None, None, None]


def test_merge_groups_rounds_by_sparsity_level():
    merged = merge_results([
        _search([0.9, 0.8]),
        _search([0.7, 0.6, 0.5]),
        _search([0.8, 0.7], remaining=(1.0, 0.5)),
    ])
    assert [r.remaining for r in merged.rounds] == [1.0, 0.8, 0.64, 0.5]
    assert [row["n"] for row in merged.rows()] == [3, 2, 1, 1]
    assert merged.spread("accuracy")[2:] == [None, None]


def test_merge_reads_directories_and_json_files(tmp_path):
    model = kl.wrap(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile("sgd", "mse")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 2), "float32")
    directory = tmp_path / "search"
    result = kl.lottery_search(
        model, lambda m: m.fit(x, y, verbose=0), rounds=1,
        directory=directory, seed=0, verbose=0,
    )
    result.to_json(tmp_path / "search.json")
    merged = merge_results([directory, tmp_path / "search.json", result])
    assert [row["n"] for row in merged.rows()] == [3, 3]
    assert merged.spread("loss") == [
        (result[0].metrics["loss"],) * 2, (result[1].metrics["loss"],) * 2
    ]


def test_merge_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        merge_results([])
    with pytest.raises(TypeError, match="list of results"):
        merge_results(_search([0.9]))
    with pytest.raises(TypeError, match=r"results\[1\] of type int"):
        merge_results([_search([0.9]), 3])
    with pytest.raises(FileNotFoundError, match="neither a search directory"):
        merge_results([tmp_path / "missing"])
    with pytest.raises(ValueError, match=r"results\[0\] has no finished rounds"):
        merge_results([SearchResult([])])


# -------------------------------------------------------------------- run
_trial = tiny_search  # a real 2-round search, run in fresh processes


def test_run_trials_runs_each_seed_in_its_own_process(tmp_path):
    results = run_trials(_trial, [3, 7], tmp_path / "runs", processes=2)
    assert [r.args["seed"] for r in results] == [3, 7]
    assert [r.directory.name for r in results] == ["seed_3", "seed_7"]
    # The same trial in this process gives the same search: the processes
    # add nothing and lose nothing.
    _trial(3, tmp_path / "here")
    here = SearchResult.load(tmp_path / "here")
    for r in range(3):
        for key, mask in here.masks(r).items():
            np.testing.assert_array_equal(results[0].masks(r)[key], mask)
    assert results[0][2].metrics["loss"] == pytest.approx(
        here[2].metrics["loss"], rel=1e-5
    )
    # Different seeds, different initial weights, different tickets.
    assert any(
        not np.array_equal(results[0].masks(2)[k], results[1].masks(2)[k])
        for k in here.masks(2)
    )
    merged = merge_results(results)
    assert [row["n"] for row in merged.rows()] == [2, 2, 2]


def test_run_trials_script_failures_name_the_seed(tmp_path):
    script = tmp_path / "trial.py"
    script.write_text(textwrap.dedent("""
        import argparse, sys
        parser = argparse.ArgumentParser()
        parser.add_argument("--flag")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--directory")
        args = parser.parse_args()
        assert args.flag == "on", args.flag
        if args.seed == 1:
            sys.exit("no data for seed 1")
    """))
    with pytest.raises(RuntimeError) as info:
        run_trials(script, [0, 1], tmp_path / "runs", args=["--flag", "on"])
    message = str(info.value)
    assert "2 of 2 trials failed" in message
    assert "seed 0: RuntimeError: the trial finished but wrote no search" in message
    assert "seed 1: RuntimeError:" in message and "no data for seed 1" in message


def test_run_trials_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="list of ints"):
        run_trials(_trial, 3, tmp_path)
    with pytest.raises(ValueError, match="repeats a seed"):
        run_trials(_trial, [1, 1], tmp_path)
    with pytest.raises(ValueError, match="is empty"):
        run_trials(_trial, [], tmp_path)
    with pytest.raises(ValueError, match="processes"):
        run_trials(_trial, [1], tmp_path, processes=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_trials(str(tmp_path / "nope.py"), [1], tmp_path)
    with pytest.raises(TypeError, match="must be a function"):
        run_trials(42, [1], tmp_path)
