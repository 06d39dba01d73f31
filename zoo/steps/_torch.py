import threading

import torch
from keras import tree

from zoo.steps._common import pack_grads, split_wrt
from zoo.steps._stateful import StepMixin, allow_xla

__all__ = ["StepMixin", "allow_xla", "value_and_grad"]

# How many value_and_grad calls are evaluating their fn: a call made inside
# another keeps its graph (create_graph) so the outer one can differentiate it.
_depth = threading.local()


def value_and_grad(fn, wrt, has_aux=False):
    leaves, by_variables = split_wrt(wrt)
    nested = getattr(_depth, "value", 0) > 0
    # Keras runs test_step under no_grad; a gradient asked for is still wanted.
    with torch.enable_grad():
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            if by_variables:
                inputs = [leaf.value for leaf in leaves]
                out = fn()
            else:
                inputs = [_differentiable(leaf) for leaf in leaves]
                out = fn(tree.pack_sequence_as(wrt, inputs))
        finally:
            _depth.value -= 1
        value = out[0] if has_aux else out
        grads = torch.autograd.grad(value, inputs, create_graph=nested, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]
    return out, pack_grads(wrt, grads, by_variables)


def _differentiable(tensor):
    tensor = torch.as_tensor(tensor)
    return tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
