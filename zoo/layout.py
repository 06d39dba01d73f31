"""Image layout helpers, so every family honours `keras.config.image_data_format()`
and a model's weights mean the same in either format."""

import keras


def channels_last():
    return keras.config.image_data_format() == "channels_last"


def channel_axis():
    """The channel axis of image tensors in the current `image_data_format`."""
    return -1 if channels_last() else 1


def reshape_to_image(x, image_shape, name):
    """Reshapes flat features `x` to `image_shape` (in the current format).

    The features are read in channels_last order in either format, as
    `keras.layers.Flatten` writes them, so a dense layer's weights before the
    reshape mean the same in channels_first.
    """
    if channels_last():
        return keras.layers.Reshape(image_shape, name=f"{name}_reshape")(x)
    channels, height, width = image_shape
    x = keras.layers.Reshape((height, width, channels), name=f"{name}_reshape")(x)
    return keras.layers.Permute((3, 1, 2), name=f"{name}_to_channels_first")(x)
