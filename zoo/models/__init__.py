"""The model families, one file each, in timm's order: blocks, model, builder,
registered entrypoints last. Importing this package registers every model.

What several families share (torchvision's BatchNorm settings, its padding of
strided convolutions, a headless backbone's pooling) is in `_blocks.py`, so
that no family imports another.
"""

from zoo.models import (
    cnn,
    distillation,
    gan,
    linear,
    mlp,
    mobilenet,
    resnet,
    simclr,
    text,
    unet,
    vae,
    vit,
)

__all__ = [
    "cnn",
    "distillation",
    "gan",
    "linear",
    "mlp",
    "mobilenet",
    "resnet",
    "simclr",
    "text",
    "unet",
    "vae",
    "vit",
]
