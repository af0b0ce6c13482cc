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

The IMP ticket ("imp") is the other half of the comparison: from the same
theta_0, `kl.lottery_search` prunes 20% of each hidden layer's remaining
weights per round (the output layer 10%) by magnitude, rewinding to
theta_0, each round trained like the rows above (`--epochs` epochs, batch
128, seeded with the seed). Its rounds land near, not on, the targets:
the mask of the round whose sparsity is nearest each target is used (the
JSON records the round and its sparsity), rewound to theta_0 and trained
as found, shuffled and re-initialized exactly as the other masks. Each
search is saved (masks and weights of every round) under
benchmarks/results/tmp/pai_imp_<backend>_e<epochs>_n<train>_s<seed>/
(git-ignored), so a
stopped run resumes, and benchmarks/seed_overlap.py reads the masks.

The paper finds the pruning-at-init methods no worse under either
ablation (they act as a choice of per-layer sparsity), unlike IMP tickets.

Usage:

    nice python benchmarks/pruning_at_init.py --backend jax --seeds 0 1 \\
        --epochs 2 [--train 60000] [--sparsities 0.9 0.97 0.99] \\
        [--methods snip grasp synflow magnitude random imp] [--search-only]

writes benchmarks/results/pruning_at_init_<backend>.json and prints a
Markdown table of mean test accuracy (and, for several seeds, min-max).
The runs are merged into that file: a run of some methods or seeds
replaces those rows only (its command is listed under "merged"), so
`--methods imp` adds the IMP rows to an earlier run of the others (the
budget and data must be the same). `--search-only` runs the IMP searches
alone (for the seed-overlap analysis) and adds no rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep
from _common import describe_file, load_flat_mnist, mnist_path

METHODS = ("snip", "grasp", "synflow", "magnitude", "random", "imp")
ABLATIONS = ("none", "shuffle", "reinit")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--sparsities", type=float, nargs="+",
                        default=[0.9, 0.97, 0.99])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        choices=METHODS)
    parser.add_argument("--imp-rounds", type=int, default=21,
                        help="IMP rounds (21 reach 99.04%% sparsity)")
    parser.add_argument("--search-only", action="store_true",
                        help="IMP: run and save the searches, train no rows")
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
    import keras_lottery as kl

    x, y, _, _ = data
    reset(model, state)
    start = time.perf_counter()
    kl.prune(model, sparsity=sparsity, criterion=criterion(method, x, y),
             scope="layer" if method == "random" else "global", seed=seed)
    scored = time.perf_counter() - start
    run = ablate_and_train(model, ablation, seed, data, epochs)
    return {"method": method, "sparsity": sparsity, **run,
            "scoring_seconds": round(scored, 2)}


def ablate_and_train(model, ablation, seed, data, epochs):
    """Applies `ablation` to the model's mask (at theta_0), trains, tests."""
    import keras

    import keras_lottery as kl

    x, y, xt, yt = data
    if ablation == "shuffle":
        kl.shuffle_masks(model, seed=seed + 1000)
        kl.rewind(model, to="init")  # revived positions get theta_0 back
    elif ablation == "reinit":
        kl.rewind(model, to="random", seed=seed + 2000)
    layers = {k: round(1 - float(m.mean()), 4) for k, m in kl.get_masks(model).items()}
    keras.utils.set_random_seed(seed)
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    _, acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    return {"ablation": ablation, "seed": seed, "test_accuracy": float(acc),
            "layer_sparsity": layers}


def imp_directory(backend, seed, args):
    """Named after the budget too: a search resumes only at its own."""
    return (rep.RESULTS / "tmp" /
            f"pai_imp_{backend}_e{args.epochs}_n{args.train}_s{seed}")


def imp_search(model, backend, seed, data, args):
    """IMP with rewinding to theta_0 from the model's theta_0, saved per
    round (a stopped search resumes); returns the SearchResult."""
    import keras_lottery as kl

    x, y, xt, yt = data

    def fit(m):
        return m.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)

    def evaluate(m):
        return m.evaluate(xt, yt, batch_size=1000, return_dict=True, verbose=0)

    return kl.lottery_search(model, fit, rounds=args.imp_rounds, rate=0.2,
                             rewind_to="init", eval_fn=evaluate, seed=seed,
                             directory=imp_directory(backend, seed, args), verbose=1)


