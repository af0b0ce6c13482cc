"""Training-step overhead of `PrunableWrapper`: wrapped over plain model.

Measured, not asserted. For each model (LeNet-300-100 and a small ConvNet,
batch 60, Adam), with all-ones masks and with half of every kernel pruned,
a plain and a wrapped copy are trained side by side in one process, in
alternating blocks of steps (one short `model.fit` epoch per block), each
step timed to completion, in wall time and in the process's CPU time. The
ratio reported is the median, over blocks, of median(wrapped) /
median(plain) within each pair of blocks, so slow phases of a shared
machine hit both models alike.

Where `tensorflow-model-optimization` and `tf_keras` are installed, the same
measurement is made for tfmot's `prune_low_magnitude` on tf_keras (Keras 2),
in its own process, for LeNet-300-100: the overhead keras-lottery has to beat.

Usage::

    KERAS_BACKEND=jax python benchmarks/overhead.py
    python benchmarks/overhead.py --backend all      # one process per backend

Writes `benchmarks/results/overhead.json` and the "Wrapper overhead" section
of `docs/benchmarks.md` (only the text between its markers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "overhead.json"
DOCS = ROOT / "docs" / "benchmarks.md"
BACKENDS = ("tensorflow", "jax", "torch")
START, END = "<!-- overhead:start -->", "<!-- overhead:end -->"
BATCH = 60
SPARSITIES = (0.0, 0.5)


# --------------------------------------------------------------------- data
def load_data(n: int):
    """Returns `(x, y, source)`: MNIST images (n, 28, 28) if available."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_flat_mnist

    x, y, source = load_flat_mnist(n)
    return x.reshape(-1, 28, 28), y, source


# ------------------------------------------------------------------ timing
def _timer(callback_base):
    """A `fit` callback recording wall and CPU time between batch ends."""

    class StepTimer(callback_base):
        def __init__(self):
            super().__init__()
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self._last = None

        def on_train_batch_end(self, batch, logs=None):
            now = (time.perf_counter(), time.process_time())
            if self._last is not None:
                self.wall.append(now[0] - self._last[0])
                self.cpu.append(now[1] - self._last[1])
            self._last = now

    return StepTimer


def fit_runner(model, x, y, callback_base, extra_callbacks=(), batch=BATCH):
    """Returns `run(steps) -> {"wall": [...], "cpu": [...]}` (seconds/step).

    Each call is one `model.fit` epoch of `steps` batches of `BATCH`; the
    time of a step is the time between consecutive `on_train_batch_end`
    calls (a callback that is not async-safe makes `fit` hand it host
    values, so each step is timed to completion). The first step of each
    call, which pays for `fit`'s set-up, is not timed. CPU time is the
    process's, all its threads: the work a step costs, whatever else the
    machine runs.
    """
    timer_cls = _timer(callback_base)
    batches = len(y) // batch
    state = {"offset": 0}

    def take(data, start, steps):
        if isinstance(data, dict):
            return {k: take(v, start, steps) for k, v in data.items()}
        return data[start * batch : (start + steps) * batch]

    def run(steps):
        start = state["offset"] % max(1, batches - steps)
        state["offset"] += steps
        timer = timer_cls()
        model.fit(
            take(x, start, steps),
            take(y, start, steps),
            batch_size=batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[timer, *extra_callbacks],
        )
        return {"wall": timer.wall, "cpu": timer.cpu}

    return run


def interleaved(runners: dict, *, repeats: int, block: int) -> dict[str, dict]:
    """Times alternating blocks of training steps for every runner.

    Repeat r runs a block of `block` steps of each runner in turn, the order
    reversed every other repeat, and keeps each block's median step time,
    wall and CPU.

    Args:
        runners: name -> `run(steps)` as returned by `fit_runner`; the first
            is the baseline.
        repeats: number of blocks per runner.
        block: steps per block.

    Returns:
        clock ("wall", "cpu") -> name -> {"median_ms", "per_repeat_ms"};
        every runner after the first also gets "ratios" (per repeat, over
        the baseline's block of the same repeat) and "ratio", their median.
    """
    names = list(runners)
    per_repeat = {c: {n: [] for n in names} for c in ("wall", "cpu")}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times = runners[name](block)
            for clock in per_repeat:
                per_repeat[clock][name].append(statistics.median(times[clock]))
    result = {}
    for clock, by_name in per_repeat.items():
        result[clock] = {
            n: {
                "median_ms": 1e3 * statistics.median(by_name[n]),
                "per_repeat_ms": [round(1e3 * t, 4) for t in by_name[n]],
            }
            for n in names
        }
        base = by_name[names[0]]
        for name in names[1:]:
            ratios = [b / a for a, b in zip(base, by_name[name])]
            result[clock][name]["ratios"] = [round(x, 4) for x in ratios]
            result[clock][name]["ratio"] = statistics.median(ratios)
    return result


