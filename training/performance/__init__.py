"""How `training.fit` runs a model fast, per backend: the settings that
`python -m training bench` measured against native loops on a 2-core CPU.

`fit` takes its run-time settings and its callback list from here, and the
benchmark measures `fit` itself, so the two cannot drift apart.

What was measured (the README's "Speed against native loops" has the tables):

- TensorFlow runs 32 steps per call into its compiled step
  (`steps_per_execution`): one Python round trip, `tf.data` hand-off and host
  sync per 32 steps instead of per step. It reads the batches from a
  `tf.data.Dataset` of the arrays (`training.pipeline`): from numpy arrays,
  Keras' pipeline gathers each batch by index, on threads that compete with
  the step for the cores (about 0.5 ms of a 10 ms `simple_cnn` step here).
  The dataset is not autotuned: dropping an autotuned iterator, as Keras does
  at every epoch's start, waited up to 2 s for its tuning thread. A
  convolution's bias is a plain add, not Keras' `BiasAdd`, whose gradient
  TensorFlow fuses into a slower oneDNN kernel (`training/tf_kernels.py`).
  XLA stays off on CPU, as Keras chooses there: XLA's CPU convolutions are
  several times slower.
- torch stays eager: `torch.compile` of the step (Keras' `jit_compile`) took
  16 s to compile an `mlp` and then ran within noise of eager. torch must
  run one step per call. Keras' channels-last convolution and pooling layout
  copies and its unfused BatchNormalization run on torch's kernels instead
  (`kernels()`, `training/torch_kernels.py`).
- JAX is compiled by Keras already; more steps per call gained nothing.
- `training.predict` runs the backend's own prediction loop where it can
  (`_torch.py`, ...): on torch, the forward pass traced once per input shape
  and replayed under `torch.inference_mode()`, without Keras' per-batch and
  per-layer Python (`mlp`: 0.33-0.48 -> 0.90-0.99 of torch's eager loop, one thread);
  on TensorFlow, the forward pass as one `tf.function`, called per batch
  (`mlp`: 0.78-0.86 -> 0.93-1.04 of the native `tf.function`); XLA did not pay; on JAX
  the jitted stateless forward pass, fed NumPy slices (`mlp`: 0.86-0.95 -> 0.91-1.07).
- On every backend, Keras calls each batch hook of its callback list after
  every step, and converts the step's logs to Python floats for it (a host
  sync, on a helper thread on torch and JAX) even when no callback listens.
  `CallbackList` skips hooks that no callback overrides.
"""

import contextlib
import importlib

import keras
import numpy as np

from training import distribute, pipeline

# The active backend's prediction loop (`_torch.py`, ...), chosen once.
_backend = importlib.import_module(f"training.performance._{keras.backend.backend()}")

# Steps per call of the compiled training step, where the backend allows more
# than one. Batch-level callbacks then run once per call.
STEPS_PER_EXECUTION = {"tensorflow": 32}

# Each batch hook, with the older name a callback may override instead.
_BATCH_HOOKS = {
    "on_train_batch_begin": ("on_train_batch_begin", "on_batch_begin"),
    "on_train_batch_end": ("on_train_batch_end", "on_batch_end"),
    "on_test_batch_begin": ("on_test_batch_begin",),
    "on_test_batch_end": ("on_test_batch_end",),
    "on_predict_batch_begin": ("on_predict_batch_begin",),
    "on_predict_batch_end": ("on_predict_batch_end",),
}


def configure(net) -> None:
    """Gives a compiled `net` the active backend's run-time settings.

    They are set after `compile`, so they stay out of the compile config saved
    with the model: a model trained here loads on any backend (torch refuses
    `steps_per_execution` above 1). Data-parallel runs take one step per call.
    """
    several = distribute.active() is None
    net.steps_per_execution = several and STEPS_PER_EXECUTION.get(keras.backend.backend(), 1) or 1


@contextlib.contextmanager
def kernels():
    """Runs the block on the active backend's faster kernels for Keras ops,
    where `training` has any (`training.torch_kernels`,
    `training.tf_kernels`) and Keras is a version they were written for
    (`zoo.patches`); Keras' own paths run elsewhere and after the block."""
    backend = keras.backend.backend()
    if backend == "torch":
        from training.torch_kernels import installed
    elif backend == "tensorflow":
        from training.tf_kernels import installed
    else:
        yield
        return
    with installed():
        yield


class CallbackList(keras.callbacks.CallbackList):
    """Keras' callback list, without the per-step cost of batch hooks that no
    callback overrides. Hooks that some callback overrides (a progress bar's,
    say) run as in Keras."""

    def __init__(self, callbacks=None, **kwargs):
        super().__init__(callbacks, **kwargs)
        self._listened = {
            hook: any(_overrides(callback, names) for callback in self.callbacks)
            for hook, names in _BATCH_HOOKS.items()
        }

    def on_train_batch_begin(self, batch, logs=None):
        if self._listened["on_train_batch_begin"]:
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._listened["on_train_batch_end"]:
            super().on_train_batch_end(batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        if self._listened["on_test_batch_begin"]:
            super().on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if self._listened["on_test_batch_end"]:
            super().on_test_batch_end(batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        if self._listened["on_predict_batch_begin"]:
            super().on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        if self._listened["on_predict_batch_end"]:
            super().on_predict_batch_end(batch, logs)


def _overrides(callback, names):
    return any(
        getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name)
        for name in names
    )


def callback_list(callbacks, net, *, steps, epochs, verbose=0) -> CallbackList:
    """The callback list `net.fit(..., epochs=epochs, verbose=verbose)` gets
    for data of `steps` batches per epoch: `callbacks` plus Keras' own history
    and, unless `verbose` is 0, progress bar, as `fit` would add them."""
    return CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
        model=net,
    )


def predict(net, x, *, batch_size) -> np.ndarray:
    """`net.predict` as `training.predict` runs it: silently, on this
    backend's fast path where the model and inputs allow it (`_fast_path`),
    else Keras' `predict` with this backend's settings and the callback list."""
    with kernels():
        if _fast_path(net, x):
            outputs = _backend.predict(net, x, batch_size=batch_size)
            if outputs is not None:
                return outputs
        configure(net)
        inputs = pipeline.prediction_inputs(x, batch_size)
        callbacks = callback_list([], net, steps=pipeline.steps(inputs), epochs=1)
        return np.asarray(net.predict(**inputs, verbose=0, callbacks=callbacks))


def _fast_path(net, x) -> bool:
    """Whether the backend's own prediction loop can stand in for Keras': an
    array into a model of one input and one output, which predicts by calling
    itself (Keras' `predict_step`), on one device."""
    if not isinstance(x, np.ndarray) or distribute.active() is not None:
        return False
    if type(net).predict_step is not keras.Model.predict_step:
        return False
    try:
        return len(net.inputs) == 1 and len(net.outputs) == 1
    except (AttributeError, ValueError):  # a subclassed model has neither
        return False
