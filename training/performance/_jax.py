"""`training.predict` on JAX: the model's stateless forward pass under one
`jax.jit` per model, fed NumPy slices as they are.

Keras' `predict` reads each batch through its data adapter, gathers the model's
state into a tuple and calls its callbacks between calls: for `mlp`, 0.92 of
the native `jax.jit` loop (one thread, CPU time); the jitted forward pass
called directly, 0.98-1.0. The state the calls leave (a seed generator's, say)
is written back to the model, as Keras' `predict` does.
"""

import weakref

import jax
import jax.numpy as jnp
import keras
import numpy as np

# Model -> its jitted stateless forward pass.
_FORWARDS = weakref.WeakKeyDictionary()


def predict(net, x, *, batch_size) -> np.ndarray:
    """`net.predict(x, batch_size=batch_size)`'s outputs."""
    if net not in _FORWARDS:
        _FORWARDS[net] = _forward(weakref.ref(net))
    forward = _FORWARDS[net]
    trainable = [v.value for v in net.trainable_variables]
    non_trainable = [v.value for v in net.non_trainable_variables]
    outputs = []
    for start in range(0, len(x), batch_size):
        y, non_trainable = forward(trainable, non_trainable, x[start : start + batch_size])
        outputs.append(y)
    for variable, value in zip(net.non_trainable_variables, non_trainable, strict=True):
        variable.assign(value)
    return keras.ops.convert_to_numpy(outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs))


def _forward(net):
    # `net` is a weak reference: the cache must not keep its model alive.
    @jax.jit
    def forward(trainable, non_trainable, x):
        return net().stateless_call(trainable, non_trainable, x, training=False)

    return forward
