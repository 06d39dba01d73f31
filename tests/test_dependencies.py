"""Which package may import what, read from the source: `training` imports
`zoo`, never the reverse; only a backend's own module imports its framework;
model files import keras and zoo's own modules; the CLI loads no keras before
it has chosen the backend."""

import ast
import pathlib
import sys

import pytest

import zoo

ROOT = pathlib.Path(zoo.__file__).parent
FRAMEWORKS = {"tensorflow", "torch", "jax", "jaxlib"}
# A module named after a backend (zoo/steps/_torch.py) is chosen once from
# keras.backend.backend() and may import that backend's framework.
OWN_FRAMEWORK = {"_tensorflow": {"tensorflow"}, "_torch": {"torch"}, "_jax": {"jax", "jaxlib"}}


def _imports(path):
    """The top-level package of every module `path` imports."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield (node.module or "").split(".")[0]


def _modules(folder=ROOT):
    return [(path.relative_to(ROOT.parent), set(_imports(path))) for path in folder.rglob("*.py")]


def test_zoo_imports_no_framework_outside_backend_modules():
    offenders = [
        f"{path}: {name}"
        for path, imported in _modules()
        for name in imported & FRAMEWORKS - OWN_FRAMEWORK.get(path.stem, set())
    ]
    assert not offenders


def test_zoo_never_imports_training():
    assert not [str(path) for path, imported in _modules() if "training" in imported]


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_model_files_import_keras_and_zoo_only(path):
    allowed = {"keras", "zoo", *sys.stdlib_module_names}
    assert set(_imports(path)) <= allowed


def _top_level_imports(path):
    """The modules `path` imports when it loads (not inside functions)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_cli_loads_no_keras_before_choosing_the_backend():
    """Everything `training.cli` imports when it loads, and what those import,
    is free of keras, zoo (which imports keras) and the frameworks."""
    seen, todo, loaded = set(), ["training.cli"], []
    while todo:
        module = todo.pop()
        path = ROOT.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        if module in seen or not path.exists():
            continue  # a name imported from a module, not a module
        seen.add(module)
        for name in _top_level_imports(path):
            loaded.append(name.split(".")[0])
            if name.split(".")[0] == "training":
                todo.append(name)
    assert "training.config" in seen
    assert not set(loaded) & {"keras", "zoo", *FRAMEWORKS}
