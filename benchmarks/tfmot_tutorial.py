"""tfmot's "Pruning in Keras" tutorial, side by side with keras-lottery.

The tutorial (tensorflow.org/model_optimization/guide/pruning/pruning_with_keras):
an MNIST ConvNet (Reshape, Conv2D 12x3x3, MaxPooling, Flatten, Dense 10)
trained 4 epochs (batch 32, validation_split 0.1), then pruned for 2 epochs
(batch 128) with `PolynomialDecay(0.50 -> 0.80, begin_step=0,
end_step=ceil(0.9 * n / 128) * 2)`, frequency 100, stripped, saved as `.h5`
without optimizer, and zipped with deflate (the tutorial's
`get_gzipped_model_size`).

Runs, each in its own process:

- `tfmot`: tfmot 0.8.1 on tf_keras, the tutorial's code (it also trains the
  baseline; its weights are the starting point of every other run);
- keras-lottery's `GradualPruning` on TensorFlow and on JAX, in three
  variants: `guide` (the same schedule arguments, as a tfmot user types
  them), `step_offset=1` (tfmot's step numbers) and `tfmot_steps`
  (`step_offset=1` and `prune_at_end_step=False`: on tfmot's grid only, the
  guide's recipe for tfmot's exact trajectory).

A callback in every run reads the masks after each training batch and logs
each change: the batch (counted from 0) whose update first used the new
masks, the library's own step number for it, and the zeros per layer. So the
first pruning step and the sparsity trajectory are measured from the runs,
not taken from the schedules.

`--tutorial 2x4` runs tfmot's "Structural pruning with sparsity 2 by 4"
tutorial instead: its model with one Conv2D pruned unstructured
(`ConstantSparsity(0.5, 0, frequency=100)`) and a Conv2D and a Dense 2:4
(`sparsity_m_by_n=(2, 4)`), trained 2 epochs from scratch; keras-lottery
uses two `GradualPruning` callbacks, one per granularity, each with
`layer_schedules`.

Usage (19 minutes on 2 shared CPU cores with all 60,000 images):

    KERAS_LOTTERY_MNIST=/path/to/mnist.npz nice -n 10 \\
        .venv/bin/python benchmarks/tfmot_tutorial.py [--train 60000]
    ... benchmarks/tfmot_tutorial.py --variants guide --no-mask-log \\
        --out benchmarks/results/tfmot_tutorial_timing.json   # wall times
    ... benchmarks/tfmot_tutorial.py --tutorial 2x4 --train 15000 \\
        --variants step_offset=1

Writes benchmarks/results/tfmot_tutorial.json (tfmot_tutorial_2x4.json)
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
import zipfile
from importlib.metadata import version

from _common import RESULTS, describe_file, load_flat_mnist, mnist_path

from keras_lottery._internal.child import call_child, serve
from keras_lottery._internal.io import atomic_write_text

BASE_EPOCHS, BATCH, EPOCHS, VALIDATION = 4, 128, 2, 0.1
INITIAL, FINAL, FREQUENCY = 0.50, 0.80, 100
VARIANTS = ("guide", "step_offset=1", "tfmot_steps")
# The 2:4 tutorial: its pruned layers, and how tfmot prunes each.
LAYERS_2X4 = {"unstructured_pruning": "0.5", "structural_pruning": "2:4",
              "structural_pruning_dense": "2:4"}


# ----------------------------------------------------- shared by the children
def end_step(train: int) -> int:
    """The tutorial's `end_step`: the batches of its 2 pruning epochs."""
    return math.ceil(train * (1 - VALIDATION) / BATCH) * EPOCHS


def data(train: int):
    x, y, _ = load_flat_mnist(train, "train")
    xt, yt, _ = load_flat_mnist(10_000, "test")
    return x.reshape(-1, 28, 28), y, xt.reshape(-1, 28, 28), yt


def zipped_size(path: str) -> int:
    """The tutorial's `get_gzipped_model_size`: the file, deflate-zipped."""
    zipped = path + ".zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path, os.path.basename(path))
    return os.path.getsize(zipped)


