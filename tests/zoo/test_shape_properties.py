"""Property tests of input shapes across the registry: any shape either builds
a model whose outputs have the shape `compute_output_spec` predicts, with no
NaN, or fails at build time with the zoo's one-line error."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tiny import LARGE, TINY_KWARGS

import zoo

# Models train in minutes at most on 2 cores; a build per example keeps
# examples few.
SETTINGS = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _shapes(rank):
    """Shapes of the model's rank, sizes from tiny to moderate, and also some
    broken ones: a zero, a negative, the wrong rank."""
    valid = (
        st.tuples(*[st.integers(1, 24)] * (rank - 1), st.integers(1, 4))
        if rank == 3
        else (st.tuples(*[st.integers(1, 24)] * rank))
    )
    broken = st.one_of(
        st.lists(st.integers(-3, 0), min_size=rank, max_size=rank).map(tuple),
        st.lists(st.integers(1, 8), min_size=rank + 1, max_size=rank + 2).map(tuple),
        st.just(()),
    )
    return st.one_of(valid, valid, broken)


@pytest.mark.parametrize("name", [n for n in zoo.list_models() if n not in LARGE])
def test_any_input_shape_builds_a_consistent_model_or_fails_clearly(name):
    kwargs = TINY_KWARGS[name]
    rank = len(kwargs["input_shape"])

    @SETTINGS
    @given(input_shape=_shapes(rank))
    @example(input_shape=kwargs["input_shape"])  # one that must build
    def check(input_shape):
        try:
            model = zoo.create_model(name, **{**kwargs, "input_shape": input_shape})
        except zoo.ZooError as error:
            assert "\n" not in str(error) and "Received" in str(error)
            assert tuple(input_shape) != tuple(kwargs["input_shape"]), error
            return
        # Sizes below 1 never build; some models take other ranks (a Dense
        # layer applies to the last axis of any rank).
        assert input_shape and min(input_shape) >= 1
        rng = np.random.default_rng(0)
        if "vocab_size" in kwargs:
            x = rng.integers(0, kwargs["vocab_size"], size=(2, *input_shape)).astype("int32")
        else:
            x = rng.uniform(0, 1, size=(2, *input_shape)).astype("float32")
        spec = model.compute_output_spec(keras.KerasTensor(x.shape, dtype=x.dtype))
        outputs = keras.ops.convert_to_numpy(model(x, training=False))
        assert outputs.shape == tuple(spec.shape)
        assert np.isfinite(outputs).all()

    check()
