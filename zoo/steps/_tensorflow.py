import functools
import threading

import tensorflow as tf
from keras import tree
from keras.src.losses import loss as keras_loss

from zoo.steps import _stateful
from zoo.steps._common import pack_grads, split_wrt

__all__ = ["StepMixin", "value_and_grad"]

# Per thread (tf.distribute traces each replica in a thread of its own): whether
# a written-once step is running, and how deep value_and_grad calls are nested.
_step = threading.local()


class StepMixin(_stateful.StepMixin):
    """Under `tf.distribute`, a written-once step's losses stay per-replica
    means, as on the other backends, and `value_and_grad` divides the gradients
    by the replica count instead, since the optimizer sums them over replicas.

    Keras' own trainer does that division on the loss: under a strategy, its
    `Loss` objects pre-divide by the replica count. A step that computes some
    losses with `Loss` objects and others with ops would mix the two, so that
    pre-division is off inside the step (see `_unless_in_step`).
    """

    def train_step(self, data):
        with _in_step():
            return super().train_step(data)

    def test_step(self, data):
        with _in_step():
            return super().test_step(data)


class _in_step:
    def __enter__(self):
        _step.active, _step.depth = True, 0

    def __exit__(self, *exc_info):
        _step.active = False


def _unless_in_step(scale):
    @functools.wraps(scale)
    def scale_loss_for_distribution(value):
        return value if getattr(_step, "active", False) else scale(value)

    return scale_loss_for_distribution


keras_loss.scale_loss_for_distribution = _unless_in_step(keras_loss.scale_loss_for_distribution)


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
    if by_variables and outermost and getattr(_step, "active", False) and replicas > 1:
        grads = [tf.math.scalar_mul(1.0 / replicas, grad) for grad in grads]
    return out, pack_grads(wrt, grads, by_variables)


def _replicas_in_sync():
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1
