"""Pretrained weights by name, offline. A server on 127.0.0.1, started here,
serves files the tests make (random weights written as the peers write them)
at the paths of the table's URLs, through $ZOO_WEIGHTS_MIRROR; the cache is
the test's tmp dir ($XDG_CACHE_HOME)."""

import dataclasses
import hashlib
import http.server
import json
import pathlib
import re
import shutil
import threading
import time
import urllib.parse

import keras
import numpy as np
import pytest
from audit import audited
from tiny import TINY_KWARGS

import zoo
from training import cli
from zoo import pretrained

README = (pathlib.Path(__file__).parents[2] / "README.md").read_text()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if server.mode == "slow":
            time.sleep(0.5)  # long enough for a second download to start meanwhile
        # "interrupt": the connection drops half-way, after the full length was promised.
        self.wfile.write(data[: len(data) // 2] if server.mode == "interrupt" else data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A file server on 127.0.0.1 as the mirror, and an empty cache."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.mode = {}, [], "normal"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv(pretrained.MIRROR_VARIABLE, f"http://127.0.0.1:{httpd.server_port}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def publish(server, model, peer, tmp_path, tag="TEST", **changes):
    """Writes `model`'s weights as `peer` publishes them, serves the file and
    lists it in the table as `"<peer>:<tag>"` for the model's builder."""
    name = model.name
    base = next(e for e in pretrained.WEIGHTS[name] if e.peer == peer)
    path = tmp_path / ("w.pth" if peer == "torchvision" else "w.safetensors")
    getattr(zoo.convert, f"to_{peer}")(model, path)
    data = path.read_bytes()
    if peer == "torchvision":  # torchvision's file name carries the hash's first 8 digits
        prefix = hashlib.sha256(data).hexdigest()[:8]
        url = f"https://download.pytorch.org/models/{name}_tiny-{prefix}.pth"
        full_name = f"torchvision:{tag}"
    else:
        url = f"https://huggingface.co/timm/{name}_tiny.{tag}/resolve/main/model.safetensors"
        full_name = f"timm:{name}_tiny.{tag}"
    architecture = {
        k: v for k, v in TINY_KWARGS[name].items() if k not in ("input_shape", "num_classes")
    }
    entry = dataclasses.replace(
        base,
        name=full_name,
        url=url,
        num_classes=TINY_KWARGS[name]["num_classes"],
        input_size=TINY_KWARGS[name]["input_shape"][:2],
        architecture=architecture,
        **changes,
    )
    server.files[urllib.parse.urlsplit(url).path] = data
    pretrained.WEIGHTS[name] = (entry, *pretrained.WEIGHTS[name])
    return entry


@pytest.fixture(scope="module")
def sources():
    """A tiny model per peer, whose weights the tests publish: torchvision's
    ResNet-18 and timm's ViT, built once (JAX compiles their initialisers)."""
    keras.utils.set_random_seed(0)
    return {name: zoo.create_model(name, **TINY_KWARGS[name]) for name in ("resnet18", "vit_tiny")}


@pytest.fixture
def table(monkeypatch):
    """The weights table, restored after the test."""
    monkeypatch.setattr(pretrained, "WEIGHTS", dict(pretrained.WEIGHTS))


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def assert_same_weights(model, source):
    for layer in model.layers:
        other = source.get_layer(layer.name.replace(model.name, source.name, 1))
        for a, b in zip(weights_of(layer), weights_of(other), strict=True):
            np.testing.assert_array_equal(a, b)


def test_torchvision_weights_download_verify_convert_and_work_offline(
    server, table, sources, tmp_path
):
    source = sources["resnet18"]
    entry = publish(server, source, "torchvision", tmp_path)
    kwargs = {"weights": "torchvision:TEST", "input_shape": TINY_KWARGS["resnet18"]["input_shape"]}
    model = zoo.create_model("resnet18", **kwargs)
    assert_same_weights(model, source)
    assert len(server.requests) == 1
    cached = pathlib.Path(pretrained.converted_path(entry))
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    assert (cached.parent / f"{cached.name}.sha256").read_text() == f"{digest}  {cached.name}\n"
    assert (cached.parent / entry.filename).exists()  # the verified download stays
    server.files.clear()  # offline from here: the cache serves, nothing is fetched
    assert_same_weights(zoo.create_model("resnet18", **kwargs), source)
    assert_same_weights(zoo.create_model("resnet18", **kwargs, include_top=False), source)
    assert len(server.requests) == 1


def test_timm_weights_load_from_the_hub_layout(server, table, sources, tmp_path):
    """timm publishes no hash: the file is read by the safe reader and its
    every key and shape checked. A headless model converts it first here: the
    cache holds the model with its head, which a model with one then loads."""
    source = sources["vit_tiny"]
    publish(server, source, "timm", tmp_path, tag="test")
    shape = TINY_KWARGS["vit_tiny"]["input_shape"]
    headless = zoo.create_model(
        "vit_tiny", weights="timm:vit_tiny_tiny", input_shape=shape, include_top=False
    )
    model = zoo.create_model("vit_tiny", weights="timm:vit_tiny_tiny.test", input_shape=shape)
    assert server.requests == ["/timm/vit_tiny_tiny.test/resolve/main/model.safetensors"]
    assert_same_weights(model, source)
    assert_same_weights(headless, source)


def test_a_download_that_does_not_match_its_hash_is_deleted(server, tmp_path):
    """The table's own torchvision file, served with other bytes."""
    entry = pretrained.get("mobilenet_v2", "torchvision:DEFAULT")
    assert entry.url == "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth"
    server.files["/models/mobilenet_v2-7ebf99e0.pth"] = b"not the published file"
    match = (
        r"^Refusing torchvision:IMAGENET1K_V2 weights from http://127\.0\.0\.1:\d+/models/"
        r"mobilenet_v2-7ebf99e0\.pth: expected sha256 7ebf99e0\.\.\., the hash prefix in "
        r"torchvision's file name\. Received: sha256 \w{64}; the download was deleted$"
    )
    with pytest.raises(zoo.ZooError, match=match):
        pretrained.download(entry)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_an_interrupted_download_is_one_line_and_leaves_nothing(server, table, sources, tmp_path):
    entry = publish(server, sources["resnet18"], "torchvision", tmp_path)
    server.mode = "interrupt"
    with pytest.raises(zoo.ZooError, match="^Could not download torchvision:TEST weights") as info:
        zoo.create_model("resnet18", weights="torchvision:TEST", input_shape=(16, 16, 3))
    assert "\n" not in str(info.value) and "retrieval incomplete" in str(info.value)
    folder = pathlib.Path(pretrained.converted_path(entry)).parent
    assert sorted(p.name for p in folder.iterdir()) == [f"{entry.filename}.lock"]
    server.mode = "normal"  # and the next try downloads it whole
    assert (
        pathlib.Path(pretrained.download(entry)).read_bytes()
        == server.files[urllib.parse.urlsplit(entry.url).path]
    )


def test_two_concurrent_downloads_of_one_file_fetch_it_once(server, table, sources, tmp_path):
    entry = publish(server, sources["resnet18"], "torchvision", tmp_path)
    server.mode = "slow"
    paths, errors = [], []

    def fetch():
        try:
            paths.append(pretrained.download(entry))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(paths) == 2 and paths[0] == paths[1]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (
            "resnet50",
            {"weights": "torchvision:IMAGENET1K_V3"},
            r"Unknown weights for resnet50\. Expected one of: torchvision:IMAGENET1K_V1, "
            r"torchvision:IMAGENET1K_V2\. Received: weights='torchvision:IMAGENET1K_V3'",
        ),
        ("mlp", {"weights": "torchvision:DEFAULT"}, "No pretrained weights for 'mlp'"),
        (
            "vit_tiny",
            {"weights": "timm:vit_tiny_patch16_224", "input_shape": (32, 32, 3)},
            r"need input_shape=\(224, 224, 3\)\. Received: input_shape=\(32, 32, 3\)$",
        ),
        (
            "mobilenet_v2",
            {"weights": "torchvision:IMAGENET1K_V2", "input_shape": (96, 96, 1)},
            r"need 3 channels \(RGB\)\. Received: input_shape=\(96, 96, 1\)$",
        ),
        (
            "vit_tiny",
            {"weights": "timm:vit_tiny_patch16_224.augreg_in21k", "patch_size": 8},
            r"need patch_size=16\. Received: patch_size=8$",
        ),
        (
            "resnet18",
            {"weights": "torchvision:DEFAULT", "stem": "small"},
            r"need stem='imagenet'\. Received: stem='small'$",
        ),
        (
            "vit_tiny",
            {"weights": "timm:vit_tiny_patch16_224", "pooling": "avg"},
            r"need pooling to be one of \('token', None\)\. Received: pooling='avg'$",
        ),
    ],
    ids=[
        "unknown",
        "no_weights",
        "fixed_size",
        "channels",
        "patch_size",
        "stem",
        "pooling",
    ],
)
def test_weights_that_do_not_fit_are_one_line_before_any_download(tmp_path, model, kwargs, message):
    with audited(tmp_path) as events, pytest.raises(zoo.ZooError, match=message) as info:
        zoo.create_model(model, **kwargs)
    assert "\n" not in str(info.value) and not events


