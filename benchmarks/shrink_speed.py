"""Does a shrunk ticket run faster? ResNet50 and MobileNetV2, channel-pruned.

For each model (keras.applications, weights=None, 10 classes, random
BatchNormalization statistics so removed channels carry constants) and
each fraction of channels removed (30%, 50%, one
`prune(rate, granularity="channel")` step through the channel dependency
graph, then `shrink`): parameters, FLOPs (2 x the multiply-adds of every
convolution and Dense layer, counted from the layer shapes), the parity of
the shrunk model against the masked one (max abs difference), and Keras
inference time (`predict_on_batch`, batch 1 and 32): the dense model and
both shrunk models are timed in turn, one call each per round, so the
machine's load falls on all of them alike; each figure is the median of
`repeats` rounds after a warm-up. On the TensorFlow backend, also TFLite
batch-1 latency (`benchmark_tflite`, one thread, XNNPACK and builtin
kernels; median of 3 alternating rounds of `tflite_runs` invokes). Each
backend runs in its own process; `--torch_threads N` sets PyTorch's
threads (0: its default, one per core, which on a loaded machine ran
3-10x slower than one thread). `--quick` (32x32, 2 rounds) proves the
script end to end in a few minutes but replaces that backend's entry in
results/shrink_speed.json:

    nice -n 10 python benchmarks/shrink_speed.py --backend all
    nice -n 10 python benchmarks/shrink_speed.py --backend torch --torch_threads 1
    nice -n 10 python benchmarks/shrink_speed.py --backend jax --quick --no-docs
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BACKENDS, benchmark_main

MODELS = ("ResNet50", "MobileNetV2")
FRACTIONS = (0.3, 0.5)
BATCHES = (1, 32)
TFLITE_ROUNDS = 3


def flops(model) -> int:
    """2 x multiply-adds of every Dense and convolution (graph layers).

    Bias additions, BatchNormalization, activations and pooling are not
    counted. ResNet50 at 224x224 gives 3.86 G multiply-adds, MobileNetV2
    0.30 G (the usual published figures).
    """
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
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.kernel.shape
            total += 2 * positions * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            size = 1
            for d in layer.kernel.shape:
                size *= int(d)
            total += 2 * positions * size
    return total


def time_side_by_side(models: list, batch: int, repeats: int, size: int) -> list[float]:
    """Median ms per `predict_on_batch`, one call per model per round."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    for model in models:
        model.predict_on_batch(x)  # compile / warm up
    times = [[] for _ in models]
    for _ in range(repeats):
        for model, out in zip(models, times):
            start = time.perf_counter()
            model.predict_on_batch(x)
            out.append(time.perf_counter() - start)
    return [round(1e3 * statistics.median(t), 2) for t in times]


def tflite_side_by_side(models: list, runs: int) -> list[dict]:
    """Batch-1 TFLite latency per model (XNNPACK and builtin kernels, ms)."""
    import keras_lottery as kl

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, model in enumerate(models):
            paths.append(os.path.join(tmp, f"m{i}.tflite"))
            kl.export_tflite(model, paths[-1], sparse=False, verify=False)
        rounds = [[] for _ in models]
        for _ in range(TFLITE_ROUNDS):
            for path, out in zip(paths, rounds):
                out.append(kl.benchmark_tflite(path, batch_sizes=(1,), runs=runs,
                                               warmup=3)[0])
    return [{
        "xnnpack_ms": (round(statistics.median(r.xnnpack_ms for r in rows), 2)
                       if all(r.xnnpack_ms for r in rows) else None),
        "builtin_ms": round(statistics.median(r.builtin_ms for r in rows), 2),
    } for rows in rounds]


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


def _shrunk(name: str, size: int, fraction: float) -> tuple:
    """(shrunk model, its row) after one channel prune of a fresh model."""
    import keras
    import numpy as np

    import keras_lottery as kl

    x = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype("float32")
    wrapped = kl.wrap(_model(name, size))
    start = time.perf_counter()
    kl.prune(wrapped, fraction, granularity="channel")
    prune_s = time.perf_counter() - start
    start = time.perf_counter()
    small, report = kl.shrink(wrapped, return_report=True)
    shrink_s = time.perf_counter() - start
    parity = float(np.abs(keras.ops.convert_to_numpy(small(x))
                          - keras.ops.convert_to_numpy(wrapped(x))).max())
    return small, {"prune_s": round(prune_s, 2), "shrink_s": round(shrink_s, 2),
                   "parity": parity, "layers_cut": len(report.units)}


