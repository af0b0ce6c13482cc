"""Tickets that run faster: weight vs 4x1 block vs channel granularity.

LeNet-300-100 on MNIST (55K train, 10K test; batch 60, Adam 1.2e-3), one
`lottery_search` per granularity from the same initialization, rewinding
to init, pruning to about 90% sparsity (`target_sparsity` with `rounds`;
the output layer at half the rate for "weight" and "block", and not
pruned for "channel", whose output units `shrink` cannot remove). Each
round trains `--epochs` epochs (fewer iterations than the paper's 50K).

Then, at the last round (about 10% of the weights remaining):

- TFLite: the dense model (sparse=False), the weight and block tickets
  (sparse encoding) and the shrunk channel ticket go through
  `export_tflite`; `benchmark_tflite` times batch 1, one thread, with the
  default delegates (XNNPACK) and the builtin kernels;
- Keras: the channel ticket, stripped (full shape, zeros) and shrunk, is
  timed with `model.predict_on_batch(x)` (the backend's compiled predict
  step) at batch 1 and 256 on TensorFlow, JAX and PyTorch, each in its
  own process.

Measured, not asserted. Writes benchmarks/results/granularity.json,
docs/img/granularity.png and the `granularity` section of
docs/benchmarks.md.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/granularity.py
    KERAS_BACKEND=jax .venv/bin/python benchmarks/granularity.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BACKENDS,
    RESULTS,
    ROOT,
    load_flat_mnist,
    run_in_backend,
    write_docs_section,
)

OUT = RESULTS / "granularity.json"
PLOT = ROOT / "docs" / "img" / "granularity.png"
GRANULARITIES = ("weight", "block", "channel")


def _keras():
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras

    return keras


def lenet(keras, seed: int):
    keras.utils.set_random_seed(seed)
    init = keras.initializers.GlorotNormal(seed=seed)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, "relu", kernel_initializer=init, name="fc1"),
        keras.layers.Dense(100, "relu", kernel_initializer=init, name="fc2"),
        keras.layers.Dense(10, kernel_initializer=init, name="out"),
    ])


def search(granularity: str, args, data) -> tuple[object, object, float]:
    keras = _keras()
    import keras_lottery as kl

    x, y, x_test, y_test = data
    model = kl.wrap(lenet(keras, args.seed))
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    options = {"granularity": granularity}
    if granularity == "block":
        options["block_shape"] = (4, 1)
    if granularity == "channel":
        options["rates"] = {"out": 0.0}

    def fit(m):
        return m.fit(x, y, batch_size=60, epochs=args.epochs, verbose=0)

    def evaluate(m):
        _, acc = m.evaluate(x_test, y_test, batch_size=1000, verbose=0)
        return {"accuracy": acc}

    start = time.perf_counter()
    result = kl.lottery_search(
        model, fit, rounds=args.rounds, target_sparsity=args.sparsity,
        eval_fn=evaluate, seed=args.seed, verbose=1, **options,
    )
    return model, result, time.perf_counter() - start


def tflite_latency(model, path, sparse: bool, runs: int, repeats: int) -> dict:
    from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
    from keras_lottery.deploy.tflite.export import export_tflite

    report = export_tflite(model, path, sparse=sparse)
    rows = [benchmark_tflite(path, (1,), threads=1, runs=runs,
                             warmup=max(5, runs // 10))[0]
            for _ in range(repeats)]
    xnn = [r.xnnpack_ms for r in rows if r.xnnpack_ms is not None]
    return {
        "file_bytes": report.file_bytes,
        "encodings": sorted({f"{t.layer}: {t.describe()}" for t in report.tensors}),
        "xnnpack_placement": report.xnnpack,
        "b1_default_ms": statistics.median(xnn) if xnn else None,
        "b1_builtin_ms": statistics.median(r.builtin_ms for r in rows),
        "notes": list(report.notes),
    }


def keras_latency(masked_path: str, shrunk_path: str, runs: int) -> dict:
    """Times the stripped and the shrunk channel ticket in this backend."""
    keras = _keras()
    import numpy as np

    import keras_lottery as kl

    masked = keras.saving.load_model(masked_path)
    models = {"stripped": kl.strip(masked),
              "shrunk": keras.saving.load_model(shrunk_path)}
    out = {"backend": keras.backend.backend()}
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        x = rng.random((batch, 784), dtype="float32")
        for name, model in models.items():
            for _ in range(10):
                model.predict_on_batch(x)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model.predict_on_batch(x)
                times.append(time.perf_counter() - t0)
            out[f"{name}_b{batch}_ms"] = 1e3 * statistics.median(times)
        out[f"speedup_b{batch}"] = (
            out[f"stripped_b{batch}_ms"] / out[f"shrunk_b{batch}_ms"])
    return out


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_lottery.search.plot import percent_remaining_axis  # after the backend

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plotted = []
    for data in results["searches"].values():
        xs = [100 * r["remaining"] for r in data["rounds"]]
        ys = [100 * r["test_accuracy"] for r in data["rounds"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=data["label"])
        plotted += xs
    percent_remaining_axis(ax, plotted)
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"LeNet-300-100 / MNIST tickets, {results['epochs']} "
                 f"epochs per round ({results['backend']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def table(results: dict) -> str:
    s = results["searches"]
    t = results["tflite"]
    dense = t["dense"]["b1_default_ms"]
    lines = [
        f"LeNet-300-100 on MNIST, {results['backend']} backend, "
        f"{results['rounds']} rounds to {100 * results['target_sparsity']:.0f}% "
        f"sparsity, {results['epochs']} epochs (about "
        f"{results['iterations_per_round']:,} iterations) per round, "
        f"rewinding to init; {results['machine']}. Whole run "
        f"{results['seconds'] / 60:.1f} min. `python benchmarks/granularity.py`.",
        "",
        "| Granularity | Weights remaining | Test accuracy | Dense accuracy "
        "| TFLite model | File | Batch-1 latency (default / builtin) "
        "| Speed-up vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in GRANULARITIES:
        last = s[name]["rounds"][-1]
        row = t[name]
        latency = row["b1_default_ms"] or row["b1_builtin_ms"]
        lines.append(
            f"| {s[name]['label']} | {100 * last['remaining']:.1f}% "
            f"| {100 * last['test_accuracy']:.2f}% "
            f"| {100 * s[name]['rounds'][0]['test_accuracy']:.2f}% "
            f"| {row['what']} | {row['file_bytes'] / 1024:.0f} KiB "
            f"| {row['b1_default_ms'] or float('nan'):.4f} / "
            f"{row['b1_builtin_ms']:.4f} ms | {dense / latency:.2f}x |"
        )
    lines.append(
        f"| dense | 100% | | | dense float32 | "
        f"{t['dense']['file_bytes'] / 1024:.0f} KiB | "
        f"{dense:.4f} / {t['dense']['b1_builtin_ms']:.4f} ms | 1.00x |"
    )
    sh = results["shrink"]
    lines += [
        "",
        f"Channel ticket shrunk: {sh['params_before']:,} -> "
        f"{sh['params_after']:,} parameters ({100 * sh['ratio']:.1f}%), "
        f"units kept {sh['units']}; max |shrunk - masked| on the test set "
        f"{sh['max_abs_diff']:.2e}.",
        "",
        "| Backend | Stripped b1 | Shrunk b1 | Speed-up b1 | Stripped b256 "
        "| Shrunk b256 | Speed-up b256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["keras_latency"]:
        lines.append(
            f"| {row['backend']} | {row['stripped_b1_ms']:.3f} ms "
            f"| {row['shrunk_b1_ms']:.3f} ms | {row['speedup_b1']:.2f}x "
            f"| {row['stripped_b256_ms']:.3f} ms | {row['shrunk_b256_ms']:.3f} ms "
            f"| {row['speedup_b256']:.2f}x |"
        )
    w = s["weight"]["rounds"][-1]["test_accuracy"]
    b = s["block"]["rounds"][-1]["test_accuracy"]
    speed = dense / (t["block"]["b1_default_ms"] or t["block"]["b1_builtin_ms"])
    lines += [
        "",
        f"Goal (block within 0.5 points of unstructured at ~90% sparsity, "
        f">= 3x faster than dense on TFLite): accuracy gap "
        f"{100 * (w - b):+.2f} points (weight minus block), speed-up "
        f"{speed:.2f}x; {'met' if w - b <= 0.005 and speed >= 3 else 'not met'}.",
        "",
        "![accuracy vs weights remaining](img/granularity.png)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=55_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--keras-latency", nargs=2, metavar=("MASKED", "SHRUNK"))
    parser.add_argument("--replot", action="store_true",
                        help="redraw the plot and table from the JSON")
    args = parser.parse_args()
    if args.replot:
        results = json.loads(OUT.read_text())
        plot(results)
        write_docs_section("granularity", table(results))
        return 0
    if args.keras_latency:
        print(json.dumps(keras_latency(*args.keras_latency, args.runs)))
        return 0
    if args.quick:
        args.rounds, args.epochs, args.train, args.runs = 2, 1, 3000, 30
    keras = _keras()
    import numpy as np

    from keras_lottery.deploy.shrink import shrink
    from keras_lottery.deploy.xnnpack import check_block_alignment

    began = time.perf_counter()
    x, y, source = load_flat_mnist(args.train)
    x_test, y_test, _ = load_flat_mnist(10_000, "test")
    data = (x, y, x_test, y_test)
    results = {
        "date": datetime.date.today().isoformat(),
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "data": source,
        "rounds": args.rounds, "target_sparsity": args.sparsity,
        "epochs": args.epochs, "train_samples": args.train,
        "iterations_per_round": args.epochs * -(-args.train // 60),
        "searches": {}, "tflite": {},
    }
    labels = {"weight": "weight (unstructured)", "block": "block 4x1",
              "channel": "channel (output layer kept)"}
    models = {}
    for name in GRANULARITIES:
        print(f"== {name}", flush=True)
        model, result, seconds = search(name, args, data)
        models[name] = model
        results["searches"][name] = {
            "label": labels[name], "seconds": seconds,
            "rate": result.args["rate"],
            "rounds": [
                {"round": r.round, "remaining": r.remaining,
                 "test_accuracy": r.metrics["test_accuracy"],
                 "layers": r.layers}
                for r in result.rounds
            ],
        }
    results["block_alignment"] = check_block_alignment(models["block"], warn=False)

    with tempfile.TemporaryDirectory() as tmp:
        small, report = shrink(models["channel"], return_report=True)
        diff = np.abs(small.predict(x_test, verbose=0)
                      - models["channel"].predict(x_test, verbose=0)).max()
        results["shrink"] = {
            "params_before": report.params_before,
            "params_after": report.params_after, "ratio": report.ratio,
            "units": report.units, "max_abs_diff": float(diff),
        }
        variants = {
            "dense": (lenet(keras, args.seed), False, "dense float32"),
            "weight": (models["weight"], True, "sparse-encoded"),
            "block": (models["block"], True, "block-sparse 1x4"),
            "channel": (small, False, "shrunk, dense float32"),
        }
        for name, (model, sparse, what) in variants.items():
            print(f"== TFLite {name}", flush=True)
            path = os.path.join(tmp, f"{name}.tflite")
            row = tflite_latency(model, path, sparse, args.runs, args.repeats)
            row["what"] = what
            results["tflite"][name] = row
        masked_path = os.path.join(tmp, "channel_masked.keras")
        shrunk_path = os.path.join(tmp, "channel_shrunk.keras")
        models["channel"].save(masked_path)
        small.save(shrunk_path)
        results["keras_latency"] = []
        for backend in BACKENDS:
            print(f"== Keras latency on {backend}", flush=True)
            results["keras_latency"].append(run_in_backend(
                __file__, backend,
                ["--keras-latency", masked_path, shrunk_path,
                 "--runs", str(args.runs)],
            ))
    results["seconds"] = time.perf_counter() - began
    if not args.quick:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2, default=str))
        plot(results)
        write_docs_section("granularity", table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
