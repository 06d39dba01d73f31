"""Vision Transformer (Dosovitskiy et al., 2020), layer for layer as timm builds it.

Layer names follow timm's module names with `_` for `.` (`blocks.0.mlp.fc1` is
`{name}_blocks_0_mlp_fc1`). timm's fused `attn.qkv` and `attn.proj` are the
query/key/value and output projections of one `MultiHeadAttention`,
`{name}_blocks_{i}_attn`, with the same parameters (split `qkv` in three to
port weights). Blocks are pre-norm, LayerNorm epsilon is timm's 1e-6 and GELU
is the exact (erf) one. Stochastic depth is timm's (`drop_path_rate`), weightless
`{block}_drop_path1` and `_drop_path2` on the two residual branches.
"""

import keras
from keras import ops

from zoo import checks, layout
from zoo.errors import ZooError
from zoo.models._blocks import apply_drop_path
from zoo.registry import register_model

LN_EPSILON = 1e-6  # timm's partial(nn.LayerNorm, eps=1e-6)
POOLINGS = ("token", "avg", None)


@keras.saving.register_keras_serializable(package="zoo")
class ClassToken(keras.layers.Layer):
    """Prepends a learned token to a sequence of vectors (timm's `cls_token`)."""

    def build(self, input_shape):
        # timm's initialisation of cls_token.
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1e-6),
            name="token",
        )

    def no_weight_decay(self):
        """The weights weight decay spares (timm's `no_weight_decay()`)."""
        return [self.token]

    def call(self, x):
        token = ops.broadcast_to(self.token, (ops.shape(x)[0], 1, self.token.shape[-1]))
        return ops.concatenate([ops.cast(token, x.dtype), x], axis=1)

    def compute_output_shape(self, input_shape):
        batch, length, dim = input_shape
        return (batch, None if length is None else length + 1, dim)


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector to each position of a fixed-length sequence
    (timm's `pos_embed`)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=(1, *input_shape[1:]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="embedding",
        )

    def no_weight_decay(self):
        """The weights weight decay spares (timm's `no_weight_decay()`)."""
        return [self.embedding]

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def apply_patch_embedding(images, *, patch_size, embed_dim, name):
    """timm's `PatchEmbed`: a `patch_size`-strided convolution, flattened to
    `(batch, patches, embed_dim)` with patches in row-major order."""
    x = keras.layers.Conv2D(
        embed_dim, patch_size, strides=patch_size, name=f"{name}_patch_embed_proj"
    )(images)
    if layout.channels_last():
        _, height, width, _ = x.shape
        return keras.layers.Reshape(
            (height * width, embed_dim), name=f"{name}_patch_embed_flatten"
        )(x)
    _, _, height, width = x.shape
    x = keras.layers.Reshape((embed_dim, height * width), name=f"{name}_patch_embed_flatten")(x)
    return keras.layers.Permute((2, 1), name=f"{name}_patch_embed_transpose")(x)


def apply_vit_block(x, *, num_heads, mlp_dim, dropout, name, drop_path_rate=0.0):
    """timm's ViT `Block`: pre-norm self-attention and a GELU MLP, each added
    back to its input, each branch dropped at `drop_path_rate`."""
    embed_dim = x.shape[-1]
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm1")(x)
    y = keras.layers.MultiHeadAttention(
        num_heads, key_dim=embed_dim // num_heads, name=f"{name}_attn"
    )(y, y)
    y = keras.layers.Dropout(dropout, name=f"{name}_attn_proj_drop")(y)
    y = apply_drop_path(y, drop_path_rate, name=f"{name}_drop_path1")
    x = keras.layers.Add(name=f"{name}_residual1")([x, y])
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm2")(x)
    y = keras.layers.Dense(mlp_dim, name=f"{name}_mlp_fc1")(y)
    y = keras.layers.Activation("gelu", name=f"{name}_mlp_act")(y)
    y = keras.layers.Dropout(dropout, name=f"{name}_mlp_drop1")(y)
    y = keras.layers.Dense(embed_dim, name=f"{name}_mlp_fc2")(y)
    y = keras.layers.Dropout(dropout, name=f"{name}_mlp_drop2")(y)
    y = apply_drop_path(y, drop_path_rate, name=f"{name}_drop_path2")
    return keras.layers.Add(name=f"{name}_residual2")([x, y])


def _check_vit(*, input_shape, include_top, pooling, patch_size, embed_dim, num_heads, name):
    checks.flag(include_top, name="include_top", model=name)
    checks.one_of(pooling, POOLINGS, name="pooling", model=name)
    if include_top and pooling is None:
        raise ZooError(
            f"{name} expects pooling 'token' or 'avg' when include_top=True. Received: pooling=None"
        )
    input_shape, (height, width) = checks.image_shape(input_shape, model=name, min_size=patch_size)
    if height % patch_size or width % patch_size:
        raise ZooError(
            f"{name} expects image height and width divisible by patch_size={patch_size}. "
            f"Received: input_shape={input_shape!r}"
        )
    if embed_dim % num_heads:
        raise ZooError(
            f"{name} expects embed_dim divisible by num_heads. "
            f"Received: embed_dim={embed_dim}, num_heads={num_heads}"
        )
    return input_shape


