"""Sequence models over integer tokens: an LSTM classifier, a Transformer
classifier with token and position embeddings, and `mini_gpt`, a causal decoder
with `generate` for sampling on any backend."""

import keras
from keras import ops

from zoo import checks
from zoo.errors import ZooError
from zoo.registry import register_model


@keras.saving.register_keras_serializable(package="zoo")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned embedding of each position.

    Sequences may be shorter than `sequence_length`, never longer.
    """

    def __init__(self, *, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length, self.vocab_size, self.embed_dim = (
            sequence_length,
            vocab_size,
            embed_dim,
        )
        self.token_embedding = keras.layers.Embedding(
            vocab_size, embed_dim, name=f"{self.name}_token"
        )
        self.position_embedding = keras.layers.Embedding(
            sequence_length, embed_dim, name=f"{self.name}_position"
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((self.sequence_length,))

    def call(self, tokens):
        # A start and a dtype keep the range traceable by torch.export and jax2onnx.
        positions = ops.arange(0, ops.shape(tokens)[-1], dtype="int32")
        return self.token_embedding(tokens) + self.position_embedding(positions)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
        }


def apply_transformer_block(x, *, num_heads, ff_dim, causal, dropout, name):
    """Post-norm Transformer encoder block (Vaswani et al.): attention and a
    feed-forward network, each with a residual connection and LayerNorm."""
    embed_dim = x.shape[-1]
    attention = keras.layers.MultiHeadAttention(
        num_heads, key_dim=embed_dim // num_heads, dropout=dropout, name=f"{name}_attention"
    )(x, x, use_causal_mask=causal)
    x = keras.layers.Add(name=f"{name}_add1")([x, attention])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    y = keras.layers.Dense(ff_dim, activation="relu", name=f"{name}_ff1")(x)
    y = keras.layers.Dense(embed_dim, name=f"{name}_ff2")(y)
    y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    x = keras.layers.Add(name=f"{name}_add2")([x, y])
    return keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)


def apply_transformer_stack(
    tokens,
    *,
    sequence_length,
    vocab_size,
    embed_dim,
    num_heads,
    ff_dim,
    num_layers,
    dropout,
    causal,
    name,
):
    """Token and position embedding followed by `num_layers` Transformer blocks."""
    x = TokenAndPositionEmbedding(
        sequence_length=sequence_length,
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        name=f"{name}_embedding",
    )(tokens)
    for i in range(num_layers):
        x = apply_transformer_block(
            x,
            num_heads=num_heads,
            ff_dim=ff_dim,
            causal=causal,
            dropout=dropout,
            name=f"{name}_block{i}",
        )
    return x


def _check_text(input_shape, *, vocab_size, name, dropout=0.0, **positive):
    checks.model_name(name)
    (sequence_length,) = checks.shape(input_shape, model=name, rank=1)
    checks.positive_int(vocab_size, name="vocab_size", model=name)
    for key, value in positive.items():
        checks.positive_int(value, name=key, model=name)
    checks.fraction(dropout, name="dropout", model=name)
    if "num_heads" in positive and positive["embed_dim"] % positive["num_heads"]:
        raise ZooError(
            f"{name} expects embed_dim divisible by num_heads. Received: "
            f"embed_dim={positive['embed_dim']}, num_heads={positive['num_heads']}"
        )
    return sequence_length


def generate(model, prompt, num_tokens, *, temperature=1.0, seed=None):
    """Extends token sequences with a causal language model, on any backend.

    Args:
        model: a `mini_gpt` (or any model mapping `(batch, length)` tokens to
            `(batch, length, vocab)` logits).
        prompt: integer tokens, `(length,)` or `(batch, length)`.
        num_tokens: how many tokens to add.
        temperature: `0` takes the most likely token; higher values sample
            more freely. Defaults to `1.0`.
        seed: an int makes sampling repeatable. Defaults to `None`.

    Returns:
        The prompt and the new tokens, as an int32 NumPy array.
    """
    tokens = ops.convert_to_tensor(prompt, dtype="int32")
    if len(tokens.shape) == 1:
        tokens = ops.expand_dims(tokens, 0)
    if tokens.shape[1] == 0:
        raise ZooError("Expected a prompt of at least one token. Received: an empty prompt")
    if temperature < 0:
        raise ZooError(f"Expected temperature >= 0. Received: temperature={temperature}")
    context = model.get_layer(f"{model.name}_embedding").sequence_length
    seed_generator = keras.random.SeedGenerator(seed)
    for _ in range(num_tokens):
        # The model always sees a full context window, the sequence padded on
        # the right: causal attention keeps the padding out of the positions
        # read, and one input shape is one compiled program per operation on
        # JAX rather than one per sequence length.
        window = tokens[:, -context:]
        last = window.shape[1] - 1
        window = ops.pad(window, [(0, 0), (0, context - window.shape[1])])
        logits = model(window, training=False)[:, last, :]
        if temperature == 0:
            next_tokens = ops.argmax(logits, axis=-1)
        else:
            next_tokens = keras.random.categorical(logits / temperature, 1, seed=seed_generator)[
                :, 0
            ]
        next_tokens = ops.expand_dims(ops.cast(next_tokens, "int32"), 1)
        tokens = ops.concatenate([tokens, next_tokens], axis=1)
    return ops.convert_to_numpy(tokens)


@register_model(
    task="classification", source="https://keras.io/examples/nlp/bidirectional_lstm_imdb/"
)
def lstm_classifier(
    *,
    input_shape=(32,),
    vocab_size=64,
    num_classes=2,
    embed_dim=32,
    units=32,
    name="lstm_classifier",
):
    """Embedding, an LSTM, and a dense layer returning logits.

    Args:
        input_shape: `(sequence_length,)` of integer tokens. Defaults to `(32,)`.
        vocab_size: tokens are in `[0, vocab_size)`. Defaults to `64`.
        num_classes: number of output logits. Defaults to `2`.
        embed_dim: token embedding width. Defaults to `32`.
        units: LSTM width. Defaults to `32`.
        name: model name, also the prefix of its layer names.
            Defaults to `"lstm_classifier"`.
    """
    length = _check_text(
        input_shape,
        vocab_size=vocab_size,
        name=name,
        num_classes=num_classes,
        embed_dim=embed_dim,
        units=units,
    )
    inputs = keras.Input(shape=(length,), dtype="int32", name=f"{name}_tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name=f"{name}_embedding")(inputs)
    x = keras.layers.LSTM(units, name=f"{name}_lstm")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model(
    task="classification",
    source="https://keras.io/examples/nlp/text_classification_with_transformer/",
    paper="Vaswani et al., Attention Is All You Need, NeurIPS 2017",
)
def transformer_classifier(
    *,
    input_shape=(32,),
    vocab_size=64,
    num_classes=2,
    embed_dim=32,
    num_heads=2,
    ff_dim=64,
    num_layers=1,
    dropout=0.0,
    name="transformer_classifier",
):
    """Token and position embedding, Transformer blocks, mean pooling, logits.

    Args:
        input_shape: `(sequence_length,)` of integer tokens. Defaults to `(32,)`.
        vocab_size: tokens are in `[0, vocab_size)`. Defaults to `64`.
        num_classes: number of output logits. Defaults to `2`.
        embed_dim: model width, divisible by `num_heads`. Defaults to `32`.
        num_heads: attention heads. Defaults to `2`.
        ff_dim: feed-forward width. Defaults to `64`.
        num_layers: Transformer blocks. Defaults to `1`.
        dropout: dropout rate. Defaults to `0.0`.
        name: model name, also the prefix of its layer names.
            Defaults to `"transformer_classifier"`.
    """
    sizes = dict(embed_dim=embed_dim, num_heads=num_heads, ff_dim=ff_dim, num_layers=num_layers)
    length = _check_text(
        input_shape,
        vocab_size=vocab_size,
        name=name,
        dropout=dropout,
        num_classes=num_classes,
        **sizes,
    )
    inputs = keras.Input(shape=(length,), dtype="int32", name=f"{name}_tokens")
    x = apply_transformer_stack(
        inputs,
        sequence_length=length,
        vocab_size=vocab_size,
        dropout=dropout,
        causal=False,
        name=name,
        **sizes,
    )
    x = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model(
    task="language_modeling",
    source="https://keras.io/examples/generative/text_generation_with_miniature_gpt/",
    paper="Radford et al., Improving Language Understanding by Generative Pre-Training, 2018",
)
def mini_gpt(
    *,
    input_shape=(64,),
    vocab_size=64,
    embed_dim=64,
    num_heads=4,
    ff_dim=128,
    num_layers=2,
    dropout=0.0,
    name="mini_gpt",
):
    """A causal Transformer decoder returning next-token logits at each position.

    Inputs may be shorter than the context length (`input_shape[0]`); see
    `generate` for sampling.

    Args:
        input_shape: `(context_length,)`. Defaults to `(64,)`.
        vocab_size: tokens are in `[0, vocab_size)`. Defaults to `64`.
        embed_dim: model width, divisible by `num_heads`. Defaults to `64`.
        num_heads: attention heads. Defaults to `4`.
        ff_dim: feed-forward width. Defaults to `128`.
        num_layers: decoder blocks. Defaults to `2`.
        dropout: dropout rate. Defaults to `0.0`.
        name: model name, also the prefix of its layer names. Defaults to `"mini_gpt"`.
    """
    sizes = dict(embed_dim=embed_dim, num_heads=num_heads, ff_dim=ff_dim, num_layers=num_layers)
    length = _check_text(input_shape, vocab_size=vocab_size, name=name, dropout=dropout, **sizes)
    inputs = keras.Input(shape=(None,), dtype="int32", name=f"{name}_tokens")
    x = apply_transformer_stack(
        inputs,
        sequence_length=length,
        vocab_size=vocab_size,
        dropout=dropout,
        causal=True,
        name=name,
        **sizes,
    )
    outputs = keras.layers.Dense(vocab_size, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)
