"""Cost of one prune + rewind step against one training epoch.

A 784-2048-2048-2048-10 MLP (10.0 million prunable weights) on 10,000
samples (real MNIST where available), per backend. Measured, not asserted:
writes JSON to benchmarks/results/prune_step.json (one entry per backend)
and its table in docs/benchmarks.md.

    KERAS_BACKEND=jax python benchmarks/prune_step.py
    python benchmarks/prune_step.py --backend all      # one process each
"""

from __future__ import annotations

import datetime
import os
import time

from _common import BACKENDS, benchmark_main, load_flat_mnist


def measure(repeats: int, samples: int) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras
    import numpy as np

    import keras_lottery as kl

    x, y, source = load_flat_mnist(samples)
    keras.utils.set_random_seed(0)
    model = kl.wrap(
        keras.Sequential(
            [keras.Input((784,))]
            + [keras.layers.Dense(2048, activation="relu") for _ in range(3)]
            + [keras.layers.Dense(10)]
        )
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    prunable = kl.summary(model, print_fn=None).total
    model.fit(x[:200], y[:200], batch_size=100, epochs=1, verbose=0)  # compile
    kl.prune(model, 0.0)  # warm up NumPy / conversions once
    epochs, prunes, rewinds = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=100, epochs=1, verbose=0)
        epochs.append(time.perf_counter() - start)
        start = time.perf_counter()
        kl.prune(model, 0.2)
        prunes.append(time.perf_counter() - start)
        start = time.perf_counter()
        kl.rewind(model, "init")
        kl.reset_optimizer(model.optimizer)
        rewinds.append(time.perf_counter() - start)
    steps = [p + r for p, r in zip(prunes, rewinds)]
    epoch = float(np.median(epochs))
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": source,
        "prunable_weights": int(prunable),
        "samples": samples,
        "batch_size": 100,
        "repeats": repeats,
        "epoch_seconds_median": epoch,
        "prune_seconds_median": float(np.median(prunes)),
        "rewind_seconds_median": float(np.median(rewinds)),
        "prune_rewind_seconds_median": float(np.median(steps)),
        "fraction_of_epoch": float(np.median(steps)) / epoch,
        "date": datetime.date.today().isoformat(),
    }


def docs_body(entries: dict) -> str:
    rows = [
        "| backend | prunable weights | epoch | prune | rewind + "
        "optimizer reset | prune + rewind / epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend in BACKENDS:
        e = entries.get(backend)
        if e is not None:
            rows.append(
                f"| {backend} | {e['prunable_weights']:,} | "
                f"{e['epoch_seconds_median']:.2f} s | "
                f"{1000 * e['prune_seconds_median']:.0f} ms | "
                f"{1000 * e['rewind_seconds_median']:.0f} ms | "
                f"{100 * e['fraction_of_epoch']:.2f}% |"
            )
    e = next(iter(entries.values()))
    return "\n".join(
        [
            "## Prune + rewind step",
            "",
            "One `prune(model, 0.2)` plus `rewind(model, 'init')` and "
            "`reset_optimizer`, against one training epoch of the same "
            f"784-2048-2048-2048-10 MLP on {e['samples']:,} samples (batch "
            f"100, Adam); median of {e['repeats']} repeats; data: {e['data']}; "
            f"measured {e['date']} on the project's 2-core CPU machine. "
            "Goal: under 1% of the epoch.",
            "",
            "Command: `python benchmarks/prune_step.py --backend all "
            f"--repeats {e['repeats']} --samples {e['samples']}`",
            "",
            *rows,
            "",
            "Goal met on: "
            + (", ".join(b for b, x in entries.items() if x["fraction_of_epoch"] < 0.01)
               or "none")
            + ". The step is host-side NumPy work (copy out, score, partition, "
            "assign back), about 0.2 s per 10 million weights here, so its "
            "share grows as the backend's epoch gets faster.",
        ]
    )


def summary(backend: str, e: dict) -> str:
    return (
        f"{backend}: prune+rewind {1000 * e['prune_rewind_seconds_median']:.0f} ms"
        f" = {100 * e['fraction_of_epoch']:.2f}% of an epoch "
        f"({e['epoch_seconds_median']:.2f} s)"
    )


if __name__ == "__main__":
    benchmark_main(
        name="prune_step",
        script=__file__,
        description=__doc__.splitlines()[0],
        options={"repeats": 5, "samples": 10_000},
        quick={"repeats": 2, "samples": 2000},
        measure=measure,
        docs_body=docs_body,
        summary=summary,
    )
