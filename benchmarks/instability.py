"""Instability analysis of LeNet-300-100 on MNIST (Frankle, Dziugaite, Roy &
Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

IMP with rewinding to init finds the masks (20% of the remaining weights
per round, the output layer at 10%); then, for the dense network and the
tickets at about 21% and 3.5% of the weights remaining, two copies train
from theta_0 with different seeds and `keras_lottery.instability` measures
the test error along the line between them (30 points) and the barrier.
The paper finds LeNet stable at initialization (barrier near 0) and its
IMP tickets rewound to init matching.

Short budget (2 shared CPU cores): --train images, --epochs epochs of Adam
(1.2e-3, batch 60: Frankle & Carbin's LeNet setting) per training, test
error on --test images.

With `--sweep K ...` it runs `keras_lottery.instability_sweep` instead:
for the dense network and the IMP tickets of `--sweep-rounds` (masks from
the same search), the barrier when both copies start from the weights
after k training steps (one run from theta_0 gives every k), for each k,
and the first stable k. Every training then lasts `--epochs` epochs, which
must reach the largest k (6 epochs of 20,000 images at batch 60 are 2,004
steps).

Usage:

    python benchmarks/instability.py [--backend jax] [--train 20000] \\
        [--epochs 2] [--test 5000] [--rounds 15] [--points 30]
    python benchmarks/instability.py --sweep 0 100 500 2000 --epochs 6 \\
        [--sweep-rounds 0 15]

writes benchmarks/results/instability_<backend>.json and
docs/img/instability_lenet.png (JAX; other backends
instability_lenet_<backend>.png), or, with --sweep,
benchmarks/results/instability_sweep_<backend>.json and
docs/img/instability_sweep_lenet_<backend>_r<round>.png. MNIST:
$KERAS_LOTTERY_MNIST or ../shared/data/mnist.npz (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep
from _common import ROOT, load_flat_mnist, write_result


def lenet(seed: int):
    import keras

    import keras_lottery as kl

    keras.utils.set_random_seed(seed)
    init = keras.initializers.GlorotNormal
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu", kernel_initializer=init()),
        keras.layers.Dense(100, activation="relu", kernel_initializer=init()),
        keras.layers.Dense(10, kernel_initializer=init()),
    ], name="lenet_300_100")
    model = kl.wrap(model)
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--report-rounds", type=int, nargs="+", default=[0, 7, 15])
    parser.add_argument("--sweep", type=int, nargs="+", default=None,
                        help="rewind steps k: run instability_sweep instead")
    parser.add_argument("--sweep-rounds", type=int, nargs="+", default=[0, 15])
    return parser.parse_args(argv)


def data_and_fns(args):
    """The data, fit_fn and eval_fn of every training of this script."""
    x, y, data = load_flat_mnist(args.train)
    xt, yt, _ = load_flat_mnist(args.test, split="test")

    def fit(model, callbacks=None):
        return model.fit(x, y, batch_size=60, epochs=args.epochs, verbose=0,
                         callbacks=callbacks)

    def evaluate(model):
        return model.evaluate(xt, yt, batch_size=1000, return_dict=True,
                              verbose=0)

    return data, fit, evaluate


def budget(args) -> dict:
    return {"train_images": args.train, "test_images": args.test,
            "epochs": args.epochs, "batch_size": 60,
            "steps_per_training": args.epochs * -(-args.train // 60),
            "optimizer": "Adam 1.2e-3", "rate": 0.2, "points": args.points,
            "seeds": [1, 2]}


def tickets(search_rounds, rounds, fit, evaluate):
    """theta_0 of LeNet (seed 0) with the masks of IMP rounds `rounds` of
    one search (seed 0, `search_rounds` rounds), as compiled models; and
    the search (None when only round 0, the dense network, is asked)."""
    import keras_lottery as kl
    from keras_lottery.core.copy import copy_model

    model = lenet(0)
    base = copy_model(model)  # theta_0, before any training
    search = None
    if max(rounds) > 0:
        search = kl.lottery_search(model, fit, rounds=search_rounds, rate=0.2,
                                   eval_fn=evaluate, seed=0, verbose=1)
    out = []
    for r in rounds:
        ticket = copy_model(base)
        ticket.compile_from_config(base.get_compile_config())
        if search is not None:
            kl.set_masks(ticket, search.masks(r))
        out.append(ticket)
    return out, search


def sweep_main(args) -> dict:
    """instability_sweep over the rewind steps, dense and tickets."""
    import keras

    import keras_lottery as kl

    steps = budget(args)["steps_per_training"]
    if max(args.sweep) > steps:
        raise SystemExit(f"--sweep {max(args.sweep)} is past the {steps} "
                         "steps of one training: raise --epochs or --train.")
    data, fit, evaluate = data_and_fns(args)
    began = time.perf_counter()
    models, search = tickets(max(args.sweep_rounds), args.sweep_rounds, fit,
                             evaluate)
    rows, images = [], []
    for r, ticket in zip(args.sweep_rounds, models):
        t0 = time.perf_counter()
        sweep = kl.instability_sweep(ticket, fit, eval_fn=evaluate,
                                     steps=args.sweep, seeds=(1, 2),
                                     points=args.points)
        remaining = 100 * sweep.results[0].remaining
        print(f"round {r}, {remaining:.1f}% remaining:")
        print(sweep.table())
        img = ROOT / "docs" / "img" / (
            f"instability_sweep_lenet_{keras.backend.backend()}_r{r}.png")
        sweep.plot(img, title=f"LeNet-300-100, {remaining:.1f}% of weights: "
                   "both copies from step k")
        images.append(img)
        rows.append({
            "round": r, "remaining_percent": remaining,
            "imp_test_accuracy": (search.rounds[r].metrics.get("test_accuracy")
                                  if search is not None else None),
            "first_stable": sweep.first_stable,
            "steps": [{"k": res.rewind_to, "barrier_percent": 100 * res.barrier,
                       "end_errors_percent": [100 * res.errors[0],
                                              100 * res.errors[-1]],
                       "max_error_percent": 100 * max(res.errors),
                       "stable": res.stable(), "curve": res.to_dict()}
                      for res in sweep.results],
            "seconds": time.perf_counter() - t0,
        })
    entry = {**rep.environment(), "data": data,
             "budget": {**budget(args), "imp_rounds": max(args.sweep_rounds),
                        "sweep_steps": args.sweep},
             "rows": rows, "seconds": time.perf_counter() - began}
    write_result("instability_sweep", entry, *images)
    return entry


def main(argv=None) -> dict:
    args = parse_args(argv)
    rep.use_backend(args.backend)
    if args.sweep is not None:
        return sweep_main(args)
    import keras

    import keras_lottery as kl

    data, fit, evaluate = data_and_fns(args)
    began = time.perf_counter()
    models, search = tickets(args.rounds, args.report_rounds, fit, evaluate)
    rows = []
    results = []
    for r, ticket in zip(args.report_rounds, models):
        t0 = time.perf_counter()
        result = kl.instability(ticket, fit, eval_fn=evaluate, seeds=(1, 2),
                                points=args.points)
        results.append(result)
        record = search.rounds[r]
        rows.append({
            "round": r,
            "remaining_percent": 100 * result.remaining,
            "imp_test_accuracy": record.metrics.get("test_accuracy"),
            "barrier_percent": 100 * result.barrier,
            "end_errors_percent": [100 * result.errors[0], 100 * result.errors[-1]],
            "max_error_percent": 100 * max(result.errors),
            "stable": result.stable(),
            "seconds": time.perf_counter() - t0,
            "curve": result.to_dict(),
        })
        print(f"round {r}: {100 * result.remaining:.1f}% remaining, barrier "
              f"{100 * result.barrier:.2f}%, end errors "
              f"{100 * result.errors[0]:.2f}% / {100 * result.errors[-1]:.2f}%")
    sweep = kl.InstabilitySweep(results)
    for result, row in zip(results, rows):
        result.rewind_to = f"init, {row['remaining_percent']:.1f}%"
    backend = keras.backend.backend()
    img = ROOT / "docs" / "img" / (
        "instability_lenet.png" if backend == "jax"
        else f"instability_lenet_{backend}.png")
    sweep.plot(img, title="LeNet-300-100, MNIST: interpolation from theta_0")
    entry = {
        "backend": keras.backend.backend(),
        "date": datetime.date.today().isoformat(),
        "data": data,
        "budget": {"train_images": args.train, "test_images": args.test,
                   "epochs": args.epochs, "batch_size": 60,
                   "optimizer": "Adam 1.2e-3", "imp_rounds": args.rounds,
                   "rate": 0.2, "points": args.points, "seeds": [1, 2]},
        "rows": rows,
        "seconds": time.perf_counter() - began,
    }
    write_result("instability", entry, img)
    return entry


if __name__ == "__main__":
    main()
