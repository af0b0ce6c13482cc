"""Does a shrunk ticket run faster? ResNet50 and MobileNetV2, channel-pruned.

For each model (keras.applications, weights=None, random BatchNormalization
statistics so removed channels carry constants) and each fraction of
channels removed (30%, 50%, one `prune(granularity="channel")` step through
the channel dependency graph): parameters, multiply-add FLOPs of the
convolutions and Dense layers, Keras inference time (`predict_on_batch`,
median of `repeats` after a warm-up) at batch 1 and 32, shrunk vs dense,
the parity of the shrunk model against the masked one, and (TensorFlow
backend) TFLite batch-1 latency. Each backend runs in its own process:

    nice python benchmarks/shrink_speed.py --backend all [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import benchmark_main

MODELS = ("ResNet50", "MobileNetV2")
FRACTIONS = (0.3, 0.5)


def flops(model) -> int:
    """Multiply-adds x 2 of every Dense and convolution (graph layers)."""
    import keras

    from keras_lottery.core.model import walk

    total = 0
    for _, layer in walk(model):
        if not isinstance(layer, keras.layers.Layer) or not layer.weights:
            continue
        try:
            out = layer.output.shape
        except (AttributeError, ValueError):
            continue
        positions = 1
        for d in out[1:-1]:
            positions *= int(d)
        if isinstance(layer, (keras.layers.DepthwiseConv2D,)):
            k = layer.kernel.shape
            total += 2 * positions * k[0] * k[1] * k[2]
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            size = 1
            for d in layer.kernel.shape:
                size *= int(d)
            total += 2 * positions * size
    return total


def _time(model, batch: int, repeats: int, size: int) -> float:
    import numpy as np

    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    model.predict_on_batch(x)  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _tflite_ms(model, runs: int) -> float | None:
    import keras

    import keras_lottery as kl

    if keras.backend.backend() != "tensorflow":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.tflite")
        kl.export_tflite(model, path, sparse=False, verify=False)
        rows = kl.benchmark_tflite(path, batch_sizes=(1,), runs=runs, warmup=3)
    return rows[0].xnnpack_ms or rows[0].builtin_ms


def _randomize_batchnorm(model, rng) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.3, b.shape),
                rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def _model(name: str, size: int):
    """The same random model every call (seeded), BatchNormalization too."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10)
    _randomize_batchnorm(model, np.random.default_rng(0))
    return model


def _row(model, repeats, size, tflite_runs) -> dict:
    return {"params": model.count_params(), "flops": flops(model),
            "ms_b1": round(_time(model, 1, repeats, size), 2),
            "ms_b32": round(_time(model, 32, repeats, size), 2),
            "tflite_ms_b1": _tflite_ms(model, tflite_runs)}


def measure(size: int, repeats: int, tflite_runs: int) -> dict:
    import keras
    import numpy as np

    import keras_lottery as kl

    x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype("float32")
    result = {"keras": keras.__version__, "backend": keras.backend.backend(),
              "input": [size, size, 3], "repeats": repeats, "rows": []}
    for name in MODELS:
        dense = _row(_model(name, size), repeats, size, tflite_runs)
        for fraction in FRACTIONS:
            wrapped = kl.wrap(_model(name, size))
            start = time.perf_counter()
            kl.prune(wrapped, fraction, granularity="channel")
            prune_s = time.perf_counter() - start
            start = time.perf_counter()
            small = kl.shrink(wrapped)
            shrink_s = time.perf_counter() - start
            parity = float(np.abs(keras.ops.convert_to_numpy(small(x))
                                  - keras.ops.convert_to_numpy(wrapped(x))).max())
            result["rows"].append({
                "model": name, "removed": fraction, "dense": dense,
                "prune_s": round(prune_s, 2), "shrink_s": round(shrink_s, 2),
                "parity": parity, "shrunk": _row(small, repeats, size, tflite_runs),
            })
    return result


def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def docs_body(entries: dict) -> str:
    lines = [
        "## Shrunk tickets: parameters, FLOPs and inference time",
        "",
        "`nice python benchmarks/shrink_speed.py --backend all --quick`: "
        "keras.applications models (weights=None, 10 classes), one "
        "`prune(rate, granularity=\"channel\")` step through the channel "
        "dependency graph, then `shrink`. Keras time: `predict_on_batch`, "
        "median of the repeats, on this machine's CPU (shared, so noisy); "
        "TFLite: batch 1, XNNPACK, TensorFlow run only. Parity: max abs "
        "difference, shrunk vs masked.",
        "",
        "| backend | model | removed | params | FLOPs | batch 1 ms | batch 32 ms "
        "| TFLite b1 ms | parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, entry in entries.items():
        size = entry["input"][0]
        seen = set()
        for row in entry["rows"]:
            d, s = row["dense"], row["shrunk"]
            if row["model"] not in seen:
                seen.add(row["model"])
                lines.append(
                    f"| {backend} | {row['model']} ({size}x{size}) | dense | "
                    f"{d['params'] / 1e6:.2f}M | {d['flops'] / 1e6:.0f}M | "
                    f"{d['ms_b1']:.1f} | {d['ms_b32']:.1f} | "
                    f"{d['tflite_ms_b1'] or '-'} | - |")
            lines.append(
                f"| {backend} | {row['model']} | {row['removed']:.0%} | "
                f"{s['params'] / 1e6:.2f}M | {s['flops'] / 1e6:.0f}M | "
                f"{s['ms_b1']:.1f} ({_ratio(d['ms_b1'], s['ms_b1'])}) | "
                f"{s['ms_b32']:.1f} ({_ratio(d['ms_b32'], s['ms_b32'])}) | "
                f"{s['tflite_ms_b1'] or '-'} | {row['parity']:.1e} |")
    return "\n".join(lines)


def summary(backend: str, entry: dict) -> str:
    return "\n".join(
        f"{backend} {r['model']} -{r['removed']:.0%}: params "
        f"{r['dense']['params']:,} -> {r['shrunk']['params']:,}, b32 "
        f"{r['dense']['ms_b32']:.1f} -> {r['shrunk']['ms_b32']:.1f} ms, "
        f"parity {r['parity']:.1e}" for r in entry["rows"])


if __name__ == "__main__":
    benchmark_main(
        name="shrink_speed", script=os.path.abspath(__file__),
        description=__doc__.splitlines()[0],
        options={"size": 64, "repeats": 10, "tflite_runs": 20},
        quick={"size": 32, "repeats": 5, "tflite_runs": 10},
        measure=measure, docs_body=docs_body, summary=summary,
    )
