"""Early-bird tickets on LeNet-300-100 / MNIST (You et al. 2020, "Drawing
Early-Bird Tickets").

One dense training with two `keras_lottery.EarlyBird` callbacks (80% and
95% sparsity, layer-wise magnitude, patience 5, threshold 0.1, signal
only) records, per epoch, the normalized Hamming distance between the
masks `prune` would draw at consecutive epochs, and the epoch at which
each early bird emerges. Then, for each sparsity, the ticket drawn at that
epoch and the ticket drawn at the end of training are rewound to theta_0
and retrained with the same budget; their test accuracies are compared.

Short budget (2 shared CPU cores): --train images, --epochs of dense
training (Adam 1.2e-3, batch 60), --retrain epochs per ticket, test
accuracy on --test images.

`--model conv` runs the ConvNet of examples/conv_mnist_late_rewind.py
instead, its masks drawn by output channel (`granularity="channel"`, as the
paper prunes channels).

Usage:

    python benchmarks/early_bird.py [--model lenet|conv] [--train 10000] \\
        [--epochs 15] [--retrain 5] [--test 5000]

writes benchmarks/results/early_bird_<backend>.json (early_bird_conv_... for
the ConvNet) and docs/img/early_bird_lenet.png (early_bird_conv.png).
MNIST: $KERAS_LOTTERY_MNIST or ../shared/data/mnist.npz (nothing is
downloaded).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_flat_mnist, write_result

SPARSITIES = (0.8, 0.95)


def build(kind: str, seed: int):
    """LeNet-300-100, or the ConvNet of examples/conv_mnist_late_rewind.py."""
    import keras

    import keras_lottery as kl

    keras.utils.set_random_seed(seed)
    init = keras.initializers.GlorotNormal
    if kind == "lenet":
        layers = [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu", kernel_initializer=init()),
            keras.layers.Dense(100, activation="relu", kernel_initializer=init()),
            keras.layers.Dense(10, kernel_initializer=init()),
        ]
    else:
        layers = [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="fc"),
            keras.layers.Dense(10, name="output"),
        ]
    model = kl.wrap(keras.Sequential(layers, name=kind))
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def plot(birds, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, (sparsity, bird) in enumerate(birds.items()):
        epochs = list(range(2, len(bird.distances) + 1))
        ax.plot(epochs, bird.distances[1:], "o-", color=f"C{i}",
                label=f"{100 * sparsity:.0f}% sparsity")
        if bird.fired_epoch:
            ax.axvline(bird.fired_epoch, color=f"C{i}", linestyle=":")
    ax.axhline(0.1, color="gray", linestyle="--", label="threshold 0.1")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mask distance to the previous epoch")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--retrain", type=int, default=5)
    parser.add_argument("--model", choices=("lenet", "conv"), default="lenet",
                        help="conv: the ConvNet of examples/"
                        "conv_mnist_late_rewind.py, its masks drawn by "
                        "output channel (granularity='channel')")
    args = parser.parse_args(argv)

    import keras

    import keras_lottery as kl
    from keras_lottery.core.copy import copy_model
    from keras_lottery.pruning.prune import planned_masks
    from keras_lottery.search.early_bird import mask_distance

    x, y, data = load_flat_mnist(args.train)
    xt, yt, _ = load_flat_mnist(args.test, split="test")
    options = {}
    if args.model == "conv":
        x, xt = x.reshape(-1, 28, 28, 1), xt.reshape(-1, 28, 28, 1)
        # Channels of every layer but the output one (whose channels are
        # the classes): one prune step at rate s from dense is sparsity s.
        options = {"granularity": "channel", "output_rate": 0.0}
    began = time.perf_counter()
    model = build(args.model, 0)
    base = copy_model(model)  # theta_0
    amount = "sparsity" if args.model == "lenet" else "rate"
    birds = {s: kl.EarlyBird(stop=False, **{amount: s}, **options)
             for s in SPARSITIES}
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, batch_size=60, epochs=args.epochs, verbose=0,
                        callbacks=list(birds.values()))
    dense = model.evaluate(xt, yt, batch_size=1000, return_dict=True, verbose=0)
    print(f"dense: {args.epochs} epochs, test accuracy {dense['accuracy']:.4f}")

    def retrain(masks) -> float:
        ticket = copy_model(base)
        ticket.compile_from_config(base.get_compile_config())
        kl.set_masks(ticket, masks)
        keras.utils.set_random_seed(1)
        ticket.fit(x, y, batch_size=60, epochs=args.retrain, verbose=0)
        return float(ticket.evaluate(xt, yt, batch_size=1000, return_dict=True,
                                     verbose=0)["accuracy"])

    rows = []
    for sparsity, bird in birds.items():
        end_masks = planned_masks(model, **{amount: sparsity}, **options)
        row = {
            "sparsity": sparsity,
            "distances": [None if math.isnan(d) else d for d in bird.distances],
            "fired_epoch": bird.fired_epoch,
            "end_accuracy": retrain(end_masks),
        }
        if bird.masks is not None:
            row["early_bird_accuracy"] = retrain(bird.masks)
            row["distance_early_bird_to_end"] = mask_distance(bird.masks,
                                                              end_masks)
        rows.append(row)
        print(f"{100 * sparsity:.0f}% sparsity: fired at epoch "
              f"{bird.fired_epoch}; ticket accuracy at that epoch "
              f"{row.get('early_bird_accuracy')}, at the end "
              f"{row['end_accuracy']:.4f}")
    name = "lenet" if args.model == "lenet" else "conv"
    img = ROOT / "docs" / "img" / f"early_bird_{name}.png"
    plot(birds, img, f"{'LeNet-300-100' if name == 'lenet' else 'ConvNet'}, "
         "MNIST: early-bird mask distance")
    entry = {
        "backend": keras.backend.backend(),
        "date": datetime.date.today().isoformat(),
        "data": data,
        "budget": {"train_images": args.train, "test_images": args.test,
                   "dense_epochs": args.epochs, "retrain_epochs": args.retrain,
                   "batch_size": 60, "optimizer": "Adam 1.2e-3",
                   "patience": 5, "threshold": 0.1,
                   "criterion": f"magnitude, layer-wise, {amount} mode",
                   "model": args.model, **options},
        "dense_test_accuracy": float(dense["accuracy"]),
        "dense_history_accuracy": history.history["accuracy"],
        "rows": rows,
        "seconds": time.perf_counter() - began,
    }
    write_result("early_bird" if name == "lenet" else "early_bird_conv",
                 entry, img)
    return entry


if __name__ == "__main__":
    main()
