"""A Keras 3 model zoo: every model written once, run on TensorFlow, PyTorch and JAX.

>>> import zoo
>>> zoo.list_models("*cnn*")
['simple_cnn']
>>> model = zoo.create_model("simple_cnn", input_shape=(32, 32, 3))
"""

# Importing a family registers its models.
from zoo import (  # noqa: F401
    cnn,
    convert,
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
