"""Conv nets pruned for XNNPACK: our .tflite file against tfmot's and dense.

For each network (tfmot's XNNPACK tutorial net, and a wider MobileNet-like
net), with the same dense weights (random, seeded):

- ours: `keras_lottery.wrap(include=check_xnnpack_sparse(net).prunable)`,
  `prune` the 1x1 convolutions to `--sparsity` by magnitude,
  `export_tflite` (verified against Keras);
- tfmot: the same architecture and weights in tf_keras,
  `prune_low_magnitude(pruning_policy=PruneForLatencyOnXNNPack(),
  ConstantSparsity)`, one zero-learning-rate step to apply the masks,
  `strip_pruning`, `TFLiteConverter.from_keras_model` with
  `EXPERIMENTAL_SPARSITY`, as tfmot's tutorial does (run in a child
  process: tf_keras and Keras 3 do not share one);
- dense: ours with `sparse=False`, and tfmot's dense conversion.

Then, in this one process, each file's batch-1 latency with LiteRT's
default delegates (XNNPACK) and with the builtin kernels, one thread, the
files interleaved within each repeat; each figure is the median over
`--repeats` repeats of the median of `--runs` invokes.

Usage:

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/xnnpack.py

Writes benchmarks/results/xnnpack.json and prints a markdown table.
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

# (kind, arguments) per layer, shared by the Keras 3 and tf_keras builders.
TUTORIAL = [("input", (32, 32, 3)), ("pad", 1), ("conv", 8, 3, 2),
            ("bn",), ("relu",), ("dw", 1), ("bn",), ("relu",),
            ("conv", 16, 1, 1), ("bn",), ("relu",), ("pad", 1), ("dw", 2),
            ("bn",), ("relu",), ("conv", 32, 1, 1), ("bn",), ("relu",),
            ("gap",), ("flatten",), ("dense", 10)]


def mobilenet_like() -> list:
    """MobileNet-v1-like at 0.5 width, 96x96 input: 7 separable blocks."""
    spec = [("input", (96, 96, 3)), ("pad", 1), ("conv", 16, 3, 2), ("bn",),
            ("relu",)]
    for filters, stride in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1),
                            (256, 2), (256, 1)):
        spec += [("pad", 1)] if stride == 2 else []
        spec += [("dw", stride), ("bn",), ("relu",), ("conv", filters, 1, 1),
                 ("bn",), ("relu",)]
    return [*spec, ("gap",), ("flatten",), ("dense", 10)]


NETWORKS = {"tfmot tutorial net 32x32": TUTORIAL,
            "MobileNet-like 0.5x 96x96": mobilenet_like()}


def build(lyr, spec, *, legacy=False):
    """The layers of `spec` from `keras.layers`, or `tf_keras.layers` when
    `legacy`, for a Sequential model."""
    layers = []
    for kind, *args in spec:
        if kind == "input":
            layers.append(lyr.InputLayer(input_shape=args[0]) if legacy
                          else lyr.Input(args[0]))
        elif kind == "pad":
            layers.append(lyr.ZeroPadding2D(args[0]))
        elif kind == "conv":
            filters, size, stride = args
            layers.append(lyr.Conv2D(filters, size, strides=stride))
        elif kind == "dw":
            stride = args[0]
            layers.append(lyr.DepthwiseConv2D(
                3, strides=stride, padding="same" if stride == 1 else "valid"))
        elif kind == "bn":
            layers.append(lyr.BatchNormalization())
        elif kind == "relu":
            layers.append(lyr.ReLU())
        elif kind == "gap":
            layers.append(lyr.GlobalAveragePooling2D(keepdims=True))
        elif kind == "flatten":
            layers.append(lyr.Flatten())
        elif kind == "dense":
            layers.append(lyr.Dense(args[0]))
    return layers


# ------------------------------------------------------------ tfmot child
def tfmot_child(request: dict) -> dict:
    """Runs with TF_USE_LEGACY_KERAS=1: tf_keras and tfmot only."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    spec = request["spec"]
    with np.load(request["weights"]) as data:
        weights = [data[f"arr_{i}"] for i in range(len(data))]
    model = tf_keras.Sequential(build(tf_keras.layers, spec, legacy=True))
    model.set_weights(weights)
    out = {}
    dense = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    Path(request["dense"]).write_bytes(dense)
    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=sparsity.ConstantSparsity(
            request["sparsity"], 0, frequency=1),
        pruning_policy=sparsity.PruneForLatencyOnXNNPack())
    pruned.compile(optimizer=tf_keras.optimizers.SGD(0.0), loss="mse")
    shape = [1, *spec[0][1]]
    x = np.zeros(shape, "float32")
    y = np.zeros((1, spec[-1][1]), "float32")
    pruned.fit(x, y, epochs=1, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    Path(request["sparse"]).write_bytes(converter.convert())
    out["masks"] = {
        layer.name: np.asarray(layer.kernel.numpy() != 0).ravel().tolist()
        for layer in stripped.layers
        if type(layer).__name__ == "Conv2D" and layer.kernel.shape[0] == 1}
    out["tfmot"] = tfmot.__version__
    return out


def run_tfmot(spec, weights_file, sparsity, tmp) -> dict:
    from keras_lottery._internal.child import call_child

    request = {"spec": spec, "weights": weights_file, "sparsity": sparsity,
               "dense": os.path.join(tmp, "tfmot_dense.tflite"),
               "sparse": os.path.join(tmp, "tfmot_sparse.tflite")}
    response = call_child(
        [__file__, "--tfmot-child"], request,
        what="The tf_keras process pruning with tfmot",
        env={"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None,
             "TF_CPP_MIN_LOG_LEVEL": "2"})
    return {**request, **response}


# ------------------------------------------------------------- measuring
def ours(spec, sparsity, tmp):
    import keras
    import numpy as np

    import keras_lottery as kl

    keras.utils.set_random_seed(0)
    net = keras.Sequential(build(keras.layers, spec))
    weights_file = os.path.join(tmp, "weights.npz")
    np.savez(weights_file, *net.get_weights())
    dense = kl.export_tflite(net, os.path.join(tmp, "ours_dense.tflite"),
                             sparse=False)
    check = kl.check_xnnpack_sparse(net)
    model = kl.wrap(net, include=list(check.prunable))
    kl.prune(model, sparsity, output_rate=sparsity)
    report = kl.export_tflite(model, os.path.join(tmp, "ours_sparse.tflite"))
    masks = {name: (np.asarray(model.get_layer(name).get_mask("kernel")) != 0
                    ).ravel() for name in check.prunable}
    return weights_file, dense, report, masks, kl.check_xnnpack_sparse(model)


def file_row(name, path, report) -> dict:
    import gzip

    content = Path(path).read_bytes()
    ones = [t for t in report.tensors if t.op == "CONV_2D"
            and t.shape[1:3] == (1, 1)]
    return {
        "file": name, "bytes": len(content),
        "gzip_bytes": len(gzip.compress(content, 9)),
        "xnnpack": report.xnnpack,
        "off_xnnpack": [list(op) for op in report.off_xnnpack],
        "ops": sorted(report.op_versions),
        "one_by_one_convs": sorted({t.describe() for t in ones}),
        "one_by_one_zeros": [round(t.zeros, 4) for t in ones
                             if t.zeros is not None],
    }


def time_files(paths: dict, repeats: int, runs: int) -> dict:
    from keras_lottery import benchmark_tflite

    samples = {name: {"xnnpack": [], "builtin": []} for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            (row,) = benchmark_tflite(path, (1,), threads=1, runs=runs,
                                      warmup=max(2, runs // 10))
            samples[name]["xnnpack"].append(row.xnnpack_ms)
            samples[name]["builtin"].append(row.builtin_ms)
    return {name: {f"b1_{k}_ms": statistics.median(v) for k, v in s.items()}
            | {f"b1_{k}_ms_all": v for k, v in s.items()}
            for name, s in samples.items()}


def run_network(label, spec, sparsity, repeats, runs) -> dict:
    import numpy as np

    from keras_lottery import inspect_tflite

    with tempfile.TemporaryDirectory() as tmp:
        weights_file, dense, report, masks, check = ours(spec, sparsity, tmp)
        theirs = run_tfmot(spec, weights_file, sparsity, tmp)
        paths = {"ours sparse": report.path, "tfmot sparse": theirs["sparse"],
                 "ours dense": dense.path, "tfmot dense": theirs["dense"]}
        reports = {"ours sparse": report, "ours dense": dense,
                   "tfmot sparse": inspect_tflite(theirs["sparse"]),
                   "tfmot dense": inspect_tflite(theirs["dense"])}
        rows = [file_row(n, p, reports[n]) for n, p in paths.items()]
        timing = time_files(paths, repeats, runs)
    for row in rows:
        row.update(timing[row["file"]])
    # Both in model order (the layers' auto-names differ between processes).
    ours_masks = np.concatenate(list(masks.values()))
    tfmot_masks = np.concatenate([np.asarray(m)
                                  for m in theirs["masks"].values()])
    same = (float(np.mean(ours_masks == tfmot_masks))
            if ours_masks.shape == tfmot_masks.shape else None)
    return {"network": label, "xnnpack_check_ok": check.ok,
            "pruned_layers": list(check.prunable),
            "mask_agreement_with_tfmot": same, "rows": rows,
            "notes": list(report.notes)}


def markdown(results: dict) -> str:
    lines = ["| Network | File | Bytes | gzip | 1x1 convs stored | XNNPACK | "
             "b1 XNNPACK ms | b1 builtin ms |", "|" + "---|" * 8]
    for net in results["networks"]:
        for r in net["rows"]:
            lines.append(
                f"| {net['network']} | {r['file']} | {r['bytes']:,} | "
                f"{r['gzip_bytes']:,} | {', '.join(r['one_by_one_convs'])} | "
                f"{r['xnnpack']} | {r['b1_xnnpack_ms']:.4f} | "
                f"{r['b1_builtin_ms']:.4f} |")
    return "\n".join(lines)


def versions() -> dict:
    import importlib.metadata as md

    return {name: md.version(name) for name in (
        "keras", "tensorflow", "ai-edge-litert", "tf_keras",
        "tensorflow-model-optimization")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--tfmot-child":
        from keras_lottery._internal.child import serve

        sys.argv = [sys.argv[0], *argv[1:]]
        return serve(tfmot_child)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", default=str(
        Path(__file__).resolve().parent / "results" / "xnnpack.json"))
    args = parser.parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()
    networks = [run_network(label, spec, args.sparsity, args.repeats,
                            args.runs) for label, spec in NETWORKS.items()]
    results = {
        "command": "KERAS_BACKEND=tensorflow .venv/bin/python "
                   "benchmarks/xnnpack.py",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"platform": platform.platform(),
                    "processor": platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "versions": versions(),
        "settings": {"sparsity": args.sparsity, "repeats": args.repeats,
                     "runs": args.runs, "threads": 1, "batch": 1,
                     "weights": "random (seed 0), same for both libraries"},
        "networks": networks,
        "seconds": time.perf_counter() - start,
    }
    results["table"] = markdown(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(results["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
