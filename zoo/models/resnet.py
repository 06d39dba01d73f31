"""ResNet (He et al., 2016), layer for layer as torchvision builds it.

Layer names follow torchvision's module names with `_` for `.`
(`layer1.0.downsample.0` is `{name}_layer1_0_downsample_0`), so weights map one
to one. Where torch pads symmetrically and Keras' `"same"` would not (strided
convolutions and the stem's max pool), the padding is an explicit
`ZeroPadding2D`; BatchNorm uses torch's epsilon. Stochastic depth is timm's
(`drop_path_rate`), a weightless `{block}_drop_path` on each residual branch.
"""

import keras

from zoo import checks, layout
from zoo.models._blocks import (
    POOLINGS,
    apply_drop_path,
    apply_padded_conv,
    apply_pooling,
    batch_norm,
)
from zoo.registry import register_model

STEMS = ("imagenet", "small")


def _conv_bn(x, filters, kernel_size, *, strides, name, bn_name, relu):
    """A bias-free convolution (torch-style symmetric padding) and BatchNorm."""
    x = apply_padded_conv(x, filters, kernel_size, strides=strides, name=name)
    x = batch_norm(bn_name)(x)
    return keras.layers.ReLU(name=f"{bn_name}_relu")(x) if relu else x


def apply_basic_block(x, filters, *, strides, name, drop_path_rate=0.0):
    """torchvision's `BasicBlock`: two 3x3 convolutions and a shortcut, the
    branch dropped at `drop_path_rate` as in timm."""
    shortcut = x
    y = _conv_bn(
        x, filters, 3, strides=strides, name=f"{name}_conv1", bn_name=f"{name}_bn1", relu=True
    )
    y = _conv_bn(y, filters, 3, strides=1, name=f"{name}_conv2", bn_name=f"{name}_bn2", relu=False)
    if strides != 1 or x.shape[layout.channel_axis()] != filters:
        shortcut = _downsample(x, filters, strides=strides, name=name)
    y = apply_drop_path(y, drop_path_rate, name=f"{name}_drop_path")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def apply_bottleneck_block(x, filters, *, strides, name, drop_path_rate=0.0):
    """torchvision's `Bottleneck` (ResNet v1.5: the stride is on the 3x3), the
    branch dropped at `drop_path_rate` as in timm."""
    shortcut = x
    y = _conv_bn(x, filters, 1, strides=1, name=f"{name}_conv1", bn_name=f"{name}_bn1", relu=True)
    y = _conv_bn(
        y, filters, 3, strides=strides, name=f"{name}_conv2", bn_name=f"{name}_bn2", relu=True
    )
    y = _conv_bn(
        y, filters * 4, 1, strides=1, name=f"{name}_conv3", bn_name=f"{name}_bn3", relu=False
    )
    if strides != 1 or x.shape[layout.channel_axis()] != filters * 4:
        shortcut = _downsample(x, filters * 4, strides=strides, name=name)
    y = apply_drop_path(y, drop_path_rate, name=f"{name}_drop_path")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _downsample(x, filters, *, strides, name):
    """torchvision's `downsample`: a 1x1 convolution and BatchNorm on the shortcut."""
    return _conv_bn(
        x,
        filters,
        1,
        strides=strides,
        name=f"{name}_downsample_0",
        bn_name=f"{name}_downsample_1",
        relu=False,
    )


def _apply_stem(x, *, stem, name):
    if stem == "small":
        # For 32x32 inputs: a 3x3 stride-1 convolution and no max pool.
        return _conv_bn(x, 64, 3, strides=1, name=f"{name}_conv1", bn_name=f"{name}_bn1", relu=True)
    x = _conv_bn(x, 64, 7, strides=2, name=f"{name}_conv1", bn_name=f"{name}_bn1", relu=True)
    # Zero padding equals torch's -inf padding here: the inputs are post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)


