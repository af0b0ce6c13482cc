"""What `lottery_search` adds to a search, beyond the training it drives.

LeNet-300-100 on MNIST (batch 60, Adam 1.2e-3), a few rounds with a search
directory (so the per-round atomic checkpoints are counted): the wall time
of the search minus the time spent inside the user's `fit_fn` and
`eval_fn` is the driver's cost (prune, rewind, optimizer reset, copies,
checkpoint files, bookkeeping). Measured, not asserted: JSON in
benchmarks/results/search_cost.json and a table in docs/benchmarks.md.

    python benchmarks/search_cost.py --backend all
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time

from _common import BACKENDS, benchmark_main, load_flat_mnist


def measure(rounds: int, samples: int) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras

    import keras_lottery as kl

    x, y, source = load_flat_mnist(samples)
    x_test, y_test, _ = load_flat_mnist(10_000, "test")
    keras.utils.set_random_seed(0)
    init = keras.initializers.GlorotNormal(seed=0)
    model = kl.wrap(
        keras.Sequential(
            [
                keras.Input((784,)),
                keras.layers.Dense(300, "relu", kernel_initializer=init),
                keras.layers.Dense(100, "relu", kernel_initializer=init),
                keras.layers.Dense(10, kernel_initializer=init),
            ]
        )
    )
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    inside = []

    def fit_fn(m):
        start = time.perf_counter()
        history = m.fit(x, y, batch_size=60, epochs=1, verbose=0)
        inside.append(time.perf_counter() - start)
        return history

    def eval_fn(m):
        start = time.perf_counter()
        metrics = m.evaluate(x_test, y_test, batch_size=1000, verbose=0,
                             return_dict=True)
        inside.append(time.perf_counter() - start)
        return metrics

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        result = kl.lottery_search(
            model, fit_fn, eval_fn=eval_fn, rounds=rounds, directory=directory,
            seed=0, verbose=0,
        )
        wall = time.perf_counter() - start
    user = sum(inside)
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": source,
        "samples": samples,
        "rounds": rounds,
        "search_seconds": wall,
        "fit_and_eval_seconds": user,
        "driver_seconds": wall - user,
        "driver_fraction": (wall - user) / wall,
        "final_remaining_percent": 100 * result.rounds[-1].remaining,
        "final_test_accuracy": result.rounds[-1].metrics.get("test_accuracy"),
        "date": datetime.date.today().isoformat(),
    }


def docs_body(entries: dict) -> str:
    rows = [
        "| backend | rounds | search wall time | inside fit_fn + eval_fn | "
        "driver | driver share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend in BACKENDS:
        e = entries.get(backend)
        if e is not None:
            rows.append(
                f"| {backend} | {e['rounds']} + dense | {e['search_seconds']:.1f} s"
                f" | {e['fit_and_eval_seconds']:.1f} s | "
                f"{e['driver_seconds']:.2f} s | {100 * e['driver_fraction']:.2f}% |"
            )
    e = next(iter(entries.values()))
    return "\n".join(
        [
            "## Search driver cost",
            "",
            "`lottery_search` on LeNet-300-100 (batch 60, Adam 1.2e-3, one "
            f"epoch of {e['samples']:,} training images per round, test set "
            "evaluated every round, a search directory so every round is "
            "checkpointed atomically). Driver = search wall time minus the time "
            f"inside `fit_fn` and `eval_fn`. Data: {e['data']}; measured "
            f"{e['date']} on the project's 2-core CPU machine. Goal: under 2%.",
            "",
            "Command: `python benchmarks/search_cost.py --backend all "
            f"--rounds {e['rounds']} --samples {e['samples']}`",
            "",
            *rows,
            "",
            "Goal met on: "
            + (", ".join(b for b, x in entries.items() if x["driver_fraction"] < 0.02)
               or "none")
            + ".",
        ]
    )


def summary(backend: str, e: dict) -> str:
    return (
        f"{backend}: driver {e['driver_seconds']:.2f} s of "
        f"{e['search_seconds']:.1f} s = {100 * e['driver_fraction']:.2f}%"
    )


if __name__ == "__main__":
    benchmark_main(
        name="search_cost",
        script=__file__,
        description=__doc__.splitlines()[0],
        options={"rounds": 3, "samples": 55_000},
        quick={"rounds": 1, "samples": 3000},
        measure=measure,
        docs_body=docs_body,
        summary=summary,
    )
