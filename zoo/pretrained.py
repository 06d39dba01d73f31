"""Pretrained weights by name: the peers' published files, downloaded once,
verified, converted once and cached.

>>> model = zoo.create_model("resnet50", weights="torchvision:IMAGENET1K_V2")
>>> model = zoo.create_model("vit_tiny", weights="timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
>>> model = zoo.create_model("resnet18", weights="torchvision:DEFAULT", num_classes=5)

`WEIGHTS` is the table: for each model, the files torchvision's `Weights`
enums and timm's `pretrained_cfg`s publish, with what the peer says about
them (where to fetch, hash, license, preprocessing, top-1). A name is
`"<peer>:<tag>"`; `"torchvision:DEFAULT"` and a timm model name without its
tag mean the peer's default, as they do there. Other classes than the
file's (`num_classes=5`) load every weight but the classifier, which keeps
its fresh initialisation, for fine-tuning, as timm's `create_model(...,
pretrained=True, num_classes=5)` does.

The first use downloads the file with `keras.utils.get_file` into a private
folder, checks its hash (the full sha256 where the peer publishes one;
torchvision publishes the first 8 hex digits of it in the file name, which
`torch.hub`'s `check_hash` verifies and so does this), reads it with
`zoo.convert`'s safe reader, converts it into the model and saves the result
with `zoo.save_weights` (a `.weights.h5` and its `.sha256` sidecar). Later
uses load that file and touch no network. A download that fails or does not
match its hash is deleted and is one line. Everything lives under
`cache_dir()`: `$XDG_CACHE_HOME/keras-model-zoo/weights`, else
`~/.cache/keras-model-zoo/weights`. `$ZOO_WEIGHTS_MIRROR`, a base URL,
replaces the peers' hosts (`https://download.pytorch.org`,
`https://huggingface.co`), keeping each file's path: a local mirror, or a
test's server.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import math
import os
import re
import shutil
import tempfile
import urllib.parse

import keras
import numpy as np

from zoo import convert, registry, safety, saving
from zoo.errors import ZooError

MIRROR_VARIABLE = "ZOO_WEIGHTS_MIRROR"

# torchvision's `ImageClassification` defaults and timm's IMAGENET_INCEPTION_*.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# torch.hub's HASH_REGEX: the hex digits after the last '-' of the file name.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published weights file and what its peer says about it.

    `resize_size` then a center crop of `input_size` (`crop_pct` of it) with
    `interpolation`, then `mean`/`std` on [0, 1] pixels, is the evaluation
    preprocessing the peer reports `top1` (ImageNet-1k validation accuracy,
    percent) with. `architecture` is what the file fixes of the model's
    builder arguments; `fixed_input_size` whether it fixes the image size
    too (a ViT's position embedding does).
    """

    model: str
    name: str
    url: str
    sha256: str | None
    sha256_source: str
    license: str | None
    num_classes: int
    input_size: tuple[int, int]
    resize_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    top1: float | None
    num_params: int
    recipe: str
    architecture: dict = dataclasses.field(default_factory=dict)
    fixed_input_size: bool = False
    poolings: tuple = ()  # the `pooling` arguments the file serves; () for any
    hf_hub_id: str | None = None
    default: bool = False

    @property
    def peer(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def filename(self) -> str:
        return os.path.basename(urllib.parse.urlsplit(self.url).path)

    @property
    def hash_prefix(self) -> str | None:
        """torchvision's: the sha256 prefix its file name carries."""
        match = _HASH_IN_NAME.search(self.filename) if self.peer == "torchvision" else None
        return match.group(1) if match else None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hash_prefix": self.hash_prefix}

    def preprocess(self, images):
        """The peer's evaluation preprocessing of a batch of images.

        Resizes the shorter side to `resize_size` (antialiased), crops the
        center `input_size` and normalises with `mean` and `std`, as
        torchvision's `ImageClassification` and timm's eval transforms do.

        Args:
            images: a batch in `keras.config.image_data_format()`, `uint8` in
                [0, 255] or floats in [0, 1].

        Returns:
            A float32 NumPy batch in the same format.
        """
        x = _pixels(images)
        channels_last = keras.config.image_data_format() == "channels_last"
        height, width = x.shape[1:3] if channels_last else x.shape[2:4]
        # As torchvision's resize to one int: the shorter side to resize_size.
        short, long = sorted((height, width))
        sides = (self.resize_size, int(self.resize_size * long / short))
        size = sides if height == short else sides[::-1]
        data_format = "channels_last" if channels_last else "channels_first"
        x = keras.ops.image.resize(
            x, size, interpolation=self.interpolation, antialias=True, data_format=data_format
        )
        x = keras.ops.convert_to_numpy(x)
        top, left = ((s - c) // 2 for s, c in zip(size, self.input_size, strict=True))
        crop = (slice(top, top + self.input_size[0]), slice(left, left + self.input_size[1]))
        x = x[:, crop[0], crop[1], :] if channels_last else x[:, :, crop[0], crop[1]]
        return normalize(x, self.mean, self.std)


def _pixels(images) -> np.ndarray:
    """A batch of images as float32 in [0, 1]: integers are divided by 255."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype.kind not in "uif":
        raise ZooError(
            "Expected a batch of images (rank 4, numbers). "
            f"Received: shape {images.shape}, dtype {images.dtype}"
        )
    return images.astype("float32") / (255.0 if images.dtype.kind in "ui" else 1.0)


def normalize(images, mean, std) -> np.ndarray:
    """`(x - mean) / std` per channel, the last step of `Weights.preprocess`.

    Args:
        images: a batch of RGB images in `keras.config.image_data_format()`,
            integers in [0, 255] or floats in [0, 1].
        mean: three numbers, one per channel (`Weights.mean`).
        std: three numbers (`Weights.std`).

    Returns:
        A float32 NumPy batch in the same format.
    """
    x = _pixels(images)
    channels_last = keras.config.image_data_format() == "channels_last"
    channels = x.shape[-1] if channels_last else x.shape[1]
    if channels != 3:
        raise ZooError(
            f"Expected RGB images (3 channels) to normalise with mean {tuple(mean)}. "
            f"Received: images of shape {x.shape[1:]}"
        )
    shape = (1, 1, 1, 3) if channels_last else (1, 3, 1, 1)
    return ((x - np.reshape(mean, shape)) / np.reshape(std, shape)).astype("float32")


_TORCHVISION_SHA256 = (
    "none published; torchvision's file name carries its first 8 hex digits, "
    "checked as torch.hub's check_hash does"
)
_TIMM_SHA256 = "none published by timm; the file's structure and shapes are checked"
_TORCHVISION_LICENSE = (
    None  # torchvision states none; its README: the training data's terms may apply
)
_TORCHVISION_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification"
_NEW_RECIPE = "https://github.com/pytorch/vision/issues/3995"


# What torchvision's models fix of the zoo's builder arguments.
_TORCHVISION_ARCHITECTURE = {
    "resnet18": {"stem": "imagenet"},
    "resnet34": {"stem": "imagenet"},
    "resnet50": {"stem": "imagenet"},
    "mobilenet_v2": {"alpha": 1.0},
}


def _torchvision(model, tag, url, top1, num_params, resize_size, recipe, default=False):
    """An entry of a torchvision `Weights` enum: ImageNet-1k, 224 crops,
    bilinear, ImageNet mean and std (`_COMMON_META` and `ImageClassification`)."""
    return Weights(
        model=model,
        name=f"torchvision:{tag}",
        url=url,
        sha256=None,
        sha256_source=_TORCHVISION_SHA256,
        license=_TORCHVISION_LICENSE,
        num_classes=1000,
        input_size=(224, 224),
        resize_size=resize_size,
        crop_pct=round(224 / resize_size, 4),
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        top1=top1,
        num_params=num_params,
        recipe=recipe,
        architecture=dict(_TORCHVISION_ARCHITECTURE[model]),
        default=default,
    )


# timm's vit_tiny_patch16_224: `model_args = dict(patch_size=16, embed_dim=192,
# depth=12, num_heads=3)` with mlp_ratio 4, class-token pooling.
_VIT_TINY = {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_dim": 768}


def _timm(model, tag, num_classes, top1, num_params, default=False):
    """An entry of timm's `default_cfgs` for vit_tiny_patch16_224 (its `_cfg`:
    224 input, crop_pct 0.9, bicubic, Inception mean and std, apache-2.0),
    fetched as timm does from the Hugging Face hub's `timm/` organisation."""
    hub_id = f"timm/vit_tiny_patch16_224.{tag}"
    return Weights(
        model=model,
        name=f"timm:vit_tiny_patch16_224.{tag}",
        url=f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors",
        sha256=None,
        sha256_source=_TIMM_SHA256,
        license="apache-2.0",
        num_classes=num_classes,
        input_size=(224, 224),
        resize_size=math.floor(224 / 0.9),  # timm's eval transform: floor(size / crop_pct)
        crop_pct=0.9,
        interpolation="bicubic",
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        top1=top1,
        num_params=num_params,
        recipe="https://arxiv.org/abs/2106.10270",  # How to train your ViT (AugReg)
        architecture=dict(_VIT_TINY),
        fixed_input_size=True,
        # Its `norm` and `head` are for the class token; without the top, the
        # normalised tokens (None) serve too.
        poolings=("token", None),
        hf_hub_id=hub_id,
        default=default,
    )


_PYTORCH = "https://download.pytorch.org/models"
# Copied from torchvision 0.29's `ResNet*_Weights` and `MobileNet_V2_Weights`
# (url, acc@1, num_params, resize_size, recipe) and timm 1.0's default_cfgs
# and results/results-imagenet.csv (top1).
WEIGHTS: dict[str, tuple[Weights, ...]] = {
    "resnet18": (
        _torchvision(
            "resnet18",
            "IMAGENET1K_V1",
            f"{_PYTORCH}/resnet18-f37072fd.pth",
            69.758,
            11689512,
            256,
            _TORCHVISION_RECIPE + "#resnet",
            default=True,
        ),
    ),
    "resnet34": (
        _torchvision(
            "resnet34",
            "IMAGENET1K_V1",
            f"{_PYTORCH}/resnet34-b627a593.pth",
            73.314,
            21797672,
            256,
            _TORCHVISION_RECIPE + "#resnet",
            default=True,
        ),
    ),
    "resnet50": (
        _torchvision(
            "resnet50",
            "IMAGENET1K_V1",
            f"{_PYTORCH}/resnet50-0676ba61.pth",
            76.130,
            25557032,
            256,
            _TORCHVISION_RECIPE + "#resnet",
        ),
        _torchvision(
            "resnet50",
            "IMAGENET1K_V2",
            f"{_PYTORCH}/resnet50-11ad3fa6.pth",
            80.858,
            25557032,
            232,
            _NEW_RECIPE + "#issuecomment-1013906621",
            default=True,
        ),
    ),
    # torchvision's IMAGENET1K_V1 (mobilenet_v2-b0353104.pth, 2019) is left
    # out: files that old predate torch.save's zip format (pytorch/vision#2068),
    # which is the only one zoo.convert reads.
    "mobilenet_v2": (
        _torchvision(
            "mobilenet_v2",
            "IMAGENET1K_V2",
            f"{_PYTORCH}/mobilenet_v2-7ebf99e0.pth",
            72.154,
            3504872,
            232,
            _NEW_RECIPE + "#new-recipe-with-reg-tuning",
            default=True,
        ),
    ),
    "vit_tiny": (
        _timm("vit_tiny", "augreg_in21k_ft_in1k", 1000, 75.452, 5717416, default=True),
        # Pretrained on ImageNet-21k only: 21843 classes, no ImageNet-1k top-1.
        _timm("vit_tiny", "augreg_in21k", 21843, None, 9740115),
    ),
}


def available(model) -> tuple[Weights, ...]:
    """The weights published for a registered model (possibly none)."""
    registry.model_family(model)  # an unknown model is one line
    return WEIGHTS.get(model, ())


def get(model, weights) -> Weights:
    """The table entry `weights` names for `model`; `"<peer>:DEFAULT"` (and
    timm's model name without a tag) is the peer's default."""
    if not isinstance(weights, str):
        raise ZooError(
            f"Expected weights to be a name such as 'torchvision:DEFAULT'. Received: {weights!r}"
        )
    entries = available(model)
    if not entries:
        with_weights = ", ".join(sorted(WEIGHTS))
        raise ZooError(
            f"No pretrained weights for {model!r}. Expected one of the models that "
            f"have some: {with_weights}. Received: weights={weights!r}"
        )
    for entry in entries:
        peer, _, tag = entry.name.partition(":")
        aliases = {entry.name}
        if entry.default:
            aliases |= {f"{peer}:DEFAULT", f"{peer}:{tag.split('.')[0]}"}
        if weights in aliases:
            return entry
    names = ", ".join(entry.name for entry in entries)
    raise ZooError(
        f"Unknown weights for {model}. Expected one of: {names}. Received: weights={weights!r}"
    )


def describe(model) -> dict[str, dict]:
    """The weights of `model` with their metadata, as `model_info` lists them."""
    return {entry.name: entry.to_dict() for entry in available(model)}


def create(model, weights, overrides) -> keras.Model:
    """Builds `model` with `overrides` and loads `weights` into it; see
    `zoo.create_model`."""
    entry = get(model, weights)
    kwargs = _build_arguments(entry, overrides)
    if not os.path.exists(converted_path(entry)):
        download(entry)  # first, so that a failed download builds no model
    net = registry.create_model(model, **kwargs)
    if _new_head(entry, kwargs):
        return _load_backbone(net, entry, kwargs)
    return load(net, entry, kwargs)


def _argument(entry, kwargs, key):
    """The value of builder argument `key` a model built with `kwargs`
    gets: given, else the builder's default (`include_top` defaults to
    `True` for a builder without one: it always has its head)."""
    fallback = True if key == "include_top" else None
    return kwargs.get(key, registry.model_arguments(entry.model).get(key, fallback))


def _new_head(entry, kwargs) -> bool:
    """Whether a model built with `kwargs` has a classifier of other classes
    than `entry`'s, which keeps its fresh initialisation."""
    num_classes = kwargs.get("num_classes", entry.num_classes)
    return bool(_argument(entry, kwargs, "include_top")) and num_classes != entry.num_classes


def _load_backbone(net, entry, kwargs) -> keras.Model:
    """Loads every weight of `entry` into `net` but the classifier's, as
    timm's `create_model(..., pretrained=True, num_classes=N)` does: `net`'s
    layers take those of the headless model loaded with `entry` (same names,
    BatchNorm statistics included), and its head keeps its initialisation."""
    headless = {**kwargs, "include_top": False}
    backbone = load(registry.create_model(entry.model, **headless), entry, headless)
    for layer in backbone.layers:
        if layer.weights:
            net.get_layer(layer.name).set_weights(layer.get_weights())
    return net


def _build_arguments(entry, overrides) -> dict:
    """`overrides` with what the file fixes filled in; anything that
    contradicts it is one line. Other classes than the file's are a new
    head on its features (see `_new_head`)."""
    kwargs = {**entry.architecture, **overrides}
    if _argument(entry, kwargs, "include_top"):
        kwargs.setdefault("num_classes", entry.num_classes)
    for key, value in entry.architecture.items():
        received = _argument(entry, kwargs, key)
        if received != value:
            raise ZooError(
                f"{entry.model} weights {entry.name!r} need {key}={value!r}. "
                f"Received: {key}={received!r}"
            )
    pooling = _argument(entry, kwargs, "pooling")
    if entry.poolings and pooling not in entry.poolings:
        raise ZooError(
            f"{entry.model} weights {entry.name!r} need pooling to be one of "
            f"{entry.poolings}. Received: pooling={pooling!r}"
        )
    _check_input_shape(entry, _argument(entry, kwargs, "input_shape"))
    return kwargs


def _check_input_shape(entry, input_shape):
    channels_last = keras.config.image_data_format() == "channels_last"
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3:
        return  # the builder's own check says what it expects
    channels, size = (shape[2], shape[:2]) if channels_last else (shape[0], shape[1:])
    if channels != 3 or (entry.fixed_input_size and size != entry.input_size):
        expected = (*entry.input_size, 3) if channels_last else (3, *entry.input_size)
        what = f"input_shape={expected}" if entry.fixed_input_size else "3 channels (RGB)"
        raise ZooError(
            f"{entry.model} weights {entry.name!r} need {what}. Received: input_shape={shape}"
        )


def cache_dir() -> str:
    """Where downloads and converted weights are kept."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "keras-model-zoo", "weights")


def _folder(entry) -> str:
    peer, _, tag = entry.name.partition(":")
    return os.path.join(cache_dir(), entry.model, f"{peer}-{tag}")


def converted_path(entry) -> str:
    """The cached `.weights.h5` of `entry`, converted for its model with the head."""
    return os.path.join(_folder(entry), f"{entry.model}.weights.h5")


def load(model, entry, kwargs) -> keras.Model:
    """Loads `entry`'s weights into `model`, built with `kwargs` (as
    `_build_arguments` allows), downloading and converting them the first
    time."""
    path = converted_path(entry)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _locked(path):
        if not os.path.exists(path):
            return _convert(model, entry, kwargs, path)
    try:
        return saving.load_weights(model, path)
    except ZooError as exc:
        raise ZooError(
            f"Refusing the cached {entry.name} weights ({exc}); delete {_folder(entry)!r} "
            "to download and convert them again"
        ) from None


def _convert(model, entry, kwargs, path):
    """Converts the download into the model with its head, which the cache
    holds (a headless model loads that file too: Keras matches a weights
    file's layers in order, and the head comes last), and caches it."""
    source = download(entry)
    full = model
    defaults = registry.model_arguments(entry.model)
    if not _argument(entry, kwargs, "include_top"):
        head = {"include_top": True, "num_classes": entry.num_classes}
        if "pooling" in defaults:
            head["pooling"] = defaults["pooling"]
        full = registry.create_model(entry.model, **{**kwargs, **head})
    getattr(convert, f"from_{entry.peer}")(full, source)
    saving.save_weights(full, path)
    return model if full is model else saving.load_weights(model, path)


def download(entry) -> str:
    """The verified file of `entry`, downloaded into the cache the first time.

    Returns:
        Its path. A file already there is hashed and checked again.
    """
    folder = _folder(entry)
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, entry.filename)
    with _locked(target):
        if os.path.exists(target):
            _verify(entry, target, entry.url)
            return target
        url = mirrored(entry.url)
        staging = tempfile.mkdtemp(dir=folder, prefix=".download-")
        try:
            try:
                fetched = keras.utils.get_file(
                    entry.filename,
                    url,
                    file_hash=entry.sha256,
                    cache_dir=staging,
                    cache_subdir="",
                )
            except Exception as exc:  # urllib's and get_file's errors, all one line
                raise ZooError(
                    f"Could not download {entry.name} weights from {url}: "
                    f"{safety.first_line(exc)}. Offline, place {entry.filename} in {folder!r}"
                ) from None
            _verify(entry, fetched, url)
            os.replace(fetched, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def mirrored(url) -> str:
    """`url` on the mirror `$ZOO_WEIGHTS_MIRROR` names, if it names one."""
    mirror = os.environ.get(MIRROR_VARIABLE)
    if not mirror:
        return url
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https"):
        raise ZooError(
            f"Expected ${MIRROR_VARIABLE} to be an http(s) base URL. Received: {mirror!r}"
        )
    return mirror.rstrip("/") + urllib.parse.urlsplit(url).path


def _verify(entry, path, url):
    """Deletes `path` and raises unless its sha256 matches what the peer publishes."""
    size = os.path.getsize(path)
    if size > saving.MAX_FILE_BYTES:
        os.remove(path)
        raise ZooError(
            f"Refusing {entry.name} weights from {url}: {size} bytes, more than "
            f"{saving.MAX_FILE_BYTES}; the download was deleted"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if entry.sha256:
        expected, what = entry.sha256, "the sha256 the peer publishes"
    else:
        expected, what = entry.hash_prefix, f"the hash prefix in {entry.peer}'s file name"
    if expected and not actual.startswith(expected):
        os.remove(path)
        raise ZooError(
            f"Refusing {entry.name} weights from {url}: expected sha256 {expected}..., "
            f"{what}. Received: sha256 {actual}; the download was deleted"
        )


@contextlib.contextmanager
def _locked(path):
    """Holds an exclusive lock beside `path`, so that processes (and threads)
    sharing the cache download and convert each file once."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def markdown_table() -> str:
    """The README's table of pretrained weights, built from `WEIGHTS`."""
    rows = [
        "| Model | `weights=` | File | sha256 | License | Input (crop) | Interpolation "
        "| Mean / std | Top-1 (peer) |",
        "|---|---|---|---|---|---|---|---|---:|",
    ]
    for model in sorted(WEIGHTS):
        for entry in WEIGHTS[model]:
            name = f"`{entry.name}`" + (" (default)" if entry.default else "")
            where = f"[{entry.hf_hub_id or entry.filename}]({entry.url})"
            sha = f"prefix `{entry.hash_prefix}`" if entry.hash_prefix else "none published"
            if entry.sha256:
                sha = f"`{entry.sha256}`"
            mean = "ImageNet" if entry.mean == IMAGENET_MEAN else "Inception (0.5)"
            top1 = "–" if entry.top1 is None else f"{entry.top1:.3f}"
            rows.append(
                f"| `{model}` | {name} | {where} | {sha} | {entry.license or 'not stated'} | "
                f"{entry.input_size[0]} of {entry.resize_size} ({entry.crop_pct:g}) | "
                f"{entry.interpolation} | {mean} | {top1} |"
            )
    return "\n".join(rows)
