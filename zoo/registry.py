"""The model registry: the only list of models in the zoo.

Family files register their entrypoints with `@register_model`; importing `zoo`
imports every family, so every model is registered.
"""

import contextlib
import dataclasses
import difflib
import fnmatch
import inspect
import math
from collections.abc import Callable, Iterable

import keras
from keras.src.backend.common import global_state  # Keras' list of deferred variables
from keras.src.models.functional import Functional  # no public alias in Keras 3

from zoo.errors import ZooError
from zoo.flops import count_flops

TASKS = (
    "classification",
    "binary_classification",
    "regression",
    # Next-token prediction: logits at every position of a token sequence.
    "language_modeling",
    # Per-pixel class logits.
    "segmentation",
    # Subclassed models with a custom training step (zoo.steps):
    "generative",
    "distillation",
    "self_supervised",
)


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Callable[..., keras.Model]
    family: str
    task: str
    source: str
    paper: str | None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model, as built with its defaults.

    `parameters` counts trainable weights, as torch and timm count them;
    `non_trainable_parameters` counts the rest (BatchNorm statistics, frozen
    sub-models), which torch keeps as buffers. `flops` is one forward pass of
    one sample at `input_shape` (twice the multiply-adds, see `zoo.flops`), or
    `None` where it is not known before the model runs. `weights` maps the
    names of its pretrained weights to what their peer publishes about them
    (`zoo.pretrained.Weights`).
    """

    name: str
    family: str
    style: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    parameters: int
    non_trainable_parameters: int
    flops: int | None
    source: str
    paper: str | None
    description: str
    defaults: dict
    weights: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


_REGISTRY: dict[str, _Entry] = {}


def register_model(*, task: str, source: str, paper: str | None = None):
    """Registers a model builder under its function name.

    Args:
        task: one of `TASKS`; decides the loss and metrics `training` uses.
        source: where the architecture comes from (a URL or a citation).
        paper: the paper that introduced it, if any. Defaults to `None`.

    Example:

    ```python
    @register_model(task="regression", source="https://keras.io")
    def tiny_regressor(input_shape=(3,), name="tiny_regressor"):
        ...
    ```
    """
    if task not in TASKS:
        raise ZooError(f"Expected task to be one of {TASKS}. Received: task={task!r}")

    def decorator(builder):
        name = builder.__name__
        if name in _REGISTRY:
            raise ZooError(
                f"Model {name!r} is already registered by "
                f"{_REGISTRY[name].family}; names must be unique. "
                f"Received a second registration from {builder.__module__}"
            )
        family = builder.__module__.rpartition(".")[2]
        _REGISTRY[name] = _Entry(builder, family, task, source, paper)
        return builder

    return decorator


def list_models(pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()) -> list[str]:
    """Lists registered model names matching fnmatch wildcards, sorted.

    Args:
        pattern: one pattern or several; a name matching any is kept.
            Defaults to `"*"`.
        exclude: patterns whose matches are dropped. Defaults to `()`.

    Example:

    >>> list_models("*cnn*")
    ['simple_cnn']
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    return sorted(
        name
        for name in _REGISTRY
        if any(fnmatch.fnmatch(name, p) for p in patterns)
        and not any(fnmatch.fnmatch(name, e) for e in excludes)
    )


def create_model(name: str, /, *, weights: str | None = None, **overrides) -> keras.Model:
    """Builds a registered model.

    Args:
        name: a name from `list_models()`.
        weights: pretrained weights to load, by name, such as
            `"torchvision:IMAGENET1K_V2"`; `model_info(name).weights` lists
            them (see `zoo.pretrained`). Defaults to `None`: random weights.
        **overrides: arguments of that model's builder, such as `input_shape`
            and `num_classes`; see `model_info(name).defaults`.

    Example:

    >>> model = create_model("mlp", input_shape=(64,), hidden_units=(32, 32))
    >>> model = create_model("resnet50", weights="torchvision:IMAGENET1K_V2")
    """
    entry = _entry(name)
    accepted = inspect.signature(entry.builder).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ZooError(
            f"Model {name!r} accepts arguments {sorted(accepted)}. "
            f"Received unknown: {', '.join(unknown)}"
        )
    if weights is not None:
        from zoo import pretrained  # which builds models through this registry

        return pretrained.create(name, weights, overrides)
    return entry.builder(**overrides)


def model_info(name: str) -> ModelInfo:
    """Returns the metadata of a registered model, building it with its defaults."""
    from zoo import pretrained

    entry = _entry(name)
    with _without_weight_values():
        model = entry.builder()
    defaults = model_arguments(name)
    doc = inspect.getdoc(entry.builder) or ""
    return ModelInfo(
        name=name,
        family=entry.family,
        style=model_style(model),
        task=entry.task,
        input_shape=tuple(defaults["input_shape"]),
        num_classes=defaults.get("num_classes"),
        parameters=_count(model.trainable_weights),
        non_trainable_parameters=_count(model.non_trainable_weights),
        flops=count_flops(model),
        source=entry.source,
        paper=entry.paper,
        description=doc.split("\n", 1)[0],
        defaults=defaults,
        weights=pretrained.describe(name),
    )


@contextlib.contextmanager
def _without_weight_values():
    """Builds models whose variables have shapes but no values: metadata needs
    only shapes, and initialising a ResNet-50's weights takes seconds (tens
    on JAX, which compiles each initializer).

    Keras defers a variable's initialisation inside a `StatelessScope` and
    lists it for the next scope to initialise; the variables made here are
    taken off that list, so that they are never initialised and do not
    outlive the model.
    """
    deferred = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    already = len(deferred)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        del deferred[already:]


def _count(weights):
    return sum(math.prod(w.shape) for w in weights)


def model_arguments(name: str) -> dict:
    """The builder's arguments and their defaults, without building the model."""
    return {
        key: param.default
        for key, param in inspect.signature(_entry(name).builder).parameters.items()
    }


def model_family(name: str) -> str:
    """Returns the family (the file under `zoo/models/`) of a registered model,
    without building it."""
    return _entry(name).family


def model_task(name: str) -> str:
    """Returns the task of a registered model without building it."""
    return _entry(name).task


def model_style(model: keras.Model) -> str:
    """Returns `"sequential"`, `"functional"` or `"subclassed"`."""
    if isinstance(model, keras.Sequential):
        return "sequential"
    if isinstance(model, Functional):
        return "functional"
    return "subclassed"


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ZooError(
            f"Unknown model {name!r}.{hint} Expected one of: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]
