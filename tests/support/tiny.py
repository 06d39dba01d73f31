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
