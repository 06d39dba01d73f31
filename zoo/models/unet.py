"""U-Net (Ronneberger et al., 2015), small: an encoder that halves the
resolution `depth` times, a decoder that doubles it back with transposed
convolutions, and skip connections concatenating each encoder level into the
decoder at the same resolution.

As in most modern U-Nets, the 3x3 convolutions are `"same"`-padded (the output
has the input's size, so no cropping) and followed by BatchNorm.
"""

import keras

from zoo import checks, layout
from zoo.models._blocks import POOLINGS, apply_padded_conv, apply_pooling, batch_norm
from zoo.registry import register_model

# Keras' default: this U-Net is not a port, and has always trained with it.
BN_MOMENTUM = 0.99


def apply_double_conv(x, filters, *, name):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""
    for index in (1, 2):
        x = apply_padded_conv(x, filters, 3, strides=1, name=f"{name}_conv{index}")
        x = batch_norm(f"{name}_bn{index}", momentum=BN_MOMENTUM)(x)
        x = keras.layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def apply_up_block(x, skip, filters, *, name):
    """Upsamples `x` 2x, concatenates the encoder's `skip` and convolves."""
    x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
    x = keras.layers.Concatenate(axis=layout.channel_axis(), name=f"{name}_concat")([skip, x])
    return apply_double_conv(x, filters, name=name)


def build_unet(*, input_shape, num_classes, filters, depth, include_top, pooling, name):
    """Builds a U-Net as a Functional model.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`; height
            and width divisible by `2**depth`.
        num_classes: per-pixel logits of the segmentation head.
        filters: channels of the first level, doubled at each level down.
        depth: downsampling steps.
        include_top: whether to end with the 1x1 convolution to class logits.
        pooling: without the top, `None`, `"avg"` or `"max"` pooling of the
            last decoder feature map.
        name: model name, the prefix of every layer name.
    """
    checks.model_name(name)
    checks.flag(include_top, name="include_top", model=name)
    checks.one_of(pooling, POOLINGS, name="pooling", model=name)
    checks.positive_int(depth, name="depth", model=name)
    checks.positive_int(filters, name="filters", model=name)
    checks.positive_int(num_classes, name="num_classes", model=name)
    input_shape, _ = checks.image_shape(input_shape, model=name, multiple_of=2**depth)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x, skips = inputs, []
    for level in range(1, depth + 1):
        x = apply_double_conv(x, filters * 2 ** (level - 1), name=f"{name}_down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"{name}_down{level}_pool")(x)
    x = apply_double_conv(x, filters * 2**depth, name=f"{name}_bottleneck")
    for level in range(depth, 0, -1):
        x = apply_up_block(
            x, skips[level - 1], filters * 2 ** (level - 1), name=f"{name}_up{level}"
        )
    if include_top:
        x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_head")(x)
    else:
        x = apply_pooling(x, pooling, avg_name=f"{name}_avgpool", max_name=f"{name}_maxpool")
    return keras.Model(inputs, x, name=name)


def feature_maps(model):
    """The named levels of a zoo U-Net (`down1` ... `bottleneck` ... `up1`), as
    one Functional model for feature extraction."""
    prefix = f"{model.name}_"
    outputs = {
        layer.name[len(prefix) : -len("_relu2")]: layer.output
        for layer in model.layers
        if layer.name.startswith(prefix) and layer.name.endswith("_relu2")
    }
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


@register_model(
    task="segmentation",
    source="https://github.com/milesial/Pytorch-UNet",
    paper="Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation, MICCAI 2015",
)
def unet_small(
    *,
    input_shape=(128, 128, 3),
    num_classes=2,
    filters=16,
    depth=3,
    include_top=True,
    pooling=None,
    name="unet_small",
):
    """A small U-Net returning per-pixel class logits at the input resolution.

    Args:
        input_shape: image shape; height and width divisible by `2**depth`.
            Defaults to `(128, 128, 3)`.
        num_classes: classes per pixel, background included. Defaults to `2`.
        filters: channels of the first level, doubled at each level down.
            Defaults to `16`.
        depth: downsampling steps. Defaults to `3`.
        include_top: end with the 1x1 convolution to class logits; without it
            the model returns the last decoder feature map. Defaults to `True`.
        pooling: without the top, `None` (the feature map), `"avg"` or `"max"`
            (a vector per image). Defaults to `None`.
        name: model name, the prefix of every layer name. Defaults to `"unet_small"`.
    """
    return build_unet(
        input_shape=input_shape,
        num_classes=num_classes,
        filters=filters,
        depth=depth,
        include_top=include_top,
        pooling=pooling,
        name=name,
    )
