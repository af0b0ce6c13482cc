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

Usage:

    python benchmarks/instability.py [--train 20000] [--epochs 2] \\
        [--test 5000] [--rounds 15] [--points 30]

writes benchmarks/results/instability_<backend>.json and
docs/img/instability_lenet.png. MNIST: $KERAS_LOTTERY_MNIST or
../shared/data/mnist.npz (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--report-rounds", type=int, nargs="+", default=[0, 7, 15])
    args = parser.parse_args(argv)

    import keras

    import keras_lottery as kl
    from keras_lottery.core.copy import copy_model

    x, y, data = load_flat_mnist(args.train)
    xt, yt, _ = load_flat_mnist(args.test, split="test")

    def fit(model, callbacks=None):
        return model.fit(x, y, batch_size=60, epochs=args.epochs, verbose=0,
                         callbacks=callbacks)

    def evaluate(model):
        return model.evaluate(xt, yt, batch_size=1000, return_dict=True,
                              verbose=0)

    began = time.perf_counter()
    model = lenet(0)
    base = copy_model(model)  # theta_0, before any training
    search = kl.lottery_search(model, fit, rounds=args.rounds, rate=0.2,
                               eval_fn=evaluate, seed=0, verbose=1)
    rows = []
    results = []
    for r in args.report_rounds:
        ticket = copy_model(base)
        ticket.compile_from_config(base.get_compile_config())
        kl.set_masks(ticket, search.masks(r))
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
    img = ROOT / "docs" / "img" / "instability_lenet.png"
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
