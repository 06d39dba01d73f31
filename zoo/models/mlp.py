"""Multi-layer perceptrons."""

import keras

from zoo import checks
from zoo.registry import register_model


@register_model(
    task="classification",
    source="https://www.tensorflow.org/tutorials/quickstart/beginner",
)
def mlp(
    *,
    input_shape=(784,),
    num_classes=10,
    hidden_units=(128,),
    dropout=0.0,
    activation="relu",
    name="mlp",
):
    """Multi-layer perceptron classifier returning logits.

    Inputs of any rank are flattened first, so `(28, 28, 1)` images work as well
    as `(784,)` vectors. The defaults are the 784-128-10 net; `dropout=0.2` gives
    the TensorFlow MNIST quickstart net and `hidden_units=(512, 512)` the
    784-512-512-10 net.

    Args:
        input_shape: shape of one sample. Defaults to `(784,)`.
        num_classes: number of output logits. Defaults to `10`.
        hidden_units: width of each hidden layer; its length is the depth.
            Defaults to `(128,)`.
        dropout: dropout rate after each hidden layer. Defaults to `0.0`.
        activation: hidden-layer activation. Defaults to `"relu"`.
        name: model name, also the prefix of its layer names. Defaults to `"mlp"`.
    """
    checks.model_name(name)
    input_shape = checks.shape(input_shape, model=name)
    checks.positive_int(num_classes, name="num_classes", model=name)
    hidden_units = checks.positive_ints(hidden_units, name="hidden_units", model=name)
    dropout = checks.fraction(dropout, name="dropout", model=name)
    checks.activation(activation, name="activation", model=name)

    layers = [
        keras.Input(shape=input_shape, name=f"{name}_input"),
        keras.layers.Flatten(name=f"{name}_flatten"),
    ]
    for i, units in enumerate(hidden_units):
        layers.append(keras.layers.Dense(units, activation=activation, name=f"{name}_dense{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{name}_dropout{i}"))
    layers.append(keras.layers.Dense(num_classes, name=f"{name}_logits"))
    return keras.Sequential(layers, name=name)
