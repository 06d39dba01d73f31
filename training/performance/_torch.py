"""`training.predict` on torch: the model's forward pass traced once per input
signature with `torch.jit.trace`, run under `torch.inference_mode()`.

Keras' `predict` spends most of a small model's batch in Python: its data
adapter, callbacks and tree maps, and `Layer.__call__` for every layer
(argument binding, converting each variable, autocasting). A trace records the
torch ops that one call ran, and replays them without that Python. Its weights
are arguments, not constants, so a trace stays right when they change. A trace
holds one input shape: each batch shape is traced once, per model, on its first
batch, whose outputs the tracing computes (the trace costs a few milliseconds
more than that batch for `mlp`).

A trace would replay a random op with the seed it drew while tracing, where
Keras draws a new one each call: a model whose forward pass draws random
numbers (a trace holding a nondeterministic op) is left to Keras' `predict`.
"""

import warnings
import weakref

import keras
import numpy as np
import torch

# Model -> {(input shape, dtype, variables): traced forward pass}.
_TRACES = weakref.WeakKeyDictionary()


def predict(net, x, *, batch_size) -> np.ndarray | None:
    """`net.predict(x, batch_size=batch_size)`'s outputs, or `None` where the
    forward pass cannot be traced faithfully."""
    groups = net.trainable_variables, net.non_trainable_variables
    trainable, non_trainable = (tuple(v.value for v in group) for group in groups)
    # Which variables the trace takes, trainable or not: freezing a layer
    # moves its weights from one argument to the other.
    variables = tuple(tuple(map(id, group)) for group in groups)
    traces = _TRACES.setdefault(net, {})
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = keras.ops.convert_to_tensor(x[start : start + batch_size])
            key = (tuple(batch.shape), batch.dtype, variables)
            if key not in traces:
                traces[key], first = _trace(weakref.ref(net), batch, trainable, non_trainable)
                if traces[key] is not None:
                    outputs.append(first)
                    continue
            if traces[key] is None:
                return None
            outputs.append(traces[key](batch, trainable, non_trainable))
        return keras.ops.convert_to_numpy(torch.cat(outputs))


def _trace(net, batch, trainable, non_trainable):
    """The traced forward pass, or `None`, and the outputs for `batch` that
    tracing computed."""
    outputs = []

    # `net` is a weak reference: the cache must not keep its model alive.
    def forward(x, trainable, non_trainable):
        y, _ = net().stateless_call(list(trainable), list(non_trainable), x, training=False)
        outputs.append(y)
        return y

    with warnings.catch_warnings():
        # The tracer warns wherever Keras reads a shape into Python: a trace
        # per input shape is what is meant.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(forward, (batch, trainable, non_trainable), check_trace=False)
    if any(node.isNondeterministic() for node in traced.graph.nodes()):
        return None, None
    return traced, outputs[0]
