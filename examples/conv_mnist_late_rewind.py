"""A small ConvNet on MNIST: global pruning with late rewinding, in one fit.

Frankle et al., "Stabilizing the Lottery Ticket Hypothesis" (2019): for
deeper networks, rewinding the survivors to their values at an early
training step k (instead of to initialization) finds better tickets. Here
`keras_lottery.LotterySchedule` runs the whole iterative loop inside one
`model.fit`: every `epochs_per_round` epochs it prunes 20% of the remaining
weights over all layers at once (`scope="global"`; the output layer on its
own at 10%), rewinds the survivors to step k, and resets the optimizer.

The default is a quick look (3,000 images, 3 rounds of 1 epoch, k=20,
under a minute); `--full` trains on 55,000 images for 8 rounds of 2 epochs
with k=500. MNIST is read from `--data` or $KERAS_LOTTERY_MNIST.

    KERAS_BACKEND=jax python examples/conv_mnist_late_rewind.py --data mnist.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=None,
                        help="mnist.npz (default: $KERAS_LOTTERY_MNIST)")
    parser.add_argument("--full", action="store_true",
                        help="all data, 8 rounds of 2 epochs, rewind to step 500")
    parser.add_argument("--rewind-step", type=int, default=None,
                        help="training step k to rewind to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rewind_step is None:
        args.rewind_step = 500 if args.full else 20
    return args


def build_convnet():
    import keras

    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="fc"),
        keras.layers.Dense(10, name="output"),
    ], name="convnet")


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import load_mnist

    data = load_mnist(args.data, flatten=False)
    if not args.full:
        data = data.subset(train=3000, test=1000)
    print(f"Data: {data.describe()}")
    rounds, epochs_per_round = (8, 2) if args.full else (3, 1)

    keras.utils.set_random_seed(args.seed)
    model = kl.wrap(build_convnet())
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    schedule = kl.LotterySchedule(
        rate=0.2, epochs_per_round=epochs_per_round,
        rewind_to=args.rewind_step,  # late rewinding: weights at step k
        scope="global", output_rate=0.1, verbose=1,
    )
    model.fit(
        data.x_train[..., None], data.y_train, batch_size=64,
        epochs=rounds * epochs_per_round,
        validation_data=(data.x_test[..., None], data.y_test),
        callbacks=[schedule], verbose=0,
    )
    print("\nround  % remaining  val_accuracy (test set)")
    for r in schedule.rounds:
        print(f"{r['round']:5d}  {100 * (1 - r['sparsity']):11.2f}  "
              f"{r['val_accuracy']:.4f}")
    print("\nGlobal pruning leaves each layer its own sparsity:")
    kl.summary(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
