"""The typed configuration of a training run."""

import dataclasses

import keras

from zoo import ZooError

# Lower-cased class name -> optimizer class, e.g. "adam" -> keras.optimizers.Adam.
OPTIMIZERS = {
    name.lower(): cls
    for name, cls in vars(keras.optimizers).items()
    if isinstance(cls, type)
    and issubclass(cls, keras.optimizers.Optimizer)
    and cls is not keras.optimizers.Optimizer
    and name != "LossScaleOptimizer"  # wraps another optimizer
}


# Used where neither the user nor the model chooses. Adam at 5e-3 for 30 epochs
# takes simple_cnn past 0.97 test accuracy on digits on every backend.
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 5e-3

# The `distribute=` values: data parallelism (training.distribute).
DISTRIBUTE_MODES = ("data",)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How to train: everything `training.fit` takes besides the model and data.

    Args:
        epochs: passes over the training split. Defaults to `30`.
        batch_size: samples per step. Defaults to `32`.
        optimizer: a Keras optimizer name from `OPTIMIZERS`. Defaults to `None`:
            the model's own recommendation (`default_optimizer()`, as GANs
            have), else `"adam"`.
        learning_rate: the optimizer's learning rate. Defaults to `None`: the
            model's recommendation, else `5e-3`.
        seed: seeds the split, the initial weights and the shuffling.
            Defaults to `0`.
        validation_fraction: share of the data held out for validation.
            Defaults to `0.1`.
        test_fraction: share held out for the test metrics, for data sets
            without an official test split. Defaults to `0.2`.
        image_size: the side a folder of images is resized to (see
            `training.load_dataset`). Defaults to `None`: the images' own
            size, which must be one for all.
        output_dir: where to write `model.keras`, `history.json`,
            `metrics.json`, `config.json` and `curves.png`; `None` writes
            nothing. Defaults to `None`.
        overwrite: replace a finished run in `output_dir`. Defaults to `False`.
        tensorboard: also write TensorBoard logs to `output_dir/tensorboard`.
            Defaults to `False`.
        model_kwargs: extra arguments for `zoo.create_model`. Defaults to `{}`.
        freeze_backbone: train only the head (the last layer with weights),
            as in linear probing and the first stage of fine-tuning; frozen
            BatchNorm layers keep their statistics. Defaults to `False`.
        deterministic: ask each backend for deterministic GPU kernels
            (`training.seeding.make_deterministic`); on CPU runs repeat
            exactly without it. Defaults to `False`.
        verbose: Keras' verbosity: `"auto"`, `0` (silent), `1` (progress bar)
            or `2` (a line per epoch). Defaults to `"auto"`.
        distribute: `"data"` trains data-parallel (see `training.distribute`):
            `batch_size` is then the global batch, split over the replicas.
            Defaults to `None`: one device.
        devices: with `distribute`, the replicas on this host: devices for JAX
            and TensorFlow, torchrun processes for PyTorch. Defaults to `None`:
            every local device, or torchrun's `--nproc-per-node`.
    """

    epochs: int = 30
    batch_size: int = 32
    optimizer: str | None = None
    learning_rate: float | None = None
    seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    image_size: int | None = None
    output_dir: str | None = None
    overwrite: bool = False
    tensorboard: bool = False
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    freeze_backbone: bool = False
    deterministic: bool = False
    verbose: str | int = "auto"
    distribute: str | None = None
    devices: int | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ZooError(f"Expected {name} to be a positive int. Received: {name}={value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ZooError(f"Expected seed to be an int >= 0. Received: seed={self.seed!r}")
        if self.learning_rate is not None and (
            not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0
        ):
            raise ZooError(
                f"Expected learning_rate to be a number > 0. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ZooError(
                f"Unknown optimizer {self.optimizer!r}. "
                f"Expected one of: {', '.join(sorted(OPTIMIZERS))}"
            )
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 0.5:
                raise ZooError(
                    f"Expected {name} to be a number in (0, 0.5). Received: {name}={value!r}"
                )
        if self.image_size is not None and (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or self.image_size < 1
        ):
            raise ZooError(
                "Expected image_size to be a positive int. "
                f"Received: image_size={self.image_size!r}"
            )
        if self.distribute not in (None, *DISTRIBUTE_MODES):
            modes = ", ".join(map(repr, DISTRIBUTE_MODES))
            raise ZooError(
                f"Expected distribute to be None or one of {modes}. "
                f"Received: distribute={self.distribute!r}"
            )
        if self.devices is not None and (
            isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1
        ):
            raise ZooError(
                f"Expected devices to be a positive int. Received: devices={self.devices!r}"
            )
        if self.devices is not None and self.distribute is None:
            raise ZooError(
                f"Expected distribute='data' with devices. Received: devices={self.devices}, "
                "distribute=None"
            )
        if self.verbose not in ("auto", 0, 1, 2):
            raise ZooError(
                f"Expected verbose to be 'auto', 0, 1 or 2. Received: verbose={self.verbose!r}"
            )

    @classmethod
    def from_options(cls, **options) -> "FitConfig":
        """Like the constructor, but an unknown option is a `ZooError`."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ZooError(
                f"Expected options from {', '.join(fields)}. Received unknown: {', '.join(unknown)}"
            )
        return cls(**options)

    def make_optimizer(self, recommended=None) -> keras.optimizers.Optimizer:
        """The optimizer asked for. Without a name, the model's `recommended`
        one if any (with `learning_rate`, if given), else Adam at 5e-3."""
        if self.optimizer is None and recommended is not None:
            config = recommended.get_config()
            if self.learning_rate is not None:
                config["learning_rate"] = self.learning_rate
            return type(recommended).from_config(config)
        name = self.optimizer or DEFAULT_OPTIMIZER
        return OPTIMIZERS[name](learning_rate=self.learning_rate or DEFAULT_LEARNING_RATE)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
