"""Cost of one prune + rewind step against one training epoch.

A 784-2048-2048-2048-10 MLP (10.0 million prunable weights) on 10,000
samples (real MNIST where available), per backend. Measured, not asserted:
writes JSON to benchmarks/results/prune_step.json (one entry per backend)
and its table in docs/benchmarks.md.

    KERAS_BACKEND=jax python benchmarks/prune_step.py
    python benchmarks/prune_step.py --backend all      # one process each
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from _common import (
    BACKENDS,
    RESULTS,
    load_flat_mnist,
    run_in_backend,
    write_docs_section,
)

OUT = RESULTS / "prune_step.json"


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
        "| backend | prunable weights | epoch (10k samples) | prune | rewind + "
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
            "Command: `python benchmarks/prune_step.py --backend all`",
            "",
            *rows,
        ]
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="a backend, or 'all'")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 2k samples")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.samples = 2, 2000
    backends = (
        BACKENDS if args.backend == "all"
        else [args.backend or os.environ.get("KERAS_BACKEND", "jax")]
    )
    entries = json.loads(OUT.read_text()) if OUT.exists() else {}
    for backend in backends:
        entry = run_in_backend(
            __file__, backend,
            ["--repeats", str(args.repeats), "--samples", str(args.samples)],
        )
        entries[backend] = entry
        print(
            f"{backend}: prune+rewind "
            f"{1000 * entry['prune_rewind_seconds_median']:.0f} ms = "
            f"{100 * entry['fraction_of_epoch']:.2f}% of an epoch "
            f"({entry['epoch_seconds_median']:.2f} s)"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(entries, indent=2) + "\n")
    if not args.no_docs and not args.quick:
        write_docs_section("prune_step", docs_body(entries))


if __name__ == "__main__":
    if "--json-only" in sys.argv:
        sys.argv.remove("--json-only")
        p = argparse.ArgumentParser()
        p.add_argument("--repeats", type=int)
        p.add_argument("--samples", type=int)
        a = p.parse_args()
        print(json.dumps(measure(a.repeats, a.samples)))
    else:
        main()
