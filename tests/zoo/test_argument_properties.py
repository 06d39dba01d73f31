"""Property tests of every builder argument across the registry: a value of
the wrong type or out of range either builds a model (it was a valid value)
or fails at build time with the zoo's one-line error naming the argument,
never an error from deep inside Keras."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import TINY_KWARGS

import zoo
from zoo.registry import _without_weight_values

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Wrong and odd values of every kind a flag or a config can carry.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 5),
    st.sampled_from([float("nan"), float("inf")]),
    st.sampled_from(["", "relux", "a/b", "same"]),
    st.lists(st.integers(-2, 4), max_size=3).map(tuple),
    st.just({"a": 1}),
)


# `model`, not `name`: nothing is initialised, so even the large models run in
# the default matrix.
@pytest.mark.parametrize("model", zoo.list_models())
def test_any_argument_value_builds_or_fails_clearly(model):
    kwargs = TINY_KWARGS[model]
    arguments = sorted(zoo.model_arguments(model))

    @SETTINGS
    @given(argument=st.sampled_from(arguments), value=VALUES)
    def check(argument, value):
        try:
            # Only shapes: JAX compiles every initializer it runs.
            with _without_weight_values():
                zoo.create_model(model, **{**kwargs, argument: value})
        except zoo.ZooError as error:
            message = str(error)
            assert "\n" not in message and f"{argument}=" in message, message

    check()
