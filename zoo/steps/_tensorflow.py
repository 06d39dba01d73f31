"""TensorFlow: `value_and_grad` with `tf.GradientTape`, and written-once steps
whose losses stay per-replica means under `tf.distribute`."""

import contextlib
import functools
import threading

import tensorflow as tf
from keras import tree
from keras.src.losses import loss as keras_loss

from zoo.patches import KerasPatch
from zoo.steps import _stateful
from zoo.steps._common import pack_grads, split_wrt

__all__ = ["StepMixin", "allow_xla", "value_and_grad"]

allow_xla = _stateful.allow_xla

# Per thread (tf.distribute traces each replica in a thread of its own): whether
# a written-once step is running, whether value_and_grad divides its gradients
# by the replica count, and how deep value_and_grad calls are nested.
_step = threading.local()


class StepMixin(_stateful.StepMixin):
    """Under `tf.distribute`, a written-once step's losses stay per-replica
    means, as on the other backends, and `value_and_grad` divides the gradients
    by the replica count instead, since the optimizer sums them over replicas.

    Keras' own trainer does that division on the loss: under a strategy, its
    `Loss` objects pre-divide by the replica count. A step that computes some
    losses with `Loss` objects and others with ops would mix the two, so that
    pre-division is off inside the step (`SCALE_LOSS`), for as long as a step
    with several replicas runs. On a Keras that `SCALE_LOSS` was not written
    for, the step follows Keras' convention instead: `Loss` objects pre-divide
    and `value_and_grad` does not.
    """

    def train_step(self, data):
        with _written_once_step():
            return super().train_step(data)

    def test_step(self, data):
        with _written_once_step():
            return super().test_step(data)


def _unless_in_step(scale):
    @functools.wraps(scale)
    def scale_loss_for_distribution(value):
        return value if getattr(_step, "active", False) else scale(value)

    return scale_loss_for_distribution


SCALE_LOSS = KerasPatch(
    "zoo.steps' per-replica losses under tf.distribute",
    (
        keras_loss,
        "scale_loss_for_distribution",
        _unless_in_step(keras_loss.scale_loss_for_distribution),
    ),
    written_for={
        "keras.src.losses.loss.scale_loss_for_distribution": "143cd8a5efb6cb17",
        # Its caller: every Loss object's result passes through it.
        "keras.src.losses.loss.Loss.__call__": "f42c42282ee8902b",
    },
)


@contextlib.contextmanager
def _written_once_step():
    """Marks this thread as running a written-once step; with several
    replicas, with `SCALE_LOSS` in place."""
    replicated = _replicas_in_sync() > 1
    with SCALE_LOSS.installed() if replicated else contextlib.nullcontext(False) as divide:
        _step.active, _step.divide, _step.depth = True, divide, 0
        try:
            yield
        finally:
            _step.active = _step.divide = False


def value_and_grad(fn, wrt, has_aux=False):
    leaves, by_variables = split_wrt(wrt)
    outermost = getattr(_step, "depth", 0) == 0
    # An enclosing tape records this one's gradient computation, so nested calls
    # are differentiable (the gradient penalty case).
    _step.depth = getattr(_step, "depth", 0) + 1
    try:
        with tf.GradientTape() as tape:
            if by_variables:
                out = fn()
            else:
                leaves = [tf.convert_to_tensor(leaf) for leaf in leaves]
                tape.watch(leaves)
                out = fn(tree.pack_sequence_as(wrt, leaves))
    finally:
        _step.depth -= 1
    value = out[0] if has_aux else out
    grads = tape.gradient(value, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    replicas = _replicas_in_sync()
    if by_variables and outermost and getattr(_step, "divide", False) and replicas > 1:
        grads = [tf.math.scalar_mul(1.0 / replicas, grad) for grad in grads]
    return out, pack_grads(wrt, grads, by_variables)


def _replicas_in_sync():
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1
