"""Tiny build arguments per registered model, shared by the harness tests and the
cross-backend worker. Every registered model must have an entry here."""

TINY_KWARGS = {
    "linear_regressor": {"input_shape": (3,)},
    "logistic_regressor": {"input_shape": (3,)},
    "mlp": {"input_shape": (6, 6, 1), "num_classes": 4, "hidden_units": (8, 8)},
    "simple_cnn": {"input_shape": (8, 8, 2), "num_classes": 3},
    "lenet5": {"input_shape": (12, 12, 1), "num_classes": 3},
    "dcgan": {"input_shape": (8, 8, 1), "latent_dim": 8},
    "wgan_gp": {"input_shape": (8, 8, 1), "latent_dim": 8, "critic_steps": 2},
    "vae": {"input_shape": (6, 6, 1), "latent_dim": 3, "hidden_units": 16},
    "distiller": {"input_shape": (8, 8, 1), "num_classes": 3},
    "simclr": {"input_shape": (8, 8, 1), "num_classes": 3, "width": 8},
    "lstm_classifier": {"input_shape": (7,), "vocab_size": 11, "num_classes": 3, "units": 4},
    "transformer_classifier": {
        "input_shape": (7,),
        "vocab_size": 11,
        "num_classes": 3,
        "embed_dim": 8,
    },
    "mini_gpt": {
        "input_shape": (7,),
        "vocab_size": 11,
        "embed_dim": 8,
        "num_heads": 2,
        "ff_dim": 8,
    },
    "unet_small": {"input_shape": (8, 8, 1), "num_classes": 3, "filters": 4, "depth": 2},
    "resnet18": {"input_shape": (16, 16, 3), "num_classes": 3, "stem": "small"},
    "resnet34": {"input_shape": (16, 16, 3), "num_classes": 3, "stem": "small"},
    "resnet50": {"input_shape": (16, 16, 3), "num_classes": 3, "stem": "small"},
    # dropout 0, so that the harness's one-step loss decrease is deterministic.
    "mobilenet_v2": {"input_shape": (16, 16, 3), "num_classes": 3, "alpha": 0.35, "dropout": 0.0},
    "vit_tiny": {
        "input_shape": (16, 16, 3),
        "num_classes": 3,
        "patch_size": 4,
        "embed_dim": 16,
        "depth": 2,
        "num_heads": 2,
        "mlp_dim": 32,
    },
}

# Per registered model: arguments that must fail in one line saying what was
# expected and received, and a pattern of that line. Each case is merged into
# the model's TINY_KWARGS, so the arguments shown are the mistake.
BAD_ARGUMENTS = {
    "linear_regressor": [({"input_shape": (0,)}, "input_shape to be a tuple of positive ints")],
    "logistic_regressor": [({"input_shape": "2"}, "input_shape to be a tuple of positive ints")],
    "mlp": [
        ({"input_shape": (0,)}, "positive ints"),
        ({"num_classes": 0}, "num_classes to be a positive int"),
        ({"dropout": 1.5}, r"dropout to be a number in \[0, 1\)"),
        (
            {"hidden_units": 5},
            r"hidden_units to be a tuple of positive ints\. Received: hidden_units=5",
        ),
        ({"activation": "relux"}, "activation to be a Keras activation"),
        ({"name": "a/b"}, "Received: name='a/b'"),
    ],
    "simple_cnn": [
        ({"input_shape": (3, 3, 1)}, "at least 4"),
        ({"input_shape": (8, 8)}, "3 positive ints"),
    ],
    "lenet5": [({"input_shape": "32x32"}, "3 positive ints")],
    "dcgan": [
        ({"input_shape": (6, 6, 1)}, "divisible by 4"),
        ({"latent_dim": 0}, "latent_dim to be a positive int"),
        ({"input_shape": None}, "input_shape to be 3 positive ints"),
    ],
    "wgan_gp": [
        ({"critic_steps": 0}, "critic_steps to be a positive int"),
        ({"gp_weight": None}, "gp_weight to be a number >= 0"),
    ],
    "vae": [({"hidden_units": 1.5}, "hidden_units to be a positive int")],
    "distiller": [
        ({"alpha": 2}, r"alpha to be a number in \[0, 1\]"),
        ({"temperature": 0}, "temperature to be a positive number"),
        ({"temperature": None}, "Received: temperature=None"),
        ({"student": "vae"}, "student to be one of"),
        ({"teacher": 3}, r"teacher to be a \.keras file or one of"),
    ],
    "simclr": [
        ({"width": 0}, "width to be a positive int"),
        ({"temperature": float("nan")}, "temperature to be a positive number"),
    ],
    "lstm_classifier": [({"input_shape": (7, 1)}, "input_shape to be 1 positive int")],
    "transformer_classifier": [
        ({"embed_dim": 9}, "embed_dim divisible by num_heads"),
        ({"dropout": 5}, r"dropout to be a number in \[0, 1\)"),
    ],
    "mini_gpt": [
        ({"vocab_size": 0}, "vocab_size to be a positive int"),
        ({"dropout": None}, "dropout to be a number in"),
    ],
    "unet_small": [
        ({"input_shape": (10, 10, 1)}, "divisible by 4"),
        ({"depth": 0}, "depth to be a positive int"),
        ({"num_classes": 1.5}, "num_classes to be a positive int"),
        ({"include_top": False, "pooling": "mean"}, "pooling to be one of"),
    ],
    "resnet18": [
        ({"stem": "cifar"}, "stem to be one of"),
        ({"pooling": "mean"}, "pooling to be one of"),
        ({"stem": "imagenet"}, "at least 32"),  # a 16x16 input
        ({"include_top": None}, "include_top to be True or False"),
    ],
    "resnet34": [({"num_classes": 0}, "num_classes to be a positive int")],
    "resnet50": [({"pooling": "mean"}, "pooling to be one of")],
    "mobilenet_v2": [
        ({"pooling": "mean"}, "pooling to be one of"),
        ({"alpha": 0}, "alpha to be a positive number"),
        ({"alpha": "1.0"}, "alpha to be a positive number"),
        ({"dropout": 1.0}, "dropout to be a number in"),
        ({"num_classes": 0}, "num_classes to be a positive int"),
        ({"input_shape": (32, 32)}, "input_shape to be 3 positive ints"),
    ],
    "vit_tiny": [
        ({"input_shape": (18, 16, 3)}, r"divisible by patch_size=4\. Received: input_shape"),
        ({"embed_dim": 9}, "embed_dim divisible by num_heads"),
        ({"pooling": "max"}, "pooling to be one of"),
        ({"pooling": None}, "when include_top=True"),
        ({"depth": 0}, "depth to be a positive int"),
        ({"patch_size": 0}, "patch_size to be a positive int"),
        ({"dropout": -0.1}, "dropout to be a number in"),
    ],
}

# Models too large for the default matrix: their tests run with --run-large.
LARGE = ("resnet34", "resnet50")

# The models with a custom training step (zoo.steps).
CUSTOM_STEP_TASKS = ("generative", "distillation", "self_supervised")


def tiny_architecture(name):
    """`TINY_KWARGS[name]` without what `training.fit` takes from the data
    (input shape, classes, vocabulary), for `model_kwargs` and `--model-arg`."""
    return {
        key: value
        for key, value in TINY_KWARGS[name].items()
        if key not in ("input_shape", "num_classes", "vocab_size")
    }
