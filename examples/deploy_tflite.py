"""Deploy a block-pruned lottery ticket to TFLite / LiteRT: smaller and faster.

TFLite's builtin FullyConnected kernel skips zeros when they come in blocks
of 4 consecutive inputs of one output unit (`kernel[i:i+4, j]` of a Keras
Dense kernel; "1x4" in TFLite's terms). This example searches a lottery
ticket for LeNet-300-100 on MNIST with every Dense layer pruned in such
blocks (`granularity="block"`, `block_shape=(4, 1)`; the output layer too,
at half the rate: one block-sparse layer takes all FullyConnected ops off
XNNPACK, so prune all of them or none), then:

1. checks the masks are block-aligned (`check_block_alignment`);
2. exports the dense network and the ticket with `export_tflite` (the
   ticket sparse-encoded, both verified against Keras in LiteRT's
   interpreter) and prints the ticket's export report: how every weight
   is stored, the file size against a dense export, which ops XNNPACK
   takes;
3. times both files with `benchmark_tflite` (median invoke latency, one
   thread, with the default delegates and on the builtin kernels) and
   prints the latency table.

The default is a quick look (3,000 training images, 2 rounds to 75% sparse,
about a minute); `--full` trains on 55,000 images, 2 epochs per round, 10
rounds to 90% sparse. MNIST is read from `--data` or $KERAS_LOTTERY_MNIST.
Files (the two `.tflite`, `deploy.json`) go to `--output`.

    KERAS_BACKEND=jax python examples/deploy_tflite.py --data mnist.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

BLOCK = (4, 1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=None,
                        help="mnist.npz (default: $KERAS_LOTTERY_MNIST)")
    parser.add_argument("--full", action="store_true",
                        help="all data, 10 rounds of 2 epochs to 90%% sparse")
    parser.add_argument("--output", type=Path, default=Path("deploy_output"),
                        metavar="DIR", help="where to write (default deploy_output/)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed invokes per latency figure "
                        "(default 20, 200 with --full)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 200 if args.full else 20
    if args.runs < 1:
        parser.error(f"--runs must be at least 1. Received: {args.runs}")
    return args


def build_lenet():
    import keras

    init = keras.initializers.GlorotNormal()
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, "relu", kernel_initializer=init, name="fc1"),
        keras.layers.Dense(100, "relu", kernel_initializer=init, name="fc2"),
        keras.layers.Dense(10, kernel_initializer=init, name="output"),
    ], name="lenet_300_100")


def search_block_ticket(data, *, rounds, target_sparsity, epochs, seed):
    """`lottery_search` with 4x1 blocks; returns the SearchResult."""
    import keras

    import keras_lottery as kl

    keras.utils.set_random_seed(seed)
    model = kl.wrap(build_lenet())
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit_fn(m):
        return m.fit(data.x_train, data.y_train, batch_size=60,
                     epochs=epochs, verbose=0)

    def eval_fn(m):
        return m.evaluate(data.x_test, data.y_test, batch_size=1000,
                          verbose=0, return_dict=True)

    return kl.lottery_search(
        model, fit_fn, eval_fn=eval_fn, rounds=rounds,
        target_sparsity=target_sparsity, rewind_to="init", seed=seed,
        granularity="block", block_shape=BLOCK,
    )


def latency_table(rows) -> str:
    """The side-by-side latency table, one line per file and batch size."""
    from keras_lottery._internal.io import text_table

    table, dense_best = [], {}
    for name, latencies in rows:  # dense first
        for lat in latencies:
            best = min(t for t in (lat.xnnpack_ms, lat.builtin_ms) if t)
            if name == "dense":
                dense_best[lat.batch_size] = best
            table.append({
                "model": name, "batch": lat.batch_size,
                "XNNPACK (default) ms": lat.xnnpack_ms,
                "builtin ms": lat.builtin_ms,
                "fastest vs dense": f"{dense_best[lat.batch_size] / best:.2f}x",
            })
    return text_table(table)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import load_mnist
    from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
    from keras_lottery.deploy.tflite.export import export_tflite
    from keras_lottery.deploy.xnnpack import check_block_alignment

    data = load_mnist(args.data)
    if not args.full:
        data = data.subset(train=3000, test=1000)
    print(f"Data: {data.describe()}")
    rounds, target, epochs = (10, 0.9, 2) if args.full else (2, 0.75, 1)
    print(f"LeNet-300-100, {rounds} rounds of {epochs} epoch(s) to "
          f"{100 * target:.0f}% sparse, pruning {BLOCK[0]}x{BLOCK[1]} blocks "
          f"of every Dense kernel, on the {keras.backend.backend()} backend.\n")

    result = search_block_ticket(data, rounds=rounds, target_sparsity=target,
                                 epochs=epochs, seed=args.seed)
    print("\n" + result.table())

    last = result[-1]
    ticket = result.ticket(last.round, trained=True)
    dense = result.ticket(0, trained=True)
    alignment = check_block_alignment(ticket, block_shape=BLOCK)
    print(f"\nTicket: round {last.round}, {100 * last.remaining:.1f}% of "
          f"weights remaining, test accuracy "
          f"{100 * last.metrics['test_accuracy']:.2f}% (dense "
          f"{100 * result[0].metrics['test_accuracy']:.2f}%).")
    print(f"Block alignment of the Dense kernels: {alignment}")

    args.output.mkdir(parents=True, exist_ok=True)
    sample = data.x_test[:8]
    paths = {"dense": args.output / "dense.tflite",
             "ticket": args.output / "ticket_block4x1.tflite"}
    dense_report = export_tflite(kl.strip(dense), paths["dense"], sparse=False,
                                 representative_data=sample)
    report = export_tflite(kl.strip(ticket), paths["ticket"],
                           representative_data=sample)
    print(f"\n{report}")
    print(f"\nDense network: {dense_report.file_bytes:,} bytes; ticket "
          f"{report.file_bytes:,} bytes "
          f"({100 * report.file_bytes / dense_report.file_bytes:.1f}% of it).")

    timings = [(name, benchmark_tflite(path, batch_sizes=(1, 32), threads=1,
                                       runs=args.runs))
               for name, path in paths.items()]
    print(f"\nLatency, median of {args.runs} invokes, 1 thread (this "
          "machine's CPU, not a phone's; measure yours with "
          "benchmark_tflite):")
    print(latency_table(timings))

    summary = {
        "backend": keras.backend.backend(),
        "data": data.describe(),
        "rounds": [{"round": r.round, "remaining": r.remaining,
                    "test_accuracy": r.metrics["test_accuracy"]}
                   for r in result.rounds],
        "block_alignment": alignment,
        "export": {"dense": dense_report.to_dict(), "ticket": report.to_dict()},
        "latency_runs": args.runs,
        "latency": {name: [dataclasses.asdict(lat) for lat in rows]
                    for name, rows in timings},
    }
    out = args.output / "deploy.json"
    out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nFiles: {paths['dense']}, {paths['ticket']}, {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