def _summary(res: dict, base: str, other: str) -> dict:
    out = {}
    for clock, by_name in res.items():
        ratios = sorted(by_name[other]["ratios"])
        q = len(ratios) // 4
        out[clock] = {
            "plain_ms": round(by_name[base]["median_ms"], 4),
            "wrapped_ms": round(by_name[other]["median_ms"], 4),
            "ratio": round(by_name[other]["ratio"], 4),
            "ratio_iqr": [ratios[q], ratios[-q - 1]],
            "ratios": by_name[other]["ratios"],
            "plain_per_repeat_ms": by_name[base]["per_repeat_ms"],
            "wrapped_per_repeat_ms": by_name[other]["per_repeat_ms"],
        }
    return out


def limit_threads(threads: int) -> None:
    """Caps the compute threads of whichever frameworks are loaded.

    On a shared CPU, frameworks that spin on all cores measure other
    people's load more than their own work; one thread each keeps the
    plain/wrapped comparison about the models. (XLA's CPU threads are set
    through XLA_FLAGS before JAX starts: see `_thread_env`.)
    """
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _thread_env(threads: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false"
    return {
        "XLA_FLAGS": f"{flags} intra_op_parallelism_threads={threads}".strip(),
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
    }


# --------------------------------------------------------------- keras 3
def lenet(keras):
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="lenet_300_100",
    )


def convnet(keras):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="small_convnet",
    )


def resnet50(keras):
    return keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10,
        classifier_activation=None,
    )


def bert_tiny(keras):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=1000, num_layers=2, num_heads=4, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=32,
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=10, preprocessor=None, name="bert_tiny"
    )


def _inputs(build, x, n, batch):
    """Training inputs for `build`, `n` batches of `batch`."""
    import numpy as np

    rng = np.random.default_rng(0)
    if build is lenet:
        return x.reshape(-1, 784)
    if build is convnet:
        return x[..., None]
    if build is resnet50:
        return rng.random((n * batch, 64, 64, 3), dtype="float32")
    tokens = rng.integers(0, 1000, (n * batch, 32)).astype("int32")
    return {"token_ids": tokens, "segment_ids": np.zeros_like(tokens),
            "padding_mask": np.ones_like(tokens)}


def memory_per_weight(kl, model) -> dict:
    """Bytes of keras-lottery state per prunable weight, by kind."""
    from keras_lottery.core.model import wrappers

    masks = rewind = others = count = 0
    for wrapper in wrappers(model).values():
        for name in wrapper.weight_names:
            mask = wrapper.mask_variable(name)
            size = int(np.prod(mask.shape))
            count += size
            masks += size * _itemsize(mask)
            rewind += size * _itemsize(wrapper.initial_variable(name))
        others += sum(int(np.prod(v.shape)) * _itemsize(v)
                      for v in wrapper._other_initials)
    return {"prunable_weights": count,
            "mask_bytes_per_weight": masks / count,
            "rewind_point_bytes_per_weight": rewind / count,
            "other_rewind_bytes": others}


def _itemsize(variable) -> int:
    import numpy as np

    return np.dtype(variable.dtype).itemsize


