import ast
import pathlib

import zoo

FRAMEWORKS = {"tensorflow", "torch", "jax", "jaxlib"}


def test_zoo_imports_no_framework():
    root = pathlib.Path(zoo.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert not offenders
