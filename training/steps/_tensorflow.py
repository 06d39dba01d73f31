import tensorflow as tf
from keras import tree

from training.steps._common import pack_grads, split_wrt
from training.steps._stateful import StepMixin

__all__ = ["StepMixin", "value_and_grad"]


def value_and_grad(fn, wrt, has_aux=False):
    leaves, by_variables = split_wrt(wrt)
    # An enclosing tape records this one's gradient computation, so nested calls
    # are differentiable (the gradient penalty case).
    with tf.GradientTape() as tape:
        if by_variables:
            out = fn()
        else:
            leaves = [tf.convert_to_tensor(leaf) for leaf in leaves]
            tape.watch(leaves)
            out = fn(tree.pack_sequence_as(wrt, leaves))
    value = out[0] if has_aux else out
    grads = tape.gradient(value, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return out, pack_grads(wrt, grads, by_variables)
