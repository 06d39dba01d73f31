"""Small convolutional classifiers: the Keras tutorial CNN and LeNet-5."""

import keras

from zoo import checks
from zoo.registry import register_model

# LeNet-5 reads 32x32 images; the paper centres 28x28 MNIST digits in that field.
_LENET_FIELD = 32


@register_model(
    task="classification",
    source="https://www.tensorflow.org/tutorials/images/cnn",
)
def simple_cnn(*, input_shape=(64, 64, 3), num_classes=10, name="simple_cnn"):
    """One conv layer, max pooling and two dense layers, returning logits.

    `Conv2D(32, 3, relu)` → `MaxPool(2)` → `Flatten` → `Dense(64, relu)` →
    `Dense(num_classes)`.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`, at
            least 4x4. Defaults to `(64, 64, 3)`.
        num_classes: number of output logits. Defaults to `10`.
        name: model name, also the prefix of its layer names.
            Defaults to `"simple_cnn"`.
    """
    checks.model_name(name)
    input_shape, _ = checks.image_shape(input_shape, model=name, min_size=4)
    checks.positive_int(num_classes, name="num_classes", model=name)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name=f"{name}_input"),
            keras.layers.Conv2D(32, 3, activation="relu", name=f"{name}_conv"),
            keras.layers.MaxPooling2D(2, name=f"{name}_pool"),
            keras.layers.Flatten(name=f"{name}_flatten"),
            keras.layers.Dense(64, activation="relu", name=f"{name}_dense"),
            keras.layers.Dense(num_classes, name=f"{name}_logits"),
        ],
        name=name,
    )


@register_model(
    task="classification",
    source="http://yann.lecun.com/exdb/lenet/",
    paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998",
)
def lenet5(*, input_shape=(32, 32, 1), num_classes=10, name="lenet5"):
    """LeNet-5: tanh convolutions with average pooling, returning logits.

    Images smaller than 32x32 are zero-padded to 32x32 first, as the paper did
    with 28x28 MNIST digits, so the network is the same for any such input.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`.
            Defaults to `(32, 32, 1)`.
        num_classes: number of output logits. Defaults to `10`.
        name: model name, also the prefix of its layer names.
            Defaults to `"lenet5"`.
    """
    checks.model_name(name)
    input_shape, (height, width) = checks.image_shape(input_shape, model=name)
    checks.positive_int(num_classes, name="num_classes", model=name)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    pad_h, pad_w = max(0, _LENET_FIELD - height), max(0, _LENET_FIELD - width)
    if pad_h or pad_w:
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(6, 5, activation="tanh", name=f"{name}_c1")(x)
    x = keras.layers.AveragePooling2D(2, name=f"{name}_s2")(x)
    x = keras.layers.Conv2D(16, 5, activation="tanh", name=f"{name}_c3")(x)
    x = keras.layers.AveragePooling2D(2, name=f"{name}_s4")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(120, activation="tanh", name=f"{name}_c5")(x)
    x = keras.layers.Dense(84, activation="tanh", name=f"{name}_f6")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{name}_logits")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
