"""Pruning at initialization on LeNet-300-100 / MNIST, with the ablations of
Frankle, Dziugaite, Roy & Carbin (2021), "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?".

For each seed, one initialization theta_0 of a 784-300-100-10 ReLU network
(Keras' default Glorot-uniform) is pruned at init, before any training, to
each sparsity by SNIP (one batch of 100 training images), GraSP (ten
images per class; logits divided by 200 before the loss, as in the
authors' code), SynFlow (100 rounds, data-free), magnitude (|theta_0|) and
random pruning, all global except random (each layer to the target
sparsity). Each mask is then trained (Adam 1.2e-3, batch 128, `--epochs`
epochs over `--train` images) as it is, and under the two ablations:

- shuffle: each layer's mask shuffled (`kl.shuffle_masks`), same per-layer
  sparsity, then rewound to theta_0;
- reinit: the kept weights re-drawn from the initializers
  (`kl.rewind(model, to="random")`).

The paper finds the pruning-at-init methods no worse under either
ablation (they act as a choice of per-layer sparsity), unlike IMP tickets.

Usage:

    nice python benchmarks/pruning_at_init.py --backend jax --seeds 0 1 \\
        --epochs 2 [--train 60000] [--sparsities 0.9 0.97 0.99]

writes benchmarks/results/pruning_at_init_<backend>.json and prints a
Markdown table of mean test accuracy (and, for several seeds, min-max).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep
from _common import describe_file, load_flat_mnist, mnist_path

METHODS = ("snip", "grasp", "synflow", "magnitude", "random")
ABLATIONS = ("none", "shuffle", "reinit")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--sparsities", type=float, nargs="+",
                        default=[0.9, 0.97, 0.99])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    return parser.parse_args(argv)


def load(n):
    x, y, data = load_flat_mnist(n)
    xt, yt, _ = load_flat_mnist(10_000, split="test")
    if not data.startswith("MNIST"):
        raise SystemExit(f"MNIST not found at {mnist_path()}: set "
                         "KERAS_LOTTERY_MNIST to an mnist.npz (Keras layout).")
    return x, y, xt, yt


def lenet(seed):
    import keras

    import keras_lottery as kl

    keras.utils.set_random_seed(seed)
    return kl.wrap(keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu"),
        keras.layers.Dense(100, activation="relu"),
        keras.layers.Dense(10),
    ]))


def criterion(method, x, y):
    import keras
    import numpy as np

    from keras_lottery.pruning.criteria import SNIP, GraSP, SynFlow

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if method == "snip":
        return SNIP(data=(x[:100], y[:100]), loss=ce)
    if method == "grasp":
        picks = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(10)])
        return GraSP(data=(x[picks], y[picks]),
                        loss=lambda t, p: ce(t, p / 200.0))
    if method == "synflow":
        return SynFlow(rounds=100)
    return method


def compiled_lenet(seed):
    """One wrapped, compiled LeNet per seed, reused by every run (one
    compilation of the train step), and its state at init."""
    import keras

    model = lenet(seed)
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model, model.get_weights()


def reset(model, state):
    """Back to theta_0, dense, with a fresh optimizer."""
    import numpy as np

    import keras_lottery as kl

    kl.set_masks(model, {k: np.ones_like(m) for k, m in kl.get_masks(model).items()})
    model.set_weights(state)
    kl.capture_init(model)
    if model.optimizer.built:
        kl.reset_optimizer(model.optimizer)


def run_one(model, state, method, sparsity, ablation, seed, data, epochs):
    import keras

    import keras_lottery as kl

    x, y, xt, yt = data
    reset(model, state)
    start = time.perf_counter()
    kl.prune(model, sparsity=sparsity, criterion=criterion(method, x, y),
             scope="layer" if method == "random" else "global", seed=seed)
    scored = time.perf_counter() - start
    if ablation == "shuffle":
        kl.shuffle_masks(model, seed=seed + 1000)
        kl.rewind(model, to="init")  # revived positions get theta_0 back
    elif ablation == "reinit":
        kl.rewind(model, to="random", seed=seed + 2000)
    layers = {k: round(1 - float(m.mean()), 4) for k, m in kl.get_masks(model).items()}
    keras.utils.set_random_seed(seed)
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    _, acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    return {"method": method, "sparsity": sparsity, "ablation": ablation,
            "seed": seed, "test_accuracy": float(acc),
            "layer_sparsity": layers, "scoring_seconds": round(scored, 2)}


def table(runs, sparsities, methods):
    rows = ["| method | ablation | " + " | ".join(
        f"{100 * s:g}% sparse" for s in sparsities) + " |",
        "|---|---|" + "---|" * len(sparsities)]
    for method in methods:
        for ablation in ABLATIONS:
            cells = []
            for s in sparsities:
                accs = [r["test_accuracy"] for r in runs if r["method"] == method
                        and r["ablation"] == ablation and r["sparsity"] == s]
                if not accs:
                    cells.append("")
                    continue
                cell = f"{100 * sum(accs) / len(accs):.2f}"
                if len(accs) > 1:
                    cell += f" ({100 * min(accs):.2f}-{100 * max(accs):.2f})"
                cells.append(cell)
            if any(cells):
                rows.append(f"| {method} | {ablation} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save(args, backend, runs, dense, started):
    """Writes the runs so far (a long run can be read while it goes on)."""
    result = {
        **rep.environment(),
        "data": f"MNIST, {describe_file(mnist_path())}, first {args.train} "
                "training images, 10,000 test images",
        "epochs": args.epochs, "batch_size": 128, "optimizer": "Adam 1.2e-3",
        "seeds": args.seeds, "sparsities": args.sparsities,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": runs, "dense": dense,
    }
    return rep.write_json(rep.RESULTS / f"pruning_at_init_{backend}.json", result)


def main(argv=None):
    args = parse_args(argv)
    backend = rep.use_backend(args.backend)
    import keras

    data = load(args.train)
    runs, dense = [], []
    started = time.perf_counter()
    for seed in args.seeds:
        model, state = compiled_lenet(seed)
        reset(model, state)
        keras.utils.set_random_seed(seed)
        model.fit(data[0], data[1], batch_size=128, epochs=args.epochs, verbose=0)
        dense.append({"seed": seed, "test_accuracy": float(model.evaluate(
            data[2], data[3], batch_size=1000, verbose=0)[1])})
        print(f"seed {seed} dense acc {100 * dense[-1]['test_accuracy']:.2f}")
        for method in args.methods:
            for sparsity in args.sparsities:
                for ablation in ABLATIONS:
                    if method == "random" and ablation != "none":
                        continue  # a shuffled or re-drawn random mask is random
                    run = run_one(model, state, method, sparsity, ablation,
                                  seed, data, args.epochs)
                    runs.append(run)
                    save(args, backend, runs, dense, started)
                    print(f"seed {seed} {method:9s} {100 * sparsity:g}% "
                          f"{ablation:7s} acc {100 * run['test_accuracy']:.2f} "
                          f"(scored in {run['scoring_seconds']} s)", flush=True)
    out = save(args, backend, runs, dense, started)
    print(table(runs, args.sparsities, args.methods))
    print(f"wrote {out.relative_to(rep.ROOT)}")


if __name__ == "__main__":
    main()