def run_keras3(repeats: int, block: int, threads: int) -> dict:
    """Plain vs wrapped on the current KERAS_BACKEND, in this process."""
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401  (torch before tensorflow)
    import keras
    import numpy as np

    import keras_lottery as kl
    from keras_lottery.core.model import wrappers

    limit_threads(threads)
    keras.utils.set_random_seed(0)
    x, y, source = load_data(100 * BATCH)
    out = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": source,
        "models": {},
    }
    # (builder, batch, blocks, steps per block): the large models get fewer,
    # shorter blocks (a ResNet50 step is ~100x a LeNet step).
    models = ((lenet, BATCH, repeats, block), (convnet, BATCH, repeats, block),
              (resnet50, 8, max(3, repeats // 3), max(2, block // 4)),
              (bert_tiny, 8, max(3, repeats // 3), max(2, block // 4)))
    for (build, batch, n_repeats, n_block), sparsity in itertools.product(
        models, SPARSITIES
    ):
        inputs = _inputs(build, x, 100, batch)
        targets = y[: len(keras.tree.flatten(inputs)[0])]
        keras.utils.set_random_seed(0)
        plain = build(keras)
        keras.utils.set_random_seed(0)
        wrapped = kl.wrap(build(keras))  # in place for KerasHub: build twice
        # 0%: the wrapper's own cost (all-ones masks). 50%: half of every
        # kernel pruned, as in a search, where exact-zero gradients also
        # leave zeros in the optimizer's slots.
        rng = np.random.default_rng(0)
        for wrapper in wrappers(wrapped).values():
            for name in wrapper.weight_names:
                shape = wrapper.get_mask(name).shape
                wrapper.set_mask(name, rng.random(shape) >= sparsity)
        for model in (plain, wrapped):
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        base = keras.callbacks.Callback
        runners = {
            "plain": fit_runner(plain, inputs, targets, base, batch=batch),
            "wrapped": fit_runner(wrapped, inputs, targets, base, batch=batch),
        }
        for run in runners.values():  # warm-up: compile / trace
            run(n_block)
        res = interleaved(runners, repeats=n_repeats, block=n_block)
        key = f"{plain.name}, {sparsity:.0%} pruned"
        out["models"][key] = {**_summary(res, "plain", "wrapped"),
                              "batch": batch, "repeats": n_repeats,
                              "block": n_block,
                              "memory": memory_per_weight(kl, wrapped)}
        print(f"[overhead] {key}: {_line(out['models'][key])}", file=sys.stderr,
              flush=True)
    return out


# ------------------------------------------------------------------ tfmot
def run_tfmot(repeats: int, block: int, threads: int) -> dict:
    """Plain vs `prune_low_magnitude` LeNet on tf_keras, in this process."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow_model_optimization as tfmot
    import tf_keras

    limit_threads(threads)
    tf_keras.utils.set_random_seed(0)
    x, y, source = load_data(100 * BATCH)
    x = x.reshape(-1, 784)

    def build():
        return tf_keras.Sequential(
            [
                tf_keras.Input((784,)),
                tf_keras.layers.Dense(300, activation="relu"),
                tf_keras.layers.Dense(100, activation="relu"),
                tf_keras.layers.Dense(10),
            ]
        )

    plain = build()
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        build(),
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0),
    )
    for model in (plain, pruned):
        model.compile(
            optimizer=tf_keras.optimizers.Adam(1e-3),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    base = tf_keras.callbacks.Callback
    runners = {
        "plain": fit_runner(plain, x, y, base),
        "tfmot": fit_runner(
            pruned, x, y, base, [tfmot.sparsity.keras.UpdatePruningStep()]
        ),
    }
    for run in runners.values():
        run(block)
    res = interleaved(runners, repeats=repeats, block=block)
    return {
        "backend": "tensorflow (tf_keras)",
        "tf_keras": tf_keras.__version__,
        "tfmot": tfmot.__version__,
        "data": source,
        "models": {"lenet_300_100, 50% pruned": _summary(res, "plain", "tfmot")},
    }


def tfmot_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("tensorflow_model_optimization", "tf_keras")
    )


# ------------------------------------------------------------- reporting
def _subprocess(args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    """The "Wrapper overhead" section of docs/benchmarks.md, with markers."""
    lines = [
        START,
        "## Wrapper overhead",
        "",
        "Median training-step time (`model.fit`, Adam) of the wrapped model",
        "over the plain one, with all-ones masks (the wrapper's own cost) and",
        "with half of every kernel pruned: LeNet-300-100 and a small ConvNet",
        "at batch 60, ResNet50 (64x64 inputs) and a tiny KerasHub BERT",
        "classifier (2 layers, hidden 64, 32 tokens) at batch 8. Both models",
        "train side by side in one process, in alternating blocks of steps",
        f"({results['block']} steps, {results['repeats']} blocks per model for",
        "the small models; a quarter of the steps and a third of the blocks",
        "for the large ones), the order reversed every other block. Ratio:",
        "the median over blocks of wrapped/plain, with its interquartile",
        "range. CPU time is the process's, all threads: the work a step",
        "costs, which other jobs on a shared machine change less than wall",
        "time, what a user waits. tfmot is `prune_low_magnitude` on tf_keras",
        "(Keras 2) with its `UpdatePruningStep` callback. Measured, not",
        "asserted; all numbers, per block, are in",
        "`benchmarks/results/overhead.json`.",
        "",
        "What costs: nothing in the forward or backward pass (pruned weights",
        "are held at 0.0 in the variables). After each optimizer update, a",
        "weight constraint sets the pruned entries back to zero: one",
        "elementwise pass over each kernel per step, beside the optimizer's",
        "own several. Memory: a boolean mask (1 byte per prunable weight)",
        "and the float32 rewind point (4 bytes), columns on the right.",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}; {results['threads']} compute thread(s)"
        f" per framework. Data: {results['data']}.",
        "",
        "| Backend | Model | Plain CPU ms/step | Wrapped CPU ms/step "
        "| Ratio, CPU | Ratio, wall | Mask / rewind point, bytes per weight |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        label = run["backend"]
        if "tfmot" in run:
            label = f"tfmot {run['tfmot']} (tf_keras)"
        for name, m in run["models"].items():
            cpu, wall = m["cpu"], m["wall"]
            memory = m.get("memory")
            memory = (f"{memory['mask_bytes_per_weight']:g} / "
                      f"{memory['rewind_point_bytes_per_weight']:g}"
                      if memory else "-")
            lines.append(
                f"| {label} | {name} | {cpu['plain_ms']:.3f} | "
                f"{cpu['wrapped_ms']:.3f} | {_ratio(cpu)} | {_ratio(wall)} "
                f"| {memory} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def _ratio(m: dict) -> str:
    low, high = m["ratio_iqr"]
    return f"{m['ratio']:.3f} [{low:.3f}, {high:.3f}]"


def write_docs(section: str) -> None:
    """Replaces this benchmark's section of docs/benchmarks.md, only it."""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text() if DOCS.is_file() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def _line(m: dict) -> str:
    cpu = m["cpu"]
    return (
        f"CPU plain {cpu['plain_ms']:.3f} ms, wrapped {cpu['wrapped_ms']:.3f} "
        f"ms, ratio {_ratio(cpu)}; wall ratio {_ratio(m['wall'])}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "all"],
        help="default: $KERAS_BACKEND, else tensorflow; `all` runs each "
        "backend in its own process",
    )
    parser.add_argument("--repeats", type=int, default=15, help="blocks per model")
    parser.add_argument("--block", type=int, default=16, help="steps per block")
    parser.add_argument(
        "--threads", type=int, default=1, help="compute threads per framework"
    )
    parser.add_argument("--no-tfmot", action="store_true", help="skip tfmot")
    parser.add_argument("--worker", choices=["keras3", "tfmot"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "keras3":
        print(json.dumps(run_keras3(args.repeats, args.block, args.threads)))
        return
    if args.worker == "tfmot":
        print(json.dumps(run_tfmot(args.repeats, args.block, args.threads)))
        return

    backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    backends = BACKENDS if backend == "all" else (backend,)
    common = [
        *("--repeats", str(args.repeats)),
        *("--block", str(args.block)),
        *("--threads", str(args.threads)),
    ]
    env = _thread_env(args.threads)
    runs = []
    for name in backends:
        print(f"[overhead] {name} ...", file=sys.stderr, flush=True)
        run = _subprocess(
            ["--worker", "keras3", *common], {**env, "KERAS_BACKEND": name}
        )
        runs.append(run)
        for model, m in run["models"].items():
            print(f"[overhead] {name} {model}: {_line(m)}", file=sys.stderr)
    if not args.no_tfmot and tfmot_available():
        print("[overhead] tfmot ...", file=sys.stderr, flush=True)
        run = _subprocess(
            ["--worker", "tfmot", *common],
            {**env, "TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": "tensorflow"},
        )
        runs.append(run)
        for model, m in run["models"].items():
            print(f"[overhead] tfmot {model}: {_line(m)}", file=sys.stderr)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/overhead.py", *given])
    if args.backend is None:
        command = f"KERAS_BACKEND={backend} {command}"
    results = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"Python {platform.python_version()}",
        "threads": args.threads,
        "batch": BATCH,
        "repeats": args.repeats,
        "block": args.block,
        "data": runs[0]["data"],
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_docs(markdown(results))
    print(f"[overhead] wrote {RESULTS} and {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
