"""Every patch of a Keras internal (`zoo.patches.KerasPatch`) on the backend
under test: written against the source of the installed Keras, installed only
for the length of a block, off (and said so once) on other Keras versions; and
importing `zoo` patches nothing."""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import types

import keras
import pytest

from zoo import patches

ROOT = pathlib.Path(__file__).parent.parent
WORKER = ROOT / "tests" / "support" / "import_worker.py"
FRAMEWORKS = {"tensorflow", "torch", "jax", "jaxlib"}


def _patch_modules():
    """Every module under zoo/ and training/ that makes a `KerasPatch`."""
    for package in ("zoo", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != ROOT / "zoo" / "patches.py" and "KerasPatch(" in path.read_text():
                yield ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imported(module):
    """Imports `module`; `False` where it belongs to another backend's framework."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in FRAMEWORKS:
            return False
        raise
    return True


PATCH_MODULES = [module for module in _patch_modules() if _imported(module)]
PATCHES = patches.registered()
WRITTEN_FOR = [(patch, path) for patch in PATCHES for path in patch.written_for]


@pytest.mark.parametrize(
    "patch, path", WRITTEN_FOR, ids=[path.rpartition("src.")[2] for _, path in WRITTEN_FOR]
)
def test_keras_source_is_what_the_patch_was_written_for(patch, path):
    assert patches.source_hash(path) == patch.written_for[path], (
        f"Keras {keras.version()} changed {path}, which {patch.description} replaces or "
        "relies on: read the new source, check the patch against it, then record "
        f"zoo.patches.source_hash({path!r})"
    )


def test_pyproject_bounds_keras_to_the_versions_the_patches_are_written_for():
    low, high = (".".join(map(str, release)) for release in patches.KERAS_VERSIONS)
    assert f'"keras>={low},<{high}"' in (ROOT / "pyproject.toml").read_text()
    assert patches.KERAS_VERSIONS[0] <= patches._release(keras.version())
    assert patches._release(keras.version()) < patches.KERAS_VERSIONS[1]


def _original():
    return "keras"


def _replacement():
    return "zoo"


def test_a_patch_is_in_place_for_its_block_only(monkeypatch):
    monkeypatch.setattr(patches, "_REGISTERED", [])
    module = types.SimpleNamespace(function=_original)

    class Optimizer:
        def apply(self):
            return "class"

    optimizer = Optimizer()
    patch = patches.KerasPatch("a test patch", (module, "function", _replacement), written_for={})
    with patch.installed((optimizer, "apply", _replacement)) as active:
        with patch.installed():  # nested: one installation
            assert active and module.function is _replacement and optimizer.apply() == "zoo"
        assert module.function is _replacement
    assert module.function is _original
    # A method replaced on an instance is deleted again, not set to a bound copy.
    assert "apply" not in vars(optimizer) and optimizer.apply() == "class"


def test_a_patch_is_off_on_other_keras_versions_and_says_so_once(monkeypatch):
    monkeypatch.setattr(patches, "_REGISTERED", [])
    module = types.SimpleNamespace(function=_original)
    patch = patches.KerasPatch("a test patch", (module, "function", _replacement), written_for={})
    monkeypatch.setattr(keras, "version", lambda: "3.16.0")
    expected = r"a test patch is written for Keras >=3\.15\.1,<3\.16; on Keras 3\.16\.0 it is off"
    with pytest.warns(UserWarning, match=expected) as warned:
        for _ in range(2):
            with patch.installed() as active:
                assert not active and module.function is _original
    assert len(warned) == 1


def test_importing_zoo_and_running_its_models_patches_nothing_in_a_fresh_process():
    """One process for all of it: `import zoo`, a model built and called and a
    written-once step trained load no `training` module and leave every
    function of Keras, those the patches replace included, as it was."""
    targets = sorted({path for patch in PATCHES for path in patch.written_for})
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(targets)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"missing": [], "changed": [], "training": []}
