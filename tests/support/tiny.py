"""Tiny build arguments per registered model, shared by the harness tests and the
cross-backend worker. Every registered model must have an entry here."""

TINY_KWARGS = {
    "linear_regressor": {"input_shape": (3,)},
    "logistic_regressor": {"input_shape": (3,)},
    "mlp": {"input_shape": (6, 6, 1), "num_classes": 4, "hidden_units": (8, 8)},
    "simple_cnn": {"input_shape": (8, 8, 2), "num_classes": 3},
    "lenet5": {"input_shape": (12, 12, 1), "num_classes": 3},
}