@pytest.mark.parametrize(
    "model, peer, head", [("resnet18", "torchvision", "fc"), ("vit_tiny", "timm", "head")]
)
def test_other_classes_load_every_weight_but_the_head(
    server, table, sources, tmp_path, model, peer, head
):
    """As timm's `create_model(name, pretrained=True, num_classes=5)`: the
    backbone is the headless model loaded with the same weights, and the new
    head keeps its fresh initialisation."""
    entry = publish(server, sources[model], peer, tmp_path, tag="test")
    kwargs = {"weights": entry.name, "input_shape": TINY_KWARGS[model]["input_shape"]}
    net = zoo.create_model(model, **kwargs, num_classes=5)
    backbone = zoo.create_model(model, **kwargs, include_top=False)
    with_weights = {layer.name for layer in net.layers if layer.weights}
    assert with_weights - {layer.name for layer in backbone.layers} == {f"{model}_{head}"}
    assert_same_weights(backbone, net)
    assert net.output_shape == (None, 5) and len(server.requests) == 1


def test_fit_fine_tunes_a_new_head_and_predict_feeds_what_fit_fed(
    server, table, sources, tmp_path, capsys
):
    """`--model-arg weights=...` reaches create_model with the data's classes
    (two here, the file's three): a new head on the file's features. fit
    normalises the images with the weights' mean and std and records them;
    evaluate and predict read them and normalise theirs, saying so."""
    from images import image_folder

    entry = publish(server, sources["resnet18"], "torchvision", tmp_path)
    folder = image_folder(tmp_path / "photos", per_class=4, size=16)
    shutil.rmtree(folder / "owl")
    run = tmp_path / "run"
    # One batch of the five training images: JAX and TensorFlow compile one step.
    argv = ["fit", "--model", "resnet18", "--dataset", str(folder), "--batch-size", "5"]
    argv += ["--epochs", "1", "--verbose", "0", "--output-dir", str(run)]
    assert cli.main([*argv, "--model-arg", "weights=torchvision:TEST"]) == 0
    model_path = str(run / "model.keras")
    model = zoo.load_model(model_path)
    assert model.output_shape == (None, 2)
    config = json.loads((run / "config.json").read_text())
    assert config["model_kwargs"] == {"weights": "torchvision:TEST"}
    normalization = {"weights": "torchvision:TEST", "mean": [*entry.mean], "std": [*entry.std]}
    assert config["normalization"] == normalization
    note = (
        f"Normalising inputs as the run in {run / 'config.json'} did for its pretrained weights "
        "torchvision:TEST: (x - mean) / std on [0, 1] pixels (integers divided by 255), "
        f"mean {entry.mean}, std {entry.std}\n"
    )
    capsys.readouterr()
    # The test split scores as it did in fit only if it is fed as fit fed it.
    assert cli.main(["evaluate", "--model-path", model_path]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == pytest.approx(json.loads((run / "metrics.json").read_text()))
    assert err.endswith(note) and err.count("\n") == 2
    raw = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype="uint8")
    if keras.config.image_data_format() == "channels_first":
        raw = raw.transpose(0, 3, 1, 2)
    np.save(tmp_path / "images.npy", raw)
    assert (
        cli.main(["predict", "--model-path", model_path, "--input", str(tmp_path / "images.npy")])
        == 0
    )
    out, err = capsys.readouterr()
    assert err == note
    expected = model.predict(pretrained.normalize(raw, entry.mean, entry.std), verbose=0)
    np.testing.assert_allclose(json.loads(out)["predictions"], expected, rtol=1e-5, atol=1e-6)


