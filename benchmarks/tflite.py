"""File size and latency of pruned MLPs on TFLite / LiteRT (measured, not asserted).

For LeNet-300-100 (784-300-100-10) and a 1024-2048-2048-16 MLP, every
Dense kernel pruned to 90% by magnitude (masks made here with NumPy):

- dense float32 (no sparse encoding), the baseline;
- unstructured 90%, float32;
- 1x4 blocks along the input axis (`kernel[i:i+4, j]`), float32;
- dense int8 (full integer), the int8 baseline;
- 1x16 blocks, full int8 and dynamic-range int8.

Each variant goes through `keras_lottery.export_tflite` (verified against
Keras), then `keras_lottery.export.benchmark_tflite` times batch 1 and 32
with and without XNNPACK, one thread, in this process; each latency is the
median over `--repeats` repeats of the median of `--runs` invokes.

Usage:

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/tflite.py
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/tflite.py --quick

Writes benchmarks/results/tflite.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_lottery as kl
from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
from keras_lottery.deploy.tflite.export import export_tflite
from keras_lottery.deploy.tflite.report import ExportError

MODELS = {
    "LeNet-300-100": (784, 300, 100, 10),
    "MLP 1024-2048-2048-16": (1024, 2048, 2048, 16),
}

# name: (block rows along the input axis or None for dense, sparse, quantize)
VARIANTS = {
    "dense float32": (None, False, None),
    "unstructured float32": (1, True, None),
    "1x4 blocks float32": (4, True, None),
    "dense int8": (None, False, "int8"),
    "1x16 blocks int8": (16, True, "int8"),
    "1x16 blocks dynamic": (16, True, "dynamic"),
}


def magnitude_mask(kernel: np.ndarray, sparsity: float, rows: int) -> np.ndarray:
    """Keeps the `kernel[i:i+rows, j]` blocks with the largest summed |w|."""
    n_in, n_out = kernel.shape
    padded = -(-n_in // rows) * rows
    scores = np.zeros((padded, n_out))
    scores[:n_in] = np.abs(kernel)
    blocks = scores.reshape(padded // rows, rows, n_out).sum(axis=1)
    k = round(sparsity * blocks.size)
    order = np.argsort(blocks, axis=None, kind="stable")
    keep = np.ones(blocks.size, bool)
    keep[order[:k]] = False
    return np.repeat(keep.reshape(blocks.shape), rows, axis=0)[:n_in]


def build(sizes, rows, sparsity, seed=0) -> keras.Model:
    """A wrapped MLP with random-normal weights and magnitude masks."""
    rng = np.random.default_rng(seed)
    layers = [keras.Input((sizes[0],))]
    for i, units in enumerate(sizes[1:]):
        last = i == len(sizes) - 2
        layers.append(keras.layers.Dense(units, None if last else "relu"))
    model = kl.wrap(keras.Sequential(layers))
    for wrapper in model.layers:
        kernel = wrapper.prunable_variable("kernel")
        fan_in = kernel.shape[0]
        kernel.assign(rng.standard_normal(kernel.shape).astype("float32")
                      / np.sqrt(fan_in))
        if rows is not None:
            wrapper.set_mask("kernel", magnitude_mask(
                np.asarray(kernel.numpy()), sparsity, rows))
    return model


def run(quick: bool, repeats: int, runs: int, sparsity: float) -> dict:
    models = dict(list(MODELS.items())[:1]) if quick else MODELS
    rows_out = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, sizes in models.items():
            for variant, (rows, sparse, quantize) in VARIANTS.items():
                model = build(sizes, rows, sparsity)
                data = None
                if quantize == "int8":
                    data = np.random.default_rng(1).standard_normal(
                        (100, sizes[0])).astype("float32")
                path = os.path.join(tmp, "model.tflite")
                start = time.perf_counter()
                failure = None
                try:
                    report = export_tflite(model, path, sparse=sparse,
                                           quantize=quantize,
                                           representative_data=data)
                except ExportError as error:
                    # Keep the finding, and still time the unverified file.
                    failure = str(error)
                    report = export_tflite(model, path, sparse=sparse,
                                           quantize=quantize,
                                           representative_data=data,
                                           verify=False)
                seconds = time.perf_counter() - start
                timings = [benchmark_tflite(path, (1, 32), threads=1,
                                            runs=runs, warmup=max(2, runs // 10))
                           for _ in range(repeats)]
                latency = {}
                for i, batch in enumerate((1, 32)):
                    for key in ("xnnpack_ms", "builtin_ms"):
                        values = [getattr(t[i], key) for t in timings]
                        latency[f"b{batch}_{key}"] = (
                            None if None in values else statistics.median(values))
                encodings = sorted({t.describe() for t in report.tensors})
                rows_out.append({
                    "model": model_name, "variant": variant,
                    "sparsity": sparsity if rows else 0.0,
                    "quantize": quantize, "file_bytes": report.file_bytes,
                    "dense_bytes_same_quantization": report.dense_bytes,
                    "sparse_encoding": report.sparse,
                    "encodings": encodings, "xnnpack": report.xnnpack,
                    "max_error": report.max_error, "notes": list(report.notes),
                    "verification_failure": failure,
                    "export_seconds": seconds, **latency,
                })
                print(f"{model_name:24s} {variant:22s} "
                      f"{report.file_bytes:>10,} B  {latency}", file=sys.stderr)
    return {
        "command": "KERAS_BACKEND=tensorflow .venv/bin/python "
                   "benchmarks/tflite.py" + (" --quick" if quick else ""),
        "machine": {
            "platform": platform.platform(), "processor": platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "versions": versions(),
        "settings": {"repeats": repeats, "runs": runs, "threads": 1,
                     "sparsity": sparsity, "batch_sizes": [1, 32]},
        "rows": rows_out,
    }


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("keras", "tensorflow", "ai-edge-litert", "numpy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def markdown(results: dict) -> str:
    def ms(v):
        return "fails" if v is None else f"{v:.3f}"

    header = ("| Model | Variant | File | vs dense f32 | Weights stored as | "
              "XNNPACK | b1 XNNPACK ms | b1 builtin ms | b32 XNNPACK ms | "
              "b32 builtin ms |")
    lines = [header, "|" + "---|" * 10]
    base = {}
    for row in results["rows"]:
        if row["variant"] == "dense float32":
            base[row["model"]] = row["file_bytes"]
    for row in results["rows"]:
        ratio = row["file_bytes"] / base[row["model"]]
        variant = row["variant"]
        if row["verification_failure"]:
            variant += " (**fails verification**)"
        elif not row["sparse_encoding"] and row["sparsity"]:
            variant += " (fell back to dense)"
        lines.append(
            f"| {row['model']} | {variant} | "
            f"{row['file_bytes'] / 1024:,.0f} KiB | {100 * ratio:.1f}% | "
            f"{', '.join(row['encodings'])} | {row['xnnpack']} | "
            f"{ms(row['b1_xnnpack_ms'])} | {ms(row['b1_builtin_ms'])} | "
            f"{ms(row['b32_xnnpack_ms'])} | {ms(row['b32_builtin_ms'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="LeNet only, 1 repeat of 20 runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--out", default=str(
        Path(__file__).resolve().parent / "results" / "tflite.json"))
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    runs = args.runs or (20 if args.quick else 50)
    results = run(args.quick, repeats, runs, args.sparsity)
    results["table"] = markdown(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(results["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
