"""The typed configuration of a training run, and the one source of
`python -m training fit`'s flags.

Each field of `FitConfig` is an `option(...)`: its default and what it does,
and where its type alone does not say how to read it from a command line,
its flag, parser or choices. From that one place `training.fit` takes it,
`python -m training fit --the-name` sets it (`training.cli` makes one flag per
field), `config.json` records it and the class docstring documents it. Adding
an option is adding its field (and its check to `__post_init__`).

Nothing here imports keras when the module loads, so that the CLI can build
its flags before a backend is chosen: the optimizer names are read from
Keras on first use (`optimizers()`), and errors are raised as `ZooError`
(`zoo` imports keras) only once an option is wrong.
"""

import argparse
import dataclasses
import functools
import json
import re
import textwrap

from training.backends import GPU_MEMORY  # imports no keras either

# Used where neither the user nor the model chooses. Adam at 5e-3 for 30 epochs
# takes simple_cnn past 0.97 test accuracy on digits on every backend.
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 5e-3

# The `distribute=` values: data parallelism (training.distribute).
DISTRIBUTE_MODES = ("data",)
# Keras' `verbose=` values.
VERBOSITIES = ("auto", 0, 1, 2)
# The recipe's named choices (see `training.recipe`).
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
AUGMENTATIONS = ("none", "light", "randaugment")
# The fields that make the optimizer or the loss.
RECIPE_OPTIMIZER = (
    "schedule",
    "warmup_epochs",
    "min_learning_rate",
    "weight_decay",
    "clip_norm",
    "grad_accum_steps",
    "ema",
    "label_smoothing",
    "mixup",
    "cutmix",
)


@functools.cache
def optimizers() -> dict:
    """Lower-cased class name -> Keras optimizer class, e.g. `"adam"` ->
    `keras.optimizers.Adam`. Imports keras."""
    import keras

    return {
        name.lower(): cls
        for name, cls in vars(keras.optimizers).items()
        if isinstance(cls, type)
        and issubclass(cls, keras.optimizers.Optimizer)
        and cls is not keras.optimizers.Optimizer
        and name != "LossScaleOptimizer"  # wraps another optimizer
    }


def option(
    default=dataclasses.MISSING,
    *,
    help,
    default_factory=dataclasses.MISSING,
    default_text=None,
    flag=None,
    parse=None,
    choices=None,
    metavar=None,
):
    """A `FitConfig` field, with what its docstring entry and its flag are made of.

    Args:
        default: the field's default.
        help: what the option does, as a sentence fragment.
        default_factory: makes the default, for mutable ones.
        default_text: what the default means, where its value does not say
            it. Defaults to `None`.
        flag: the command-line flag. Defaults to `None`: `--` and the name,
            `-` for `_`.
        parse: reads a command-line value; for a `dict` field, one
            `(key, value)` pair of a repeatable flag. Defaults to `None`: the
            field's type (`int`, `float` or `str`, with or without `None`).
        choices: the values the command line allows, after `parse`.
            Defaults to `None`: any.
        metavar: the value's name in `--help`. Defaults to `None`: argparse's.
    """
    metadata = dict(
        help=help,
        default_text=default_text,
        flag=flag,
        parse=parse,
        choices=choices,
        metavar=metavar,
    )
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


# A `--model-arg` VALUE that starts as JSON does (a list, an object, a quoted
# string, a number) is JSON and must parse; any other is a string as typed.
_JSON_START = re.compile(r'[\[{"]|[-+]?\.?[0-9]')


