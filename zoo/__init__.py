"""A Keras 3 model zoo: every model written once, run on TensorFlow, PyTorch and JAX.

>>> import zoo
>>> zoo.list_models("*cnn*")
['simple_cnn']
>>> model = zoo.create_model("simple_cnn", input_shape=(32, 32, 3))
"""

import sys

# Importing the families (zoo/models/) registers their models.
from zoo import convert, models  # noqa: F401
from zoo.errors import ZooError
from zoo.registry import (
    TASKS,
    ModelInfo,
    create_model,
    list_models,
    model_arguments,
    model_family,
    model_info,
    model_style,
    model_task,
    register_model,
)
from zoo.saving import load_model, load_weights, save_model, save_weights

# Each family is also `zoo.<family>`, where it lived before zoo/models/:
# `from zoo import resnet`, `import zoo.text` and `from zoo.text import generate`
# keep working, and name the same module as `zoo.models.text`.
for _family in models.__all__:
    globals()[_family] = sys.modules[f"zoo.{_family}"] = getattr(models, _family)

__all__ = [
    "TASKS",
    "ModelInfo",
    "ZooError",
    "create_model",
    "list_models",
    "load_model",
    "load_weights",
    "model_arguments",
    "model_family",
    "model_info",
    "model_style",
    "model_task",
    "register_model",
    "save_model",
    "save_weights",
]