def measure_model(name: str, size: int, repeats: int, tflite_runs: int) -> list[dict]:
    """The rows of one model: its dense figures beside each shrunk one's."""
    import keras

    dense = _model(name, size)
    smalls, rows = [], []
    for fraction in FRACTIONS:
        small, row = _shrunk(name, size, fraction)
        smalls.append(small)
        rows.append({"model": name, "removed": fraction, **row})
    models = [dense, *smalls]
    figures = [{"params": m.count_params(), "flops": flops(m)} for m in models]
    for batch in BATCHES:
        for fig, ms in zip(figures, time_side_by_side(models, batch, repeats, size)):
            fig[f"ms_b{batch}"] = ms
    tflite = (tflite_side_by_side(models, tflite_runs)
              if keras.backend.backend() == "tensorflow" else [None] * len(models))
    for fig, lite in zip(figures, tflite):
        fig["tflite_b1"] = lite
    for row, fig in zip(rows, figures[1:]):
        row["dense"], row["shrunk"] = figures[0], fig
    return rows


def measure(size: int, repeats: int, tflite_runs: int, torch_threads: int) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        if torch_threads:  # 0: PyTorch's default (one per core)
            torch.set_num_threads(torch_threads)
    import keras

    start = time.perf_counter()
    result = {
        "keras": keras.__version__, "backend": keras.backend.backend(),
        "date": datetime.date.today().isoformat(), "input": [size, size, 3],
        "repeats": repeats, "tflite_runs": tflite_runs,
        "torch_threads": torch_threads or None,
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_start": round(os.getloadavg()[0], 1), "rows": []}
    for name in MODELS:
        result["rows"].extend(measure_model(name, size, repeats, tflite_runs))
    result["load_avg_end"] = round(os.getloadavg()[0], 1)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _speedup(dense, shrunk) -> str:
    return f"{dense / shrunk:.2f}x" if dense and shrunk else "-"


def _model_table(entries: dict) -> list[str]:
    first = next(entries[b] for b in (*BACKENDS, *entries) if b in entries)
    lite = entries.get("tensorflow")
    lines = [
        "| model | removed | params | GFLOPs | parity (max abs diff) "
        "| TFLite b1 XNNPACK ms | TFLite b1 builtin ms |",
        "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(first["rows"]):
        d, s = row["dense"], row["shrunk"]
        parity = ", ".join(f"{b} {e['rows'][i]['parity']:.0e}"
                           for b, e in entries.items())
        cells = []
        for key in ("xnnpack_ms", "builtin_ms"):
            if lite and lite["rows"][i]["dense"]["tflite_b1"]:
                dd = lite["rows"][i]["dense"]["tflite_b1"][key]
                ss = lite["rows"][i]["shrunk"]["tflite_b1"][key]
                cells.append(f"{dd} -> {ss} ({_speedup(dd, ss)})")
            else:
                cells.append("-")
        lines.append(
            f"| {row['model']} | {row['removed']:.0%} | "
            f"{d['params'] / 1e6:.2f}M -> {s['params'] / 1e6:.2f}M | "
            f"{d['flops'] / 1e9:.2f} -> {s['flops'] / 1e9:.2f} | {parity} | "
            f"{cells[0]} | {cells[1]} |")
    return lines


def _time_table(entries: dict) -> tuple[list[str], list[str]]:
    head = "| model | removed | " + " | ".join(
        f"{b} b{n} ms" for b in entries for n in BATCHES) + " |"
    lines = [head, "|---|---|" + "---|" * (len(entries) * len(BATCHES))]
    slow = []
    first = next(iter(entries.values()))
    for i, row in enumerate(first["rows"]):
        cells = []
        for backend, entry in entries.items():
            d, s = entry["rows"][i]["dense"], entry["rows"][i]["shrunk"]
            for n in BATCHES:
                dd, ss = d[f"ms_b{n}"], s[f"ms_b{n}"]
                cells.append(f"{dd:.1f} -> {ss:.1f} ({_speedup(dd, ss)})")
                if dd / ss < 1.1:
                    slow.append(f"{backend} {row['model']} -{row['removed']:.0%} "
                                f"batch {n} ({_speedup(dd, ss)})")
        lines.append(f"| {row['model']} | {row['removed']:.0%} | "
                     + " | ".join(cells) + " |")
    return lines, slow


def _threads(entry: dict) -> str:
    threads = entry.get("torch_threads")
    if not threads:
        return ""
    return f" (rerun with `--backend torch --torch_threads {threads}`)"


def docs_body(entries: dict) -> str:
    entries = {b: entries[b] for b in (*BACKENDS, *entries) if b in entries}
    first = next(iter(entries.values()))
    size, repeats, runs = first["input"][0], first["repeats"], first["tflite_runs"]
    runs_on = "; ".join(
        f"{b}{_threads(e)} {e['date']}, {e['seconds']:.0f} s, load average "
        f"{e['load_avg_start']}-{e['load_avg_end']}" for b, e in entries.items())
    times, slow = _time_table(entries)
    return "\n".join([
        "## Shrink: measured speed",
        "",
        f"`nice -n 10 python benchmarks/shrink_speed.py --backend all --size {size} "
        f"--repeats {repeats} --tflite_runs {runs}` (keras {first['keras']}, "
        f"{first['cpus']} shared CPU cores; {runs_on}). keras.applications "
        f"ResNet50 and MobileNetV2, weights=None, {size}x{size}x3 input, 10 "
        "classes, random BatchNormalization statistics; one "
        "`prune(rate, granularity=\"channel\")` step, then `shrink`. GFLOPs: "
        "2 x multiply-adds of the convolutions and Dense layers, counted from "
        "the layer shapes. Parity: shrunk vs masked model, 4 random inputs, per "
        "backend. TFLite: `benchmark_tflite`, batch 1, one thread, median of "
        f"{TFLITE_ROUNDS} rounds of {runs} invokes, dense and shrunk "
        "alternating (TensorFlow run).",
        "",
        *_model_table(entries),
        "",
        "Keras inference, `predict_on_batch`, ms, dense -> shrunk (speed-up); "
        f"median of {repeats} rounds, the dense and both shrunk models called "
        "in turn in each round, in one process per backend:",
        "",
        *times,
        "",
        "Speed-up below 1.1x: " + ("; ".join(slow) if slow else "none") + ".",
        *_default_threads_note(entries),
    ])


def _default_threads_note(entries: dict) -> list[str]:
    """One line comparing a PyTorch run at its default threads, if kept."""
    import json

    from _common import RESULTS

    path = RESULTS / "shrink_speed_torch_default_threads.json"
    torch = entries.get("torch")
    if not (path.exists() and torch and torch.get("torch_threads")):
        return []
    slow = json.loads(path.read_text())["torch"]
    d, r = slow["rows"][0]["dense"], torch["rows"][0]["dense"]
    return ["", (
        f"PyTorch at its default threads (one per core) on this loaded machine "
        f"(load average {slow['load_avg_start']}, `{path.name}`): dense ResNet50 "
        f"{d['ms_b1']:.0f} ms at batch 1 and {d['ms_b32']:.0f} ms at batch 32, "
        f"against {r['ms_b1']:.0f} and {r['ms_b32']:.0f} ms with "
        f"`--torch_threads {torch['torch_threads']}`; its speed-ups "
        "were " + ", ".join(
            f"{row['model']} -{row['removed']:.0%} "
            f"{_speedup(row['dense']['ms_b1'], row['shrunk']['ms_b1'])} / "
            f"{_speedup(row['dense']['ms_b32'], row['shrunk']['ms_b32'])}"
            for row in slow["rows"]) + " (batch 1 / 32).")]


def summary(backend: str, entry: dict) -> str:
    return "\n".join(
        f"{backend} {r['model']} -{r['removed']:.0%}: params "
        f"{r['dense']['params']:,} -> {r['shrunk']['params']:,}, b1 "
        f"{r['dense']['ms_b1']:.1f} -> {r['shrunk']['ms_b1']:.1f} ms, b32 "
        f"{r['dense']['ms_b32']:.1f} -> {r['shrunk']['ms_b32']:.1f} ms, "
        f"parity {r['parity']:.1e}" for r in entry["rows"])


if __name__ == "__main__":
    benchmark_main(
        name="shrink_speed", script=os.path.abspath(__file__),
        description=__doc__.splitlines()[0],
        options={"size": 96, "repeats": 7, "tflite_runs": 10, "torch_threads": 0},
        quick={"size": 32, "repeats": 2, "tflite_runs": 2, "torch_threads": 0},
        measure=measure, docs_body=docs_body, summary=summary,
    )
