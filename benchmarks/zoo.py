"""The model zoo: every model kind keras_lottery supports, built offline.

One definition shared by the test suite (`tests/core/test_zoo.py`) and by the
docs table (`python benchmarks/zoo.py --backend all`, which writes
docs/supported-models.md). Every model is built with random weights (no
download) at a small input size; KerasHub models from tiny configs.

`check(name)` runs the whole user path on one model and returns a row:
wrap, coverage, prune, a few `fit` steps, the zero invariant, strip parity,
a `.keras` round trip, and (on request) a TFLite export.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# keras.applications: the smallest member of every family, at a small input.
# Xception and the Inception models need at least 71 / 75 pixels.
APPLICATIONS = {
    "ConvNeXtTiny": 32,
    "DenseNet121": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "InceptionResNetV2": 75,
    "InceptionV3": 75,
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "NASNetMobile": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "VGG16": 32,
    "Xception": 71,
}
KERAS_HUB = (
    "BertBackbone",
    "BertTextClassifier",
    "GPT2Backbone",
    "GPT2CausalLM",
    "ViTBackbone",
    "ViTImageClassifier",
)
OWN = ("FunctionalAdd", "Subclassed", "NestedBertBackbone")
ALL = (*OWN, *KERAS_HUB, *APPLICATIONS)
# Run on every backend by the suite; the rest on one backend.
REPRESENTATIVE = (
    "FunctionalAdd",
    "Subclassed",
    "NestedBertBackbone",
    "BertTextClassifier",
    "GPT2CausalLM",
    "ViTImageClassifier",
    "MobileNetV3Small",
)
BATCH = 4


def _keras():
    import keras

    return keras


def _subclassed_class():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="keras_lottery_zoo")
    class Subclassed(keras.Model):
        """A subclassed model: its graph exists only in `call`."""

        def __init__(self, units=16, classes=3, **kwargs):
            super().__init__(**kwargs)
            self.units, self.classes = units, classes
            self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
            self.hidden = keras.layers.Dense(units, activation="relu",
                                             name="hidden")
            self.head = keras.layers.Dense(classes, name="head")

        def call(self, x):
            return self.head(self.hidden(self.pool(self.conv(x))))

        def get_config(self):
            return {**super().get_config(), "units": self.units,
                    "classes": self.classes}

    return Subclassed


def build(name: str, seed: int = 0):
    """Returns `(model, x, y, loss)` for a zoo entry, built and called once."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    classes = 3
    y = rng.integers(0, classes, BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name in APPLICATIONS:
        size = APPLICATIONS[name]
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=classes,
            classifier_activation=None,
        )
        x = rng.random((BATCH, size, size, 3)).astype("float32")
    elif name == "FunctionalAdd":
        inputs = keras.Input((6, 8))
        h = keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
        h = keras.layers.LayerNormalization()(inputs + h)  # an operation node
        h = h + keras.layers.Dense(8)(keras.layers.Dense(16, activation="relu")(h))
        outputs = keras.layers.Dense(classes)(h[:, 0, :])  # GetItem node
        model = keras.Model(inputs, outputs)
        x = rng.random((BATCH, 6, 8)).astype("float32")
    elif name == "Subclassed":
        model = _subclassed_class()(classes=classes)
        x = rng.random((BATCH, 8, 8, 3)).astype("float32")
    elif name == "NestedBertBackbone":  # a KerasHub backbone inside a model
        backbone, x, _ = _keras_hub("BertBackbone", rng, classes)
        inputs = {k: keras.Input((12,), dtype="int32", name=k) for k in x}
        pooled = backbone(inputs)["pooled_output"]
        model = keras.Model(inputs, keras.layers.Dense(classes, name="head")(pooled))
    else:
        model, x, y = _keras_hub(name, rng, classes)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model(x)  # built, as after loading or a first call
    return model, x, y, loss