def build_resnet(
    block,
    stage_depths,
    *,
    input_shape,
    num_classes,
    include_top,
    pooling,
    stem,
    drop_path_rate,
    name,
):
    """Builds a ResNet as a Functional model.

    Args:
        block: `apply_basic_block` or `apply_bottleneck_block`.
        stage_depths: blocks per stage, e.g. `(2, 2, 2, 2)` for ResNet-18.
        input_shape: image shape in `keras.config.image_data_format()`.
        num_classes: logits of the classifier head.
        include_top: whether to end with pooling and the `fc` layer.
        pooling: `None`, `"avg"` or `"max"` pooling of the last feature map
            when `include_top=False`.
        stem: `"imagenet"` (7x7/2 convolution and max pool) or `"small"`
            (3x3/1 convolution, for 32x32 images).
        drop_path_rate: stochastic depth of the last block, rising linearly
            from 0 at the first, as timm's `drop_path_rate`.
        name: model name, the prefix of every layer name.
    """
    checks.model_name(name)
    checks.flag(include_top, name="include_top", model=name)
    checks.one_of(stem, STEMS, name="stem", model=name)
    checks.one_of(pooling, POOLINGS, name="pooling", model=name)
    input_shape, _ = checks.image_shape(
        input_shape, model=name, min_size=1 if stem == "small" else 32
    )
    checks.positive_int(num_classes, name="num_classes", model=name)
    drop_path_rate = checks.fraction(drop_path_rate, name="drop_path_rate", model=name)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = _apply_stem(inputs, stem=stem, name=name)
    blocks, last = 0, max(1, sum(stage_depths) - 1)
    for stage, depth in enumerate(stage_depths, start=1):
        filters = 64 * 2 ** (stage - 1)
        for index in range(depth):
            x = block(
                x,
                filters,
                strides=2 if stage > 1 and index == 0 else 1,
                name=f"{name}_layer{stage}_{index}",
                drop_path_rate=drop_path_rate * blocks / last,
            )
            blocks += 1
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
        x = keras.layers.Dense(num_classes, name=f"{name}_fc")(x)
    else:
        # `_maxpool` is the stem's.
        x = apply_pooling(x, pooling, avg_name=f"{name}_avgpool", max_name=f"{name}_maxpool_out")
    return keras.Model(inputs, x, name=name)


def feature_maps(model):
    """The named output of each stage (`layer1` ... `layer4`) of a zoo ResNet,
    as one Functional model for feature extraction."""
    names = [f"layer{stage}" for stage in range(1, 5)]
    last = {
        n: [layer for layer in model.layers if layer.name.startswith(f"{model.name}_{n}_")][-1]
        for n in names
    }
    return keras.Model(
        model.inputs, {n: layer.output for n, layer in last.items()}, name=f"{model.name}_features"
    )


_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
_SOURCE = "https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py"


@register_model(task="classification", source=_SOURCE, paper=_PAPER)
def resnet18(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    pooling=None,
    stem="imagenet",
    drop_path_rate=0.0,
    name="resnet18",
):
    """ResNet-18: basic blocks, 2-2-2-2.

    Args:
        input_shape: image shape. Defaults to `(224, 224, 3)`.
        num_classes: classifier logits. Defaults to `1000`.
        include_top: end with pooling and `fc`. Defaults to `True`.
        pooling: without the top, `None`, `"avg"` or `"max"`. Defaults to `None`.
        stem: `"imagenet"` or `"small"` (for 32x32 images). Defaults to `"imagenet"`.
        drop_path_rate: stochastic depth, the rate of the last residual
            branch, rising linearly from 0 at the first (timm's). Defaults to `0.0`.
        name: model name, the prefix of every layer name. Defaults to `"resnet18"`.
    """
    # `locals()` holds exactly the arguments above, passed on by name.
    return build_resnet(apply_basic_block, (2, 2, 2, 2), **locals())


@register_model(task="classification", source=_SOURCE, paper=_PAPER)
def resnet34(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    pooling=None,
    stem="imagenet",
    drop_path_rate=0.0,
    name="resnet34",
):
    """ResNet-34: basic blocks, 3-4-6-3. Arguments as `resnet18`."""
    return build_resnet(apply_basic_block, (3, 4, 6, 3), **locals())


@register_model(task="classification", source=_SOURCE, paper=_PAPER)
def resnet50(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    pooling=None,
    stem="imagenet",
    drop_path_rate=0.0,
    name="resnet50",
):
    """ResNet-50: bottleneck blocks (v1.5), 3-4-6-3. Arguments as `resnet18`."""
    return build_resnet(apply_bottleneck_block, (3, 4, 6, 3), **locals())
