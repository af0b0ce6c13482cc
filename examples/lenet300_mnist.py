"""LeNet-300-100 on MNIST: Frankle & Carbin's lottery-ticket protocol.

"The Lottery Ticket Hypothesis" (Frankle & Carbin, ICLR 2019), Section 2:

- a 784-300-100-10 ReLU network, Glorot-normal initialization;
- Adam at 1.2e-3, batch 60, 50,000 iterations per round;
- MNIST split 55,000 train / 5,000 validation (the last 5,000), test 10,000;
- each round prunes 20% of the remaining weights of each hidden layer and
  10% of the output layer, by magnitude, and resets the survivors to their
  initial values (`rewind_to="init"`);
- the control retrains each round's mask from a fresh random
  initialization (`control="reinit"`);
- the early-stop iteration is the one of minimum validation loss
  (evaluated every 100 iterations); the test accuracy is read there.

The default is a quick look (a 6,000-image subset, 2 rounds of 300
iterations, under a minute); `--full` runs the paper's protocol (20 rounds
of 50,000 iterations: hours on a CPU). MNIST is read from `--data` or
$KERAS_LOTTERY_MNIST (an mnist.npz in Keras layout).

    KERAS_BACKEND=jax python examples/lenet300_mnist.py --data mnist.npz
    KERAS_BACKEND=jax python examples/lenet300_mnist.py --full --plot lenet.png
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
                        help="the paper's protocol: all data, 20 rounds of "
                        "50,000 iterations")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the accuracy-vs-sparsity plot here (.png)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 20 if args.full else 2
    if args.iterations is None:
        args.iterations = 50_000 if args.full else 300
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import iteration_batches, load_mnist

    data = load_mnist(args.data)  # 55,000 / 5,000 / 10,000
    if not args.full:
        data = data.subset(train=6000, test=2000)
    print(f"Data: {data.describe()}")
    eval_every = min(100, args.iterations)

    keras.utils.set_random_seed(args.seed)
    init = keras.initializers.GlorotNormal()
    model = kl.wrap(keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, "relu", kernel_initializer=init, name="fc1"),
        keras.layers.Dense(100, "relu", kernel_initializer=init, name="fc2"),
        keras.layers.Dense(10, kernel_initializer=init, name="output"),
    ], name="lenet_300_100"))
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit_fn(m):
        # Test accuracy at the early stop (min. validation loss), read where
        # it happens; and the early-stop iteration itself.
        readout = kl.EarlyStopReadout((data.x_test, data.y_test),
                                      steps_per_epoch=eval_every, batch_size=2000)
        m.fit(
            iteration_batches(data.x_train, data.y_train, batch_size=60,
                              steps=args.iterations),
            epochs=args.iterations // eval_every, steps_per_epoch=eval_every,
            validation_data=(data.x_val, data.y_val), validation_batch_size=2000,
            callbacks=[readout], verbose=0,
        )
        return {
            "test_accuracy": readout.at_early_stop["accuracy"],  # at early stop
            "early_stop": readout.early_stop,  # in iterations
        }

    result = kl.lottery_search(
        model, fit_fn, rounds=args.rounds, rate=0.2, output_rate=0.1,
        scope="layer", rewind_to="init", control="reinit", seed=args.seed,
    )
    print()
    print(result.table())
    print("test_accuracy: at the early-stop iteration (min. validation loss); "
          "early_stop in iterations.")
    if args.plot:
        result.plot(args.plot, "test_accuracy", title="LeNet-300-100 on MNIST")
        print(f"Plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