def imp_runs(model, state, backend, seed, data, args):
    """The IMP rows of one seed: the rounds nearest each target sparsity,
    each trained as found and under both ablations."""
    import keras_lottery as kl

    reset(model, state)
    search = imp_search(model, backend, seed, data, args)
    if args.search_only:
        return []
    runs = []
    for target in args.sparsities:
        record = min(search.rounds, key=lambda r: abs(1 - r.remaining - target))
        for ablation in ABLATIONS:
            reset(model, state)
            kl.set_masks(model, search.masks(record.round), by="order")
            kl.rewind(model, to="init")
            run = ablate_and_train(model, ablation, seed, data, args.epochs)
            runs.append({"method": "imp", "sparsity": target, **run,
                         "imp_round": record.round,
                         "imp_sparsity": round(1 - record.remaining, 4),
                         "imp_search_accuracy": record.metrics.get("test_accuracy")})
            print(f"seed {seed} imp       {100 * target:g}% (round "
                  f"{record.round}, {100 * (1 - record.remaining):.2f}%) "
                  f"{ablation:7s} acc {100 * run['test_accuracy']:.2f}", flush=True)
    return runs


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


def _key(run):
    return run["method"], run["sparsity"], run["ablation"], run["seed"]


def check_budget(args, backend):
    """Refuses, before any training, to merge into a file of another budget."""
    path = rep.RESULTS / f"pruning_at_init_{backend}.json"
    if not path.exists() or args.search_only:
        return
    old = json.loads(path.read_text())
    data = (f"MNIST, {describe_file(mnist_path())}, first {args.train} "
            "training images, 10,000 test images")
    if (old["epochs"], old["data"]) != (args.epochs, data):
        raise SystemExit(
            f"{path.name} holds runs of another budget or data "
            f"(epochs={old['epochs']}, {old['data']}); move it away "
            "to start afresh.")


def save(args, backend, runs, dense, started):
    """Merges the runs so far into the backend's JSON (a long run can be
    read while it goes on; runs of other methods or seeds are kept). A
    blocking `FolderLock` keeps two processes (one per seed) from losing
    each other's rows: the second waits for the first (Windows has no lock:
    run the seeds one after the other there)."""
    from keras_lottery._internal.lock import FolderLock

    path = rep.RESULTS / f"pruning_at_init_{backend}.json"
    data = (f"MNIST, {describe_file(mnist_path())}, first {args.train} "
            "training images, 10,000 test images")
    this = {**args.environment, "methods": args.methods, "seeds": args.seeds,
            "wall_seconds": round(time.perf_counter() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = rep.RESULTS / "tmp" / path.stem  # one lock per JSON file
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder, what="pruning_at_init", blocking=True):
        old = json.loads(path.read_text()) if path.exists() else None
        if old is None:
            result = {**this, "data": data, "epochs": args.epochs,
                      "batch_size": 128, "optimizer": "Adam 1.2e-3",
                      "sparsities": args.sparsities, "runs": [], "dense": [],
                      "merged": []}
        else:
            check_budget(args, backend)
            result = old
            result.setdefault("merged", [])
            result["merged"] = [m for m in result["merged"]
                                if m["date"] != this["date"]]
        mine = {_key(r) for r in runs}
        result["runs"] = [r for r in result["runs"] if _key(r) not in mine] + runs
        seeds = {d["seed"] for d in dense}
        result["dense"] = sorted(
            [d for d in result["dense"] if d["seed"] not in seeds] + dense,
            key=lambda d: d["seed"])
        if result.get("date") != this["date"]:
            result["merged"].append(this)
        rep.write_json(path, result)
    return path


def main(argv=None):
    args = parse_args(argv)
    backend = rep.use_backend(args.backend)
    import keras

    args.environment = rep.environment()  # one date and command per run
    check_budget(args, backend)
    data = load(args.train)
    runs, dense = [], []
    started = time.perf_counter()
    for seed in args.seeds:
        model, state = compiled_lenet(seed)
        if "imp" in args.methods:
            # The search's round 0 is the dense training, seeded alike.
            runs += imp_runs(model, state, backend, seed, data, args)
            if not args.search_only:
                save(args, backend, runs, dense, started)
        others = [m for m in args.methods if m != "imp"]
        if not others or args.search_only:
            continue
        reset(model, state)
        keras.utils.set_random_seed(seed)
        model.fit(data[0], data[1], batch_size=128, epochs=args.epochs, verbose=0)
        dense.append({"seed": seed, "test_accuracy": float(model.evaluate(
            data[2], data[3], batch_size=1000, verbose=0)[1])})
        print(f"seed {seed} dense acc {100 * dense[-1]['test_accuracy']:.2f}")
        for method in others:
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
    if args.search_only:
        return
    out = save(args, backend, runs, dense, started)
    merged = json.loads(out.read_text())
    print(table(merged["runs"], args.sparsities, METHODS))
    print(f"wrote {out.relative_to(rep.ROOT)}")


if __name__ == "__main__":
    main()
