"""Cost of one prune + rewind step against one training epoch.

A 784-2048-2048-2048-10 MLP (10.0 million prunable weights) on 10,000
samples (real MNIST where available), per backend. Measured, not asserted:
writes JSON to benchmarks/results/prune_step.json (one entry per backend)
and the table between the prune-step markers of docs/benchmarks.md.

    KERAS_BACKEND=jax python benchmarks/prune_step.py
    python benchmarks/prune_step.py --backend all      # one process each
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prune_step.json"
DOCS = ROOT / "docs" / "benchmarks.md"
BACKENDS = ("tensorflow", "jax", "torch")
START, END = "<!-- prune_step:start -->", "<!-- prune_step:end -->"


def load_data(n: int):
    import numpy as np

    path = Path(
        os.environ.get(
            "KERAS_LOTTERY_MNIST", ROOT.parent / "shared" / "data" / "mnist.npz"
        )
    )
    if path.is_file():
        with np.load(path) as d:
            x = d["x_train"][:n].reshape(n, -1).astype("float32") / 255.0
            y = d["y_train"][:n].astype("int32")
        return x, y, f"MNIST ({path.name})"
    rng = np.random.default_rng(0)
    return (
        rng.random((n, 784), dtype="float32"),
        rng.integers(0, 10, n).astype("int32"),
        "random (MNIST not found; timing only)",
    )


def measure(repeats: int, samples: int) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras
    import numpy as np

    import keras_lottery as kl

    x, y, source = load_data(samples)
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
    median = float(np.median(steps))
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
        "prune_rewind_seconds_median": median,
        "fraction_of_epoch": median / epoch,
        "date": datetime.date.today().isoformat(),
    }


def write_docs(entries: dict) -> None:
    rows = [
        "| backend | prunable weights | epoch (10k samples) | prune | rewind + "
        "optimizer reset | prune + rewind / epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend in BACKENDS:
        e = entries.get(backend)
        if e is None:
            continue
        rows.append(
            f"| {backend} | {e['prunable_weights']:,} | "
            f"{e['epoch_seconds_median']:.2f} s | "
            f"{1000 * e['prune_seconds_median']:.0f} ms | "
            f"{1000 * e['rewind_seconds_median']:.0f} ms | "
            f"{100 * e['fraction_of_epoch']:.2f}% |"
        )
    any_entry = next(iter(entries.values()))
    section = "\n".join(
        [
            START,
            "## Prune + rewind step",
            "",
            "One `prune(model, 0.2)` plus `rewind(model, 'init')` and "
            "`reset_optimizer`, against one training epoch of the same "
            "784-2048-2048-2048-10 MLP on 10,000 samples (batch 100, Adam), "
            f"median of {any_entry['repeats']} repeats, data: "
            f"{any_entry['data']}, measured {any_entry['date']} on the "
            "project's 2-core CPU machine. Goal: under 1% of the epoch.",
            "",
            "Command: `python benchmarks/prune_step.py --backend all`",
            "",
            *rows,
            END,
        ]
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


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
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for backend in backends:
        if backend == os.environ.get("KERAS_BACKEND") and args.backend != "all":
            entry = measure(args.repeats, args.samples)
        else:
            out = subprocess.run(
                [sys.executable, __file__, "--json-only",
                 "--repeats", str(args.repeats), "--samples", str(args.samples)],
                env={**os.environ, "KERAS_BACKEND": backend},
                check=True, capture_output=True, text=True,
            ).stdout
            entry = json.loads(out.strip().splitlines()[-1])
        entries[backend] = entry
        print(
            f"{backend}: prune+rewind {1000 * entry['prune_rewind_seconds_median']:.0f}"
            f" ms = {100 * entry['fraction_of_epoch']:.2f}% of an epoch "
            f"({entry['epoch_seconds_median']:.2f} s)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(entries, indent=2) + "\n")
    if not args.no_docs:
        write_docs(entries)


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
