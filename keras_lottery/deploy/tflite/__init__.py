"""TFLite / LiteRT export: strip, convert sparse, read back, verify, time.

`export_tflite` writes a `.tflite` file whose pruned weights the converter
stores sparse (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), then reads the
flatbuffer back to report, per weight tensor, how it was actually stored:

- ``block_sparse``: the weight stays sparse at run time and the op runs on
  TFLite's builtin sparse kernel (FullyConnected with 1x4 float or 1x16
  int8 blocks along the input axis): smaller and faster.
- ``densify``: the weight is stored sparse but a DENSIFY (or DEQUANTIZE) op
  expands it when the model loads: a smaller file, the same speed and the
  same memory at run time.
- ``dense``: stored as a plain dense array.

Conversion needs TensorFlow. A model on the JAX or PyTorch backend is saved
as `.keras` and converted by ``python -m keras_lottery.deploy.tflite`` in a child
process with ``KERAS_BACKEND=tensorflow``; reading, verifying and timing
the result only need `ai_edge_litert` and run in the calling process.

The modules, one concern each: `report` (`ExportReport`,
`TensorEncoding`, `ExportError`, the dense-weights note), `flatbuffer`
(reading the file, `read_tflite_weights`), `ops` (a weight's layer from
its tensor name; why an op runs off XNNPACK), `interpreter` (loading it,
`inspect_tflite`), `inputs` (the model's inputs, sample and
representative data), `reshapes` (constant-shape Flatten / Reshape for
conversion), `convert` (conversion here or in the child), `tables`
(sparse-encoding GATHER tables behind DENSIFY), `verify`, `export`
(`export_tflite`) and `benchmark` (`benchmark_tflite`).
"""
