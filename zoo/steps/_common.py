"""What the three `value_and_grad`s share: reading `wrt`."""

import keras
from keras import tree


def split_wrt(wrt):
    """Returns `(leaves, by_variables)` for a list of variables or tensors."""
    leaves = tree.flatten(wrt)
    kinds = {isinstance(leaf, keras.Variable) for leaf in leaves}
    if not leaves or len(kinds) != 1:
        raise ValueError(
            "Expected wrt to be a non-empty list of Keras variables, or tensors. "
            f"Received: {len(leaves)} leaves of types {sorted({type(x).__name__ for x in leaves})}"
        )
    if kinds == {True} and not all(leaf.trainable for leaf in leaves):
        names = [leaf.path for leaf in leaves if not leaf.trainable]
        raise ValueError(f"Expected trainable variables in wrt. Received non-trainable: {names}")
    return leaves, kinds == {True}


def pack_grads(wrt, grads, by_variables):
    return list(grads) if by_variables else tree.pack_sequence_as(wrt, list(grads))