def test_fit_refuses_weights_for_images_of_other_channels(tmp_path, capsys):
    """digits are grayscale: one line before anything is downloaded or the
    output dir exists."""
    output = tmp_path / "run"
    argv = ["fit", "--model", "mobilenet_v2", "--output-dir", str(output)]
    assert cli.main([*argv, "--model-arg", "weights=torchvision:DEFAULT"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "error: mobilenet_v2 weights 'torchvision:IMAGENET1K_V2' need 3 channels (RGB). "
        "Received: input_shape=(8, 8, 1)\n"
    )
    assert not output.exists()


def test_model_info_lists_the_weights_with_their_metadata():
    info = pretrained.describe("resnet50")
    assert list(info) == ["torchvision:IMAGENET1K_V1", "torchvision:IMAGENET1K_V2"]
    v2 = info["torchvision:IMAGENET1K_V2"]
    assert v2["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert (v2["hash_prefix"], v2["top1"], v2["resize_size"], v2["default"]) == (
        "11ad3fa6",
        80.858,
        232,
        True,
    )
    assert zoo.model_info("linear_regressor").weights == {}


@pytest.mark.parametrize("model", sorted(pretrained.WEIGHTS))
def test_each_file_fits_the_model_its_entry_builds(model):
    """The parameter count the peer reports for each file equals the zoo
    model's built with the entry's arguments (shapes only, no values)."""
    from zoo.registry import _without_weight_values

    for entry in pretrained.WEIGHTS[model]:
        kwargs = pretrained._build_arguments(entry, {})
        with _without_weight_values():
            net = zoo.create_model(model, **kwargs)
        assert sum(np.prod(w.shape) for w in net.trainable_weights) == entry.num_params


def test_preprocessing_resizes_crops_and_normalises_as_the_peer():
    entry = pretrained.get("vit_tiny", "timm:vit_tiny_patch16_224")
    images = np.full((2, 240, 320, 3), 255, "uint8")  # shorter side 240 -> 248, crop 224
    x = entry.preprocess(images)
    assert x.shape == (2, 224, 224, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0, atol=1e-5)  # (1 - 0.5) / 0.5


def test_readme_weights_table_is_generated_from_the_table():
    table = re.search(r"<!-- weights:start -->\n(.*?)\n<!-- weights:end -->", README, re.S)
    assert table, "README lacks the weights:start/weights:end markers"
    assert table.group(1) == pretrained.markdown_table(), (
        "README weights table is stale: regenerate it with zoo.pretrained.markdown_table()"
    )