def _keras_hub(name, rng, classes):
    import keras_hub

    tokens = {
        "token_ids": rng.integers(0, 100, (BATCH, 12)).astype("int32"),
        "padding_mask": np.ones((BATCH, 12), "int32"),
    }
    text = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
                intermediate_dim=32, max_sequence_length=12)
    if name.startswith("Bert"):
        backbone = keras_hub.models.BertBackbone(**text)
        x = {**tokens, "segment_ids": np.zeros((BATCH, 12), "int32")}
        if name == "BertBackbone":
            return backbone, x, None
        return (keras_hub.models.BertTextClassifier(
            backbone, num_classes=classes, preprocessor=None),
            x, rng.integers(0, classes, BATCH))
    if name.startswith("GPT2"):
        backbone = keras_hub.models.GPT2Backbone(**text)
        if name == "GPT2Backbone":
            return backbone, tokens, None
        return (keras_hub.models.GPT2CausalLM(backbone, preprocessor=None),
                tokens, rng.integers(0, 100, (BATCH, 12)))
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    x = rng.random((BATCH, 16, 16, 3)).astype("float32")
    if name == "ViTBackbone":
        return backbone, x, None
    return (keras_hub.models.ViTImageClassifier(
        backbone, num_classes=classes, preprocessor=None),
        x, rng.integers(0, classes, BATCH))


def _outputs(model, x):
    keras = _keras()
    out = model(x, training=False)
    leaves = keras.tree.flatten(out)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype="float64")
            for o in leaves]


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(p - q))) if p.size else 0.0
               for p, q in zip(a, b))


def _pruned_nonzero(model) -> int:
    """Pruned entries that are not exactly 0.0 in their variables."""
    from keras_lottery.core.model import wrappers

    keras = _keras()
    count = 0
    for wrapper in wrappers(model).values():
        for name in wrapper.weight_names:
            raw = keras.ops.convert_to_numpy(wrapper.prunable_variable(name))
            count += int(np.count_nonzero(raw[wrapper.get_mask(name) == 0]))
    return count