def kernel_sparsity(kernels: dict) -> dict:
    """Zeros of each layer's kernel in the stripped model, and overall."""
    import numpy as np

    zeros = {k: int(v.size - np.count_nonzero(v)) for k, v in kernels.items()}
    sizes = {k: int(v.size) for k, v in kernels.items()}
    return {"overall": sum(zeros.values()) / sum(sizes.values()),
            "layers": {k: zeros[k] / sizes[k] for k in kernels},
            "zeros": zeros, "sizes": sizes}


def tfmot_mask_logger(k, model):
    """`mask_logger` over the masks and the step of tfmot's wrappers."""
    wrappers = [layer for layer in model.layers
                if getattr(layer, "pruning_vars", None)]
    return mask_logger(
        k.callbacks.Callback,
        lambda m: {w.layer.name: w.pruning_vars[0][1].numpy() for w in wrappers},
        lambda m: int(wrappers[0].pruning_step.numpy()))


def mask_logger(callback_class, read_masks, step_of):
    """A callback of `callback_class` logging every change of the masks."""
    import numpy as np

    def zeros(model):
        return {k: int(m.size - np.count_nonzero(m))
                for k, m in read_masks(model).items()}

    class MaskLog(callback_class):
        def on_train_begin(self, logs=None):
            self.batch, self.events = 0, []
            self.last = zeros(self.model)
            self.sizes = {k: int(m.size) for k, m in read_masks(self.model).items()}

        def on_train_batch_end(self, batch, logs=None):
            now = zeros(self.model)
            if now != self.last:
                total = sum(self.sizes.values())
                self.events.append({
                    "batch": self.batch, "step": step_of(self.model),
                    "sparsity": sum(now.values()) / total, "zeros": now})
                self.last = now
            self.batch += 1

    return MaskLog()


def _result(log, accuracy, baseline_accuracy, kernels, sizes, seconds, start):
    if not hasattr(log, "events"):  # --no-mask-log: the callback did not run
        log.events = []
    return {
        "first_prune_batch": log.events[0]["batch"] if log.events else None,
        "first_prune_step": log.events[0]["step"] if log.events else None,
        "events": log.events,
        "final_sparsity": kernel_sparsity(kernels),
        "test_accuracy": float(accuracy),
        "baseline_test_accuracy": None if baseline_accuracy is None
        else float(baseline_accuracy),
        "zipped_bytes": sizes,
        "prune_fit_seconds": seconds,
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------ tfmot, tf_keras
def run_tfmot(request: dict) -> dict:
    """The tutorial's code, on tf_keras with tfmot (TF_USE_LEGACY_KERAS=1)."""
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as k

    start, out = time.perf_counter(), request["out"]
    k.utils.set_random_seed(request["seed"])
    x, y, xt, yt = data(request["train"])
    layers = k.layers
    model = k.Sequential([
        layers.InputLayer(input_shape=(28, 28)),
        layers.Reshape(target_shape=(28, 28, 1)),
        layers.Conv2D(12, (3, 3), activation="relu", name="conv2d"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(10, name="dense"),
    ])
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x, y, epochs=BASE_EPOCHS, validation_split=VALIDATION, verbose=0)
    baseline = model.evaluate(xt, yt, verbose=0)[1]
    np.savez(os.path.join(out, "baseline.npz"), *model.get_weights())
    k.models.save_model(model, os.path.join(out, "baseline.h5"),
                        include_optimizer=False)

    sparsity = tfmot.sparsity.keras
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=INITIAL, final_sparsity=FINAL, begin_step=0,
        end_step=end_step(len(x)))
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", loss, metrics=["accuracy"])
    log = tfmot_mask_logger(k, pruned)
    began = time.perf_counter()
    pruned.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=VALIDATION,
               verbose=0, callbacks=[
                   sparsity.UpdatePruningStep(),
                   sparsity.PruningSummaries(log_dir=os.path.join(out, "logs")),
                   *([log] if request["log"] else [])])
    seconds = time.perf_counter() - began
    accuracy = pruned.evaluate(xt, yt, verbose=0)[1]
    stripped = sparsity.strip_pruning(pruned)
    path = os.path.join(out, "tfmot_pruned.h5")
    k.models.save_model(stripped, path, include_optimizer=False)
    kernels = {layer.name: layer.kernel.numpy() for layer in stripped.layers
               if hasattr(layer, "kernel")}
    sizes = {"h5": zipped_size(path),
             "baseline_h5": zipped_size(os.path.join(out, "baseline.h5"))}
    return _result(log, accuracy, baseline, kernels, sizes, seconds, start)


