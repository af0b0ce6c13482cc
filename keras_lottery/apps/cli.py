"""The `keras-lottery` command.

Each subcommand is one `Command` in `COMMANDS`; to add one, define its
`add_arguments(parser)` and `run(args) -> int` and register it:

    COMMANDS["report"] = Command("Summarize a search.", _report_args, _report)

Heavy imports (Keras, TensorFlow) happen inside the handlers, so
`keras-lottery --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand of `keras-lottery`.

    Attributes:
        help: One line shown by `keras-lottery --help`.
        add_arguments: Adds the subcommand's arguments to its parser.
        run: Runs it on the parsed arguments; returns the exit status.

    Example:

    >>> from keras_lottery.apps.cli import COMMANDS, Command, main
    >>> COMMANDS["hello"] = Command("Say hello.", lambda p: None,
    ...                             lambda args: print("hello") or 0)
    >>> main(["hello"])
    hello
    0
    >>> del COMMANDS["hello"]
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------ export
def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved Keras model (.keras)")
    parser.add_argument("out", help="where to write the .tflite file")
    parser.add_argument(
        "--quantize", choices=["dynamic", "int8", "float16"], default=None,
        help="quantization mode (default: none, float32)",
    )
    parser.add_argument(
        "--representative", default=None, metavar="FILE.npy",
        help="sample inputs for --quantize int8 (.npy, or .npz with one "
             "array per model input)",
    )
    parser.add_argument("--no-sparse", dest="sparse", action="store_false",
                        help="store every weight dense")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the file against the Keras model")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON")


def _load_arrays(path: str):
    import numpy as np

    data = np.load(path)
    if isinstance(data, np.ndarray):
        return data
    with data:
        arrays = [data[name] for name in data.files]
    return arrays[0] if len(arrays) == 1 else arrays


def _load_keras(path: str):
    """`keras.saving.load_model`, with a missing file and a damaged one
    told apart (Keras says "File not found" for both)."""
    import zipfile

    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}. Received: "
                                f"model={path!r}. Check the path.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is damaged or not a Keras model: a .keras file is a zip "
            f"archive, and this one is not ({os.path.getsize(path)} bytes). "
            "Save the model again with model.save(...).")
    return keras.saving.load_model(path)


def _export(args: argparse.Namespace) -> int:
    from keras_lottery.deploy.tflite.export import export_tflite

    model = _load_keras(args.model)
    data = _load_arrays(args.representative) if args.representative else None
    report = export_tflite(model, args.out, sparse=args.sparse,
                           quantize=args.quantize, representative_data=data,
                           verify=args.verify)
    print(report.to_json(indent=2) if args.json else report)
    return 0


# ----------------------------------------------------------------- inspect
def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tflite", help="a .tflite file")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON")


def _inspect(args: argparse.Namespace) -> int:
    from keras_lottery.deploy.tflite.flatbuffer import TFLiteFileError
    from keras_lottery.deploy.tflite.interpreter import inspect_tflite

    try:
        report = inspect_tflite(args.tflite)
    except TFLiteFileError as error:
        raise TFLiteFileError(str(error).replace(
            "The .tflite content", args.tflite)) from None
    print(report.to_json(indent=2) if args.json else report)
    return 0


# ------------------------------------------------------------------ report
def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a lottery_search(directory=...) folder")
    parser.add_argument("--metric", default=None,
                        help="metric to plot (default: test, then validation "
                             "accuracy)")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="where to write the plot (default: DIR/plot.png)")
    parser.add_argument("--csv", default=None, metavar="FILE.csv",
                        help="also write the table as CSV")


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from keras_lottery.search.results import SearchResult

    result = SearchResult.load(args.directory)
    if not result.rounds:
        raise ValueError(f"{args.directory} holds no finished round yet.")
    print(result.table())
    plot = Path(args.plot) if args.plot else Path(args.directory) / "plot.png"
    result.plot(plot, args.metric)
    print(f"\nplot: {plot}")
    if args.csv:
        result.to_csv(args.csv)
        print(f"csv: {args.csv}")
    return 0


# -------------------------------------------------------------------- demo
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from keras_lottery.apps.demo import add_arguments

    add_arguments(parser)


def _demo(args: argparse.Namespace) -> int:
    from keras_lottery.apps.demo import main as demo_main

    # The demo parses its own options (and may restart on another backend).
    return demo_main(args.raw_argv[1:])


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "Run the end-to-end lottery-ticket demo (search, plot, ticket, TFLite).",
        _demo_arguments, _demo,
    ),
    "report": Command(
        "Print the round table of a search directory and write its plot.",
        _report_arguments, _report,
    ),
    "export": Command(
        "Convert a .keras model to a sparse, verified .tflite file.",
        _export_arguments, _export,
    ),
    "inspect": Command(
        "Show how a .tflite file stores each weight, its size and whether "
        "it runs on XNNPACK.",
        _inspect_arguments, _inspect,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subparser per entry of `COMMANDS`.

    Example:

    >>> from keras_lottery.apps.cli import build_parser
    >>> build_parser().parse_args(["inspect", "m.tflite"]).tflite
    'm.tflite'
    """
    parser = argparse.ArgumentParser(
        prog="keras-lottery",
        description="The Lottery Ticket Hypothesis for Keras 3.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help,
                                    description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-lottery` with `argv` (default: the command line).

    User errors (bad paths, bad models, failed exports) print one
    `keras-lottery: error: ...` line on stderr and return 1.

    Args:
        argv: Arguments without the program name.

    Returns:
        The exit status.

    Example:

    >>> from keras_lottery.apps.cli import main
    >>> main(["inspect", "model.tflite"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.raw_argv = argv
    try:
        return args._run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"keras-lottery: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
