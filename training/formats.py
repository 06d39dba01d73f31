"""The formats `training.export` writes and what each needs, without importing
keras: the CLI offers them as `export --format` before a backend is chosen."""

FORMATS = ("onnx", "tf_saved_model", "torch")

# Per format, the backends that export to it and the modules each needs beyond
# its framework, ONNX Runtime to verify ONNX files included. Keras can also
# write a SavedModel from torch, but only through torch_xla's StableHLO bridge,
# which has no build for current torch releases.
REQUIREMENTS = {
    "onnx": {
        "tensorflow": ("tf2onnx", "onnxruntime"),
        "torch": ("onnx", "onnxscript", "onnxruntime"),
        "jax": ("jax2onnx", "onnxruntime"),
    },
    "tf_saved_model": {"tensorflow": (), "jax": ("tensorflow",)},
    "torch": {"torch": ()},
}