def model_argument(text):
    """`"hidden_units=[512, 512]"` -> `("hidden_units", (512, 512))`: VALUE is
    JSON, or a string if it does not start as JSON does (`activation=gelu`,
    `teacher=./run/model.keras`); lists become tuples, as shapes and widths
    are tuples in the zoo."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {text!r}")
    try:
        value = json.loads(value)
    except json.JSONDecodeError as exc:
        if _JSON_START.match(value):
            raise argparse.ArgumentTypeError(
                f"expected VALUE to be JSON, received {text!r}: {exc.msg} "
                f"(character {exc.pos} of VALUE)"
            ) from None
    return key, tuple(value) if isinstance(value, list) else value


def verbosity(text):
    """`"auto"`, or Keras' verbosity as an int."""
    return text if text == "auto" else int(text)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How to train: everything `training.fit` takes besides the model and data.

    Each field is also a flag of `python -m training fit`, made from its
    `option(...)`, which the arguments below are written from.
    """

    epochs: int = option(30, help="passes over the training split")
    batch_size: int = option(
        32,
        help="samples per step; with `distribute`, the global batch, split over the replicas",
    )
    optimizer: str | None = option(
        None,
        help="a Keras optimizer's name, lower-case (`adam`, `sgd`, ...)",
        default_text="the model's recommendation (`default_optimizer()`, as GANs have), "
        f"else `{DEFAULT_OPTIMIZER}`",
    )
    learning_rate: float | None = option(
        None,
        help="the optimizer's learning rate",
        default_text=f"the model's recommendation, else `{DEFAULT_LEARNING_RATE}`",
    )
    schedule: str = option(
        "constant",
        help="the learning rate over the run: `constant`, `cosine` (decays to "
        "`min_learning_rate` by the last step) or `step` (a tenth of it after a third and "
        "again after two thirds of the epochs, as torchvision's reference recipe)",
    )
    warmup_epochs: int = option(
        0,
        help="epochs of linear warmup from near 0 to the learning rate before the schedule "
        "(per step for `constant` and `cosine`, per epoch for `step`, as timm steps it)",
    )
    min_learning_rate: float = option(
        0.0, help="the floor the `cosine` and `step` schedules decay to"
    )
    weight_decay: float = option(
        0.0,
        help="decoupled weight decay (AdamW-style, times the learning rate), with any "
        "optimizer; as in timm, biases, normalisation weights and ViT's class token and "
        "position embedding are spared; 0 is off",
    )
    label_smoothing: float = option(
        0.0, help="label smoothing of classifiers' cross-entropy, in [0, 1)"
    )
    clip_norm: float | None = option(
        None,
        help="clips the gradients' global norm to this before each update",
        default_text="no clipping",
    )
    grad_accum_steps: int = option(
        1,
        help="batches whose gradients are averaged into one update (an effective batch "
        "of `batch_size` times this)",
    )
    ema: float | None = option(
        None,
        help="keeps an exponential moving average of the weights with this decay "
        "(e.g. 0.999); validation, the test metrics and the saved model use it, as in timm",
        default_text="no average",
        metavar="DECAY",
    )
    precision: str = option(
        "float32",
        help="the dtype policy: `float32`, `mixed_bfloat16` or `mixed_float16` (float32 "
        "weights, 16-bit compute; float16 with dynamic loss scaling)",
    )
    augment: str = option(
        "none",
        help="image classifiers' training-time augmentation: `none`, `light` (a random crop "
        "of the image padded by an eighth, and a horizontal flip) or `randaugment`",
    )
    mixup: float = option(
        0.0, help="image classifiers' mixup with this alpha; 0 is off", metavar="ALPHA"
    )
    cutmix: float = option(
        0.0,
        help="image classifiers' cutmix with this alpha; 0 is off; with `mixup` too, each "
        "batch takes one of them at random, as in timm",
        metavar="ALPHA",
    )
    early_stopping: int | None = option(
        None,
        help="stops after this many epochs without a better validation loss, and keeps the "
        "best epoch's weights",
        default_text="train every epoch",
        metavar="PATIENCE",
    )
    drop_path: float = option(
        0.0,
        help="stochastic depth: the largest rate at which a residual branch is dropped, "
        "rising linearly over the blocks as in timm (ResNets, ViT, MobileNetV2)",
        metavar="RATE",
    )
    seed: int = option(0, help="seeds the split, the initial weights and the shuffling")
    validation_fraction: float = option(0.1, help="share of the data held out for validation")
    test_fraction: float = option(
        0.2,
        help="share held out for the test metrics, for data sets without an official test split",
    )
    image_size: int | None = option(
        None,
        help="the side a folder of images is resized to (see `training.load_dataset`)",
        default_text="the images' own size, which must be one for all",
    )
    output_dir: str | None = option(
        None,
        help="where to write `model.keras`, `history.json`, `metrics.json`, `config.json` "
        "and `curves.png`",
        default_text="nothing is written",
    )
    overwrite: bool = option(False, help="replace a finished run in `output_dir`")
    tensorboard: bool = option(
        False, help="also write TensorBoard logs to `output_dir/tensorboard`"
    )
    model_kwargs: dict = option(
        default_factory=dict,
        help="more arguments for the model's builder (`zoo.create_model`); on the command "
        "line one KEY=VALUE per flag, VALUE as JSON, e.g. `hidden_units=[512,512]`",
        flag="--model-arg",
        parse=model_argument,
        metavar="KEY=VALUE",
    )
    freeze_backbone: bool = option(
        False,
        help="train only the head (the model's last layer with weights), as in linear "
        "probing and the first stage of fine-tuning; frozen BatchNorm layers keep their "
        "statistics",
    )
    deterministic: bool = option(
        False,
        help="deterministic GPU kernels on every backend "
        "(`training.seeding.make_deterministic`); CPU runs repeat exactly without it",
    )
    gpu_memory: str = option(
        "grow",
        help="`grow`: TensorFlow and JAX take GPU memory as they need it, so that two runs or "
        "two backends can share a card; `all`: as they do by themselves, TensorFlow taking "
        "nearly all of it and JAX 75% when they start. torch's caching allocator takes memory "
        "as it needs it either way (`training.sharing.share_gpu_memory`)",
        metavar="{grow,all}",
    )
    verbose: str | int = option(
        "auto",
        help="Keras' verbosity: `auto`, 0 (silent), 1 (progress bar) or 2 (a line per epoch)",
        parse=verbosity,
        choices=VERBOSITIES,
    )
    distribute: str | None = option(
        None,
        help="`data` trains data-parallel (see `training.distribute`), `batch_size` being "
        "the global batch",
        default_text="one device",
        choices=DISTRIBUTE_MODES,
    )
    devices: int | None = option(
        None,
        help="with `distribute`, the replicas on this host: devices for JAX and TensorFlow, "
        "torchrun processes for PyTorch (from the command line, N > 1 starts N processes "
        "under torchrun)",
        default_text="every local device, or torchrun's `--nproc-per-node`",
    )

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _invalid(f"Expected {name} to be a positive int. Received: {name}={value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _invalid(f"Expected seed to be an int >= 0. Received: seed={self.seed!r}")
        if self.learning_rate is not None and (
            not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0
        ):
            _invalid(
                f"Expected learning_rate to be a number > 0. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        if self.optimizer is not None and self.optimizer not in optimizers():
            _invalid(
                f"Unknown optimizer {self.optimizer!r}. "
                f"Expected one of: {', '.join(sorted(optimizers()))}"
            )
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 0.5:
                _invalid(f"Expected {name} to be a number in (0, 0.5). Received: {name}={value!r}")
        if self.image_size is not None and (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or self.image_size < 1
        ):
            _invalid(
                "Expected image_size to be a positive int. "
                f"Received: image_size={self.image_size!r}"
            )
        if self.distribute not in (None, *DISTRIBUTE_MODES):
            modes = ", ".join(map(repr, DISTRIBUTE_MODES))
            _invalid(
                f"Expected distribute to be None or one of {modes}. "
                f"Received: distribute={self.distribute!r}"
            )
        if self.devices is not None and (
            isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1
        ):
            _invalid(f"Expected devices to be a positive int. Received: devices={self.devices!r}")
        if self.devices is not None and self.distribute is None:
            _invalid(
                f"Expected distribute='data' with devices. Received: devices={self.devices}, "
                "distribute=None"
            )
        self._check_recipe()
        if self.verbose not in VERBOSITIES:
            _invalid(
                f"Expected verbose to be 'auto', 0, 1 or 2. Received: verbose={self.verbose!r}"
            )

    def _check_recipe(self):
        for name, choices in (
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("augment", AUGMENTATIONS),
            ("gpu_memory", GPU_MEMORY),
        ):
            if getattr(self, name) not in choices:
                _invalid(
                    f"Expected {name} to be one of {', '.join(choices)}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )
        for name in ("warmup_epochs", "grad_accum_steps", "early_stopping"):
            value = getattr(self, name)
            least = 0 if name == "warmup_epochs" else 1
            if (value is not None or name != "early_stopping") and not _is_int(value, least):
                _invalid(f"Expected {name} to be an int >= {least}. Received: {name}={value!r}")
        ranges = {  # name: (lowest, above the highest or the highest)
            "min_learning_rate": (0, None),
            "weight_decay": (0, None),
            "mixup": (0, None),
            "label_smoothing": (0, 1),
            "drop_path": (0, 1),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not _is_number(value) or value < low or (high is not None and value >= high):
                within = f"in [{low}, {high})" if high is not None else f">= {low}"
                _invalid(f"Expected {name} to be a number {within}. Received: {name}={value!r}")
        if not _is_number(self.cutmix) or not 0 <= self.cutmix <= 1:
            # Keras' CutMix takes its beta distribution's alpha up to 1, timm's default.
            _invalid(f"Expected cutmix to be a number in [0, 1]. Received: cutmix={self.cutmix!r}")
        if self.clip_norm is not None and not (_is_number(self.clip_norm) and self.clip_norm > 0):
            _invalid(
                f"Expected clip_norm to be a number > 0. Received: clip_norm={self.clip_norm!r}"
            )
        if self.ema is not None and not (_is_number(self.ema) and 0 < self.ema < 1):
            _invalid(f"Expected ema to be a decay in (0, 1). Received: ema={self.ema!r}")
        if self.learning_rate is not None and self.min_learning_rate >= self.learning_rate:
            _invalid(
                "Expected min_learning_rate below learning_rate. Received: min_learning_rate="
                f"{self.min_learning_rate!r}, learning_rate={self.learning_rate!r}"
            )
        if self.warmup_epochs >= self.epochs:
            _invalid(
                "Expected warmup_epochs below epochs. Received: "
                f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}"
            )

    @classmethod
    def from_options(cls, **options) -> "FitConfig":
        """Like the constructor, but an unknown option is a `ZooError`."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            _invalid(
                f"Expected options from {', '.join(fields)}. Received unknown: {', '.join(unknown)}"
            )
        return cls(**options)

    def make_optimizer(self, recommended=None, steps_per_epoch=1):
        """The `keras.optimizers.Optimizer` asked for. Without a name, the
        model's `recommended` one if any (with `learning_rate`, if given),
        else Adam at 5e-3; with the recipe's schedule over `steps_per_epoch`
        batches an epoch, weight decay, clipping, accumulation and EMA
        (`training.recipe.optimizer_arguments`)."""
        from training import recipe  # imports keras

        if self.optimizer is None and recommended is not None:
            cls, arguments = type(recommended), recommended.get_config()
        else:
            cls = optimizers()[self.optimizer or DEFAULT_OPTIMIZER]
            arguments = {"learning_rate": DEFAULT_LEARNING_RATE}
        base = self.learning_rate or arguments["learning_rate"]
        arguments.update(recipe.optimizer_arguments(self, base, steps_per_epoch))
        return cls.from_config(arguments)

    def recompiles(self) -> bool:
        """Whether a compiled model is compiled again for this config: it asks
        for an optimizer, learning rate, loss or frozen backbone of its own."""
        defaults = FitConfig()
        return bool(self.optimizer or self.learning_rate or self.freeze_backbone) or any(
            getattr(self, name) != getattr(defaults, name) for name in RECIPE_OPTIMIZER
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_int(value, least):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def default(field):
    """A `FitConfig` field's default value."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _docstring(cls):
    """The class docstring with an `Args:` entry per field, from its `option`."""
    entries = []
    for field in dataclasses.fields(cls):
        meaning = field.metadata["default_text"]
        entries.append(
            f"{field.name}: {field.metadata['help']}. Defaults to `{default(field)!r}`"
            + (f": {meaning}." if meaning else ".")
        )
    wrapped = [textwrap.fill(entry, 72, subsequent_indent="    ") for entry in entries]
    return f"{cls.__doc__.rstrip()}\n\n    Args:\n" + textwrap.indent(
        "\n".join(wrapped), "        "
    )


FitConfig.__doc__ = _docstring(FitConfig)


def _invalid(message):
    from zoo.errors import ZooError  # zoo imports keras: only once an option is wrong

    raise ZooError(message)