# ------------------------------------------------------ keras-lottery, Keras 3
def run_ours(request: dict) -> dict:
    """The same tutorial with `GradualPruning` on this process's backend."""
    import keras
    import numpy as np

    import keras_lottery as kl

    start, out, variant = time.perf_counter(), request["out"], request["variant"]
    keras.utils.set_random_seed(request["seed"])
    x, y, xt, yt = data(request["train"])
    model = keras.Sequential([
        keras.Input((28, 28)),
        keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(12, (3, 3), activation="relu", name="conv2d"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="dense"),
    ])
    with np.load(request["baseline"]) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    baseline = model.evaluate(xt, yt, verbose=0)[1]

    offset = 0 if variant == "guide" else 1
    # tfmot_steps: on tfmot's grid only, not at an off-grid end_step.
    schedule = kl.PolynomialDecay(
        initial_sparsity=INITIAL, final_sparsity=FINAL, begin_step=0,
        end_step=end_step(len(x)), prune_at_end_step=variant != "tfmot_steps")
    pruned = kl.wrap(model)
    pruned.compile("adam", loss, metrics=["accuracy"])
    pruning = kl.GradualPruning(pruning_schedule=schedule, step_offset=offset)
    log = mask_logger(
        keras.callbacks.Callback,
        lambda m: {k.split("/")[0]: v for k, v in kl.get_masks(m).items()},
        lambda m: int(keras.ops.convert_to_numpy(m.optimizer.iterations))
        - 1 + offset)
    began = time.perf_counter()
    pruned.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=VALIDATION,
               verbose=0, callbacks=[pruning, *([log] if request["log"] else [])])
    seconds = time.perf_counter() - began
    accuracy = pruned.evaluate(xt, yt, verbose=0)[1]
    stripped = kl.strip(pruned)
    sizes = {}
    for ext in ("h5", "keras"):
        path = os.path.join(out, f"ours.{ext}")
        stripped.save(path)
        sizes[ext] = zipped_size(path)
    kernels = {layer.name: keras.ops.convert_to_numpy(layer.kernel)
               for layer in stripped.layers if hasattr(layer, "kernel")}
    result = _result(log, accuracy, baseline, kernels, sizes, seconds, start)
    result["callback_steps"] = [e.step for e in pruning.events]
    return result


# ------------------------------------------------- the 2:4 tutorial, both sides
def layers_2x4(layers, prune=lambda layer, kind: layer) -> list:
    """The 2:4 tutorial's model after its input; `prune` wraps its 3 layers."""
    return [
        prune(layers.Conv2D(32, 5, padding="same", activation="relu",
                            name="unstructured_pruning"), "0.5"),
        layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        prune(layers.Conv2D(64, 5, padding="same", name="structural_pruning"),
              "2:4"),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        layers.Flatten(),
        prune(layers.Dense(1024, activation="relu",
                           name="structural_pruning_dense"), "2:4"),
        layers.Dropout(0.4),
        layers.Dense(10, activation="softmax"),  # sic, with from_logits=True
    ]


