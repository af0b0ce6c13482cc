"""An LSTM reading MNIST row by row: recurrent layers prune and rewind too.

Each image is a sequence of 28 steps of 28 pixels. `keras_lottery.wrap`
wraps the LSTM (its input kernel and its recurrent kernel are both
prunable) and the output Dense; `lottery_search` prunes 20% of each of them
per round by magnitude and rewinds the survivors to their initial values,
with random re-initialization as the control.

The default is a quick look (LSTM of 32 units, 2,000 images, 2 rounds of
2 epochs, under a minute); `--full` uses 128 units, 55,000 images and 6
rounds of 3 epochs. MNIST is read from `--data` or $KERAS_LOTTERY_MNIST.

    KERAS_BACKEND=jax python examples/lstm_sequential_mnist.py --data mnist.npz
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
                        help="128 units, all data, 6 rounds of 3 epochs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import load_mnist

    data = load_mnist(args.data, flatten=False)  # (n, 28, 28): 28 steps of 28
    if not args.full:
        data = data.subset(train=2000, test=1000)
    print(f"Data: {data.describe()}")
    units, rounds, epochs = (128, 6, 3) if args.full else (32, 2, 2)

    keras.utils.set_random_seed(args.seed)
    model = kl.wrap(keras.Sequential([
        keras.Input((28, 28)),
        keras.layers.LSTM(units, name="lstm"),
        keras.layers.Dense(10, name="output"),
    ], name="row_lstm"))
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit_fn(m):
        return m.fit(data.x_train, data.y_train, batch_size=64, epochs=epochs,
                     validation_data=(data.x_val, data.y_val), verbose=0)

    def eval_fn(m):
        return m.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)

    result = kl.lottery_search(
        model, fit_fn, eval_fn=eval_fn, rounds=rounds, rate=0.2,
        rewind_to="init", control="reinit", seed=args.seed,
    )
    print()
    print(result.table())
    print("\nThe LSTM's input and recurrent kernels are both pruned:")
    kl.summary(result.ticket(rounds, trained=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