def build_vit(
    *,
    input_shape,
    num_classes,
    patch_size,
    embed_dim,
    depth,
    num_heads,
    mlp_dim,
    dropout,
    drop_path_rate,
    include_top,
    pooling,
    name,
):
    """Builds a Vision Transformer as a Functional model.

    Args:
        input_shape: image shape in `keras.config.image_data_format()`; height
            and width divisible by `patch_size`.
        num_classes: logits of the classifier head.
        patch_size: side of the square patches.
        embed_dim: token width, divisible by `num_heads`.
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout after the position embedding, the attention
            projection and each MLP layer.
        drop_path_rate: stochastic depth of the last block's branches,
            rising linearly from 0 at the first, as timm's `drop_path_rate`.
        include_top: whether to end with pooling and the `head` layer.
        pooling: `"token"` (the class token), `"avg"` (the mean of the patch
            tokens) or, without the top, `None` (every token).
        name: model name, the prefix of every layer name.
    """
    checks.model_name(name)
    for key, value in dict(
        num_classes=num_classes,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
    ).items():
        checks.positive_int(value, name=key, model=name)
    input_shape = _check_vit(
        input_shape=input_shape,
        include_top=include_top,
        pooling=pooling,
        patch_size=patch_size,
        embed_dim=embed_dim,
        num_heads=num_heads,
        name=name,
    )
    dropout = checks.fraction(dropout, name="dropout", model=name)
    drop_path_rate = checks.fraction(drop_path_rate, name="drop_path_rate", model=name)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = apply_patch_embedding(inputs, patch_size=patch_size, embed_dim=embed_dim, name=name)
    num_patches = x.shape[1]
    x = ClassToken(name=f"{name}_cls_token")(x)
    x = PositionEmbedding(name=f"{name}_pos_embed")(x)
    x = keras.layers.Dropout(dropout, name=f"{name}_pos_drop")(x)
    for index in range(depth):
        x = apply_vit_block(
            x,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout=dropout,
            name=f"{name}_blocks_{index}",
            # timm's torch.linspace(0, drop_path_rate, depth).
            drop_path_rate=drop_path_rate * index / max(1, depth - 1),
        )
    # As timm: LayerNorm then the class token, or the mean of the patch
    # tokens then LayerNorm (`fc_norm`).
    if pooling == "avg":
        x = keras.layers.Cropping1D((1, 0), name=f"{name}_patch_tokens")(x)
        x = keras.layers.GlobalAveragePooling1D(data_format="channels_last", name=f"{name}_pool")(x)
        x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_fc_norm")(x)
    else:
        x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm")(x)
    if pooling == "token":
        x = keras.layers.Cropping1D((0, num_patches), name=f"{name}_class_token")(x)
        x = keras.layers.Reshape((embed_dim,), name=f"{name}_pool")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, name=f"{name}_head")(x)
    return keras.Model(inputs, x, name=name)


def feature_maps(model):
    """The token sequence after each encoder block of a zoo ViT, as one
    Functional model with outputs `"block_0"` ... `"block_{depth-1}"`, each
    `(batch, 1 + patches, embed_dim)` with the class token first (timm's
    `forward_intermediates` before the final norm).

    Example:

    >>> vit = zoo.create_model("vit_tiny", include_top=False, pooling=None)
    >>> tokens = feature_maps(vit)(images)["block_11"]  # (b, 197, 192)
    """
    outputs, index = {}, 0
    names = {layer.name for layer in model.layers}
    while f"{model.name}_blocks_{index}_residual2" in names:
        outputs[f"block_{index}"] = model.get_layer(f"{model.name}_blocks_{index}_residual2").output
        index += 1
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


_PAPER = (
    "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image "
    "Recognition at Scale, ICLR 2021"
)
_SOURCE = (
    "https://github.com/huggingface/pytorch-image-models/blob/main/timm/models/"
    "vision_transformer.py"
)


@register_model(task="classification", source=_SOURCE, paper=_PAPER)
def vit_tiny(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    patch_size=16,
    embed_dim=192,
    depth=12,
    num_heads=3,
    mlp_dim=768,
    dropout=0.0,
    drop_path_rate=0.0,
    include_top=True,
    pooling="token",
    name="vit_tiny",
):
    """ViT-Ti/16 (the DeiT paper's tiny ViT, timm's `vit_tiny_patch16_224`).

    Args:
        input_shape: image shape in `keras.config.image_data_format()`, height
            and width divisible by `patch_size`. Defaults to `(224, 224, 3)`.
        num_classes: classifier logits. Defaults to `1000`.
        patch_size: side of the square patches. Defaults to `16`.
        embed_dim: token width, divisible by `num_heads`. Defaults to `192`.
        depth: encoder blocks. Defaults to `12`.
        num_heads: attention heads. Defaults to `3`.
        mlp_dim: hidden width of each block's MLP. Defaults to `768`.
        dropout: dropout rate of the embedding, attention projection and MLP.
            Defaults to `0.0`.
        drop_path_rate: stochastic depth, the rate of the last block's
            branches, rising linearly from 0 at the first (timm's). Defaults to `0.0`.
        include_top: end with pooling and the `head` layer. Defaults to `True`.
        pooling: `"token"` (class token), `"avg"` (mean of the patch tokens),
            or, without the top, `None` (the normalised token sequence).
            Defaults to `"token"`.
        name: model name, the prefix of every layer name. Defaults to `"vit_tiny"`.

    Example:

    >>> model = zoo.create_model("vit_tiny", input_shape=(32, 32, 3), patch_size=4)
    """
    return build_vit(
        input_shape=input_shape,
        num_classes=num_classes,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        include_top=include_top,
        pooling=pooling,
        name=name,
    )