def finish_2x4(log, accuracy, kernels, sizes, seconds, start) -> dict:
    """`_result`, and the 4-groups along the input axis with over 2 nonzeros."""
    import numpy as np

    result = _result(log, accuracy, None, kernels, sizes, seconds, start)
    violations = {}
    for name, kernel in kernels.items():
        if LAYERS_2X4[name] == "2:4":
            moved = np.moveaxis(kernel != 0, -2, -1)
            groups = moved.reshape(-1, moved.shape[-1] // 4, 4)
            violations[name] = int((groups.sum(-1) > 2).sum())
    result["groups_over_2_of_4"] = violations
    return result


def run_tfmot_2x4(request: dict) -> dict:
    """tfmot's 2:4 tutorial, its code, on tf_keras."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as k

    start, out = time.perf_counter(), request["out"]
    k.utils.set_random_seed(request["seed"])
    x, y, xt, yt = data(request["train"])
    sparsity = tfmot.sparsity.keras
    params = {"2:4": {"sparsity_m_by_n": (2, 4)}, "0.5": {
        "pruning_schedule": sparsity.ConstantSparsity(0.5, begin_step=0,
                                                      frequency=100)}}
    model = k.Sequential([k.layers.InputLayer(input_shape=(28, 28, 1)), *layers_2x4(
        k.layers, lambda layer, kind: sparsity.prune_low_magnitude(
            layer, **params[kind]))])
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    log = tfmot_mask_logger(k, model)
    began = time.perf_counter()
    model.fit(x[..., None], y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
              validation_split=VALIDATION, callbacks=[
                  sparsity.UpdatePruningStep(), *([log] if request["log"] else [])])
    seconds = time.perf_counter() - began
    accuracy = model.evaluate(xt[..., None], yt, verbose=0)[1]
    stripped = sparsity.strip_pruning(model)
    path = os.path.join(out, "tfmot_2x4.h5")
    k.models.save_model(stripped, path, include_optimizer=False)
    kernels = {layer.name: layer.kernel.numpy() for layer in stripped.layers
               if layer.name in LAYERS_2X4}
    return finish_2x4(log, accuracy, kernels, {"h5": zipped_size(path)}, seconds,
                      start)


def run_ours_2x4(request: dict) -> dict:
    """The 2:4 tutorial with two `GradualPruning`s, one per granularity."""
    import keras

    import keras_lottery as kl

    start, out = time.perf_counter(), request["out"]
    keras.utils.set_random_seed(request["seed"])
    x, y, xt, yt = data(request["train"])
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers_2x4(keras.layers)])
    plain = request["variant"] == "keras"  # Keras 3 alone: no pruning at all
    if not plain:
        model = kl.wrap(model, include=list(LAYERS_2X4))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    offset = 0 if request["variant"] == "guide" else 1
    pattern = kl.ConstantSparsity(0.5, begin_step=0, end_step=0)  # first batch
    callbacks = [
        kl.GradualPruning(layer_schedules={"unstructured_pruning": kl.ConstantSparsity(
            0.5, begin_step=0, frequency=100)}, step_offset=offset),
        kl.GradualPruning(layer_schedules={
            "structural_pruning": pattern, "structural_pruning_dense": pattern},
            granularity="2:4")][: 0 if plain else 2]
    log = mask_logger(
        keras.callbacks.Callback,
        lambda m: {k.split("/")[0]: v for k, v in kl.get_masks(m).items()},
        lambda m: int(keras.ops.convert_to_numpy(m.optimizer.iterations)) - 1)
    began = time.perf_counter()
    model.fit(x[..., None], y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
              validation_split=VALIDATION,
              callbacks=[*callbacks, *([log] if request["log"] and not plain
                                       else [])])
    seconds = time.perf_counter() - began
    accuracy = model.evaluate(xt[..., None], yt, verbose=0)[1]
    stripped = model if plain else kl.strip(model)
    path = os.path.join(out, "ours_2x4.h5")
    stripped.save(path)
    kernels = {layer.name: keras.ops.convert_to_numpy(layer.kernel)
               for layer in stripped.layers if layer.name in LAYERS_2X4}
    result = finish_2x4(log, accuracy, kernels, {"h5": zipped_size(path)},
                        seconds, start)
    result["callback_steps"] = [[e.step for e in c.events] for c in callbacks]
    return result


def child(request: dict) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {("pruning", "tfmot"): run_tfmot, ("pruning", "ours"): run_ours,
            ("2x4", "tfmot"): run_tfmot_2x4, ("2x4", "ours"): run_ours_2x4}[
        request["tutorial"], request["kind"]](request)


# ------------------------------------------------------------------ the parent
def compare(reference: list, events: list) -> dict:
    """Whether `events` prune at `reference`'s batches to its zero counts."""
    batches = [e["batch"] for e in events]
    same = batches == [e["batch"] for e in reference]
    differences = [
        abs(a["zeros"][k] - b["zeros"][k])
        for a, b in zip(reference, events) for k in a["zeros"]]
    return {"same_batches": same, "batches": batches,
            "reference_batches": [e["batch"] for e in reference],
            "max_zero_count_difference": max(differences, default=0),
            "same_trajectory": same and not any(differences)}


def table(runs: dict) -> str:
    rows = ["| run | first pruning: batch (library's step) | pruning batches "
            "| sparsity (per layer) | test accuracy | zipped .h5 | "
            "pruning fit |", "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        final = run["final_sparsity"]
        layers = ", ".join(f"{v:.4f}" for v in final["layers"].values())
        rows.append(
            f"| {name} | {run['first_prune_batch']} ({run['first_prune_step']}) "
            f"| {', '.join(str(e['batch']) for e in run['events'])} "
            f"| {final['overall']:.5f} ({layers}) | {run['test_accuracy']:.4f} "
            f"| {run['zipped_bytes']['h5']:,} B | {run['prune_fit_seconds']:.0f} s |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60_000,
                        help="training images (the tutorial: all 60,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--tutorial", choices=("pruning", "2x4"), default="pruning",
                        help="Pruning in Keras, or the 2:4 sparsity tutorial")
    parser.add_argument("--variants", default=None,
                        help=f"of {VARIANTS} (2x4: the first two, or 'keras': "
                        "Keras 3 alone, not pruned)")
    parser.add_argument("--no-mask-log", action="store_true",
                        help="no per-batch mask reads (for wall times)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    two = args.tutorial == "2x4"
    variants = (args.variants or ",".join(VARIANTS[:2] if two else VARIANTS))
    args.out = args.out or str(
        RESULTS / f"tfmot_tutorial{'_2x4' if two else ''}.json")
    if not mnist_path().is_file():
        sys.exit(f"MNIST not found at $KERAS_LOTTERY_MNIST ({mnist_path()}): "
                 "this benchmark measures accuracy, so it needs the real data.")
    runs, started = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfmot_tutorial_") as tmp:
        common = {"train": args.train, "seed": args.seed,
                  "log": not args.no_mask_log, "tutorial": args.tutorial}
        runs["tfmot 0.8.1 (tf_keras)"] = call_child(
            [__file__, "--child"], {**common, "kind": "tfmot", "out": tmp},
            what="The tfmot (tf_keras) run", timeout=3600,
            env={"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None})
        print(table(runs), flush=True)
        for backend in args.backends.split(","):
            for variant in variants.split(","):
                folder = tempfile.mkdtemp(dir=tmp)
                runs[f"keras-lottery {backend}, {variant}"] = call_child(
                    [__file__, "--child"],
                    {**common, "kind": "ours", "variant": variant, "out": folder,
                     "baseline": os.path.join(tmp, "baseline.npz")},
                    what=f"The keras-lottery run ({backend}, {variant})",
                    timeout=3600,
                    env={"KERAS_BACKEND": backend, "TF_USE_LEGACY_KERAS": None})
                print(table(runs).splitlines()[-1], flush=True)
    reference = runs["tfmot 0.8.1 (tf_keras)"]["events"]
    for run in list(runs.values())[1:]:
        if reference:
            run["versus_tfmot"] = compare(reference, run["events"])
    entry = {
        "date": datetime.date.today().isoformat(),
        "command": "nice -n 10 .venv/bin/python benchmarks/tfmot_tutorial.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]).replace(
                       f"{RESULTS.parents[1]}{os.sep}", ""),
        "data": f"MNIST, {describe_file(mnist_path())}",
        "tutorial": "Structural pruning with sparsity 2 by 4" if two
        else "Pruning in Keras",
        "budget": {"train_images": args.train, "validation_split": VALIDATION,
                   "baseline_epochs": 0 if two else BASE_EPOCHS,
                   "pruning_epochs": EPOCHS, "batch_size": BATCH,
                   "test_images": 10_000, "schedule": (
                       f"{LAYERS_2X4}: 0.5 = ConstantSparsity(0.5, begin_step=0, "
                       "frequency=100), 2:4 = tfmot's sparsity_m_by_n=(2, 4)")
                   if two else (
                       f"PolynomialDecay({INITIAL}, {FINAL}, begin_step=0, "
                       f"end_step={end_step(args.train)}, frequency={FREQUENCY})")},
        "mask_log": "masks read after every batch" if not args.no_mask_log
                    else "none (wall times only)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "versions": {name: version(name) for name in (
            "tensorflow-model-optimization", "tf-keras", "keras", "tensorflow",
            "jax")},
        "seconds": time.perf_counter() - started,
        "runs": runs,
    }
    atomic_write_text(args.out, json.dumps(entry, indent=2) + "\n")
    print(table(runs))
    for name, run in list(runs.items())[1:]:
        print(f"{name}: versus tfmot {run.get('versus_tfmot')}")
    print(f"wrote {args.out} in {entry['seconds']:.0f}s")


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(serve(child))
    main()
