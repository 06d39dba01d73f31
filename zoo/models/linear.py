"""Linear models: linear and logistic regression, as one-layer Sequential models."""

import keras

from zoo import checks
from zoo.registry import register_model


def _one_unit_model(input_shape, *, activation, name):
    checks.model_name(name)
    input_shape = checks.shape(input_shape, model=name)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name=f"{name}_input"),
            keras.layers.Dense(1, activation=activation, name=f"{name}_dense"),
        ],
        name=name,
    )


@register_model(
    task="regression",
    source="https://keras.io/guides/sequential_model/",
)
def linear_regressor(*, input_shape=(1,), name="linear_regressor"):
    """Linear regression: a single `Dense(1)` unit.

    Args:
        input_shape: shape of one sample. Defaults to `(1,)`.
        name: model name, also the prefix of its layer names.
            Defaults to `"linear_regressor"`.
    """
    return _one_unit_model(input_shape, activation=None, name=name)


@register_model(
    task="binary_classification",
    source="https://keras.io/guides/sequential_model/",
)
def logistic_regressor(*, input_shape=(2,), name="logistic_regressor"):
    """Logistic regression: a single `Dense(1, sigmoid)` unit giving P(class 1).

    Args:
        input_shape: shape of one sample. Defaults to `(2,)`.
        name: model name, also the prefix of its layer names.
            Defaults to `"logistic_regressor"`.
    """
    return _one_unit_model(input_shape, activation="sigmoid", name=name)