def check(name: str, *, tflite: bool = False, fit_steps: int = 2) -> dict:
    """Runs the user path on one zoo model; returns what happened.

    Nothing is asserted here: the tests assert on the row, the docs print it.
    """
    import keras_lottery as kl
    from keras_lottery.core.model import output_layer_keys, wrappers

    keras = _keras()
    started = time.perf_counter()
    model, x, y, loss = build(name)
    reference = _outputs(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = kl.wrap(model)
    unreached_warning = any("could not reach" in str(w.message) for w in caught)
    covered, total, unreached = kl.coverage(wrapped)
    row = {
        "model": name,
        "in_place": wrapped is model,
        "wrappers": len(wrappers(wrapped)),
        "prunable": covered,
        "kernels_and_matrices": total,
        "coverage": covered / total if total else 1.0,
        "unreached": unreached,
        "unreached_warning": unreached_warning,
        "all_ones_diff": _max_diff(reference, _outputs(wrapped, x)),
        "outputs": output_layer_keys(wrapped),
    }
    kl.prune(wrapped, rate=0.5)
    row["sparsity"] = kl.summary(wrapped, print_fn=None).sparsity
    if y is not None:
        # Eager on TensorFlow (no tracing for two steps); JAX compiles faster
        # than it dispatches op by op; PyTorch is eager anyway.
        wrapped.compile(keras.optimizers.Adam(1e-2), loss,
                        run_eagerly=keras.backend.backend() == "tensorflow")
        wrapped.fit(x, y, batch_size=BATCH // fit_steps, epochs=1, verbose=0)
    else:  # a backbone: a custom step, with a Keras optimizer
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(wrapped.trainable_variables)
        optimizer.apply(
            [keras.ops.ones(v.shape, v.dtype) for v in wrapped.trainable_variables],
            wrapped.trainable_variables,
        )
    row["trained"] = "fit" if y is not None else "optimizer.apply"
    row["pruned_nonzero_after_training"] = _pruned_nonzero(wrapped)
    trained = _outputs(wrapped, x)
    plain = kl.strip(wrapped)
    row["strip_diff"] = _max_diff(trained, _outputs(plain, x))
    row["strip_has_wrappers"] = bool(wrappers(plain))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        wrapped.save(path)
        loaded = kl.load_model(path, compile=False)
        masks, loaded_masks = kl.get_masks(wrapped), kl.get_masks(loaded)
        row["keras_round_trip_diff"] = _max_diff(trained, _outputs(loaded, x))
        # In order: a subclassed model's auto-named layers get new names.
        row["keras_round_trip_masks_equal"] = len(masks) == len(loaded_masks) and all(
            np.array_equal(a, b)
            for a, b in zip(masks.values(), loaded_masks.values()))
        if tflite:
            row.update(_tflite(plain, x, trained, tmp))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _tflite(plain, x, expected, tmp) -> dict:
    import keras_lottery as kl

    path = os.path.join(tmp, "model.tflite")
    try:
        report = kl.export_tflite(plain, path)
    except Exception as error:  # recorded in the table, not hidden
        return {"tflite": f"failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200]}"}
    errors = report.max_error
    return {"tflite": "ok, max error " + ", ".join(
                f"{k} {v:.1e}" for k, v in errors.items()) if errors else "ok",
            "tflite_bytes": report.file_bytes,
            "tflite_dense_bytes": report.dense_bytes}


# ------------------------------------------------------------- the docs
def _markdown(rows_by_backend: dict[str, list[dict]]) -> str:
    backends = list(rows_by_backend)
    lines = [
        "| model | kind | prunable / kernels and matrices | "
        + " | ".join(f"{b}: strip parity, `.keras` parity" for b in backends)
        + " | TFLite |",
        "|---|---|---:|" + "---|" * len(backends) + "---|",
    ]
    names = [r["model"] for r in rows_by_backend[backends[0]]]
    for name in names:
        rows = {b: next((r for r in rows_by_backend[b] if r["model"] == name),
                        None)
                for b in backends}
        first = rows[backends[0]]
        kind = "in place" if first["in_place"] else "rebuilt"
        cells = []
        for b in backends:
            r = rows[b]
            if r is None:
                cells.append("not run")
                continue
            if "error" in r:
                cells.append(f"fails: {r['error'][:80]}")
                continue
            ok = (r["pruned_nonzero_after_training"] == 0
                  and r["keras_round_trip_masks_equal"])
            cells.append(
                f"{'ok' if ok else 'FAIL'}: {r['strip_diff']:.1e}, "
                f"{r['keras_round_trip_diff']:.1e}")
        tflite = next((rows[b].get("tflite") for b in backends
                       if rows[b] and rows[b].get("tflite")), "-")
        lines.append(
            f"| {name} | {kind} | {first['prunable']:,} / "
            f"{first['kernels_and_matrices']:,} ({100 * first['coverage']:.1f}%) | "
            + " | ".join(cells) + f" | {tflite} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="all",
                        help="tensorflow, jax, torch or all (default)")
    parser.add_argument("--models", nargs="*", default=list(ALL),
                        help="models on TensorFlow (default: all)")
    parser.add_argument("--others", choices=["representative", "all"],
                        default="representative",
                        help="models on JAX and PyTorch: the representative "
                        "ones (as the suite) or all")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows = []
        for name in args.models:
            try:
                rows.append(check(name, tflite=os.environ["KERAS_BACKEND"]
                                  == "tensorflow"))
            except Exception as error:  # one model's failure is a table row
                rows.append({"model": name, "error": f"{type(error).__name__}: {error}",
                             "in_place": False, "prunable": 0,
                             "kernels_and_matrices": 0, "coverage": 0.0})
            print(json.dumps(rows[-1], default=str), file=sys.stderr)
        print(json.dumps(rows, default=str))
        return 0
    import subprocess

    backends = (["tensorflow", "jax", "torch"] if args.backend == "all"
                else [args.backend])
    results = {}
    for backend in backends:
        models = args.models
        if backend != "tensorflow" and args.others == "representative":
            models = [m for m in args.models if m in REPRESENTATIVE]
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--models", *models],
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True, text=True, check=True)
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    import keras  # only for the version recorded

    out = ROOT / "benchmarks" / "results" / "zoo.json"
    command = "python benchmarks/zoo.py " + " ".join(argv or sys.argv[1:])
    out.write_text(json.dumps({"command": command.strip(),
                               "keras": keras.__version__,
                               "results": results}, indent=1, default=str))
    table = _markdown(results)
    page = ROOT / "docs" / "supported-models.md"
    text = page.read_text()
    start, end = "<!-- zoo:start -->", "<!-- zoo:end -->"
    head, rest = text.split(start, 1)
    page.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
