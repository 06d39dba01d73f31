import dataclasses
import pathlib
import re
import shlex

import pytest

import zoo
from training import cli
from training.cli import markdown_table
from training.config import FitConfig

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
# The data sets that ship with the package: a recipe needs no network.
BUNDLED = ("digits", "digits_segmentation", "linear", "blobs", "sequence_order", "arithmetic")


def _recipes():
    """The measured commands of README's "Recipes", each as its argv."""
    block = re.search(r"<!-- recipes:start -->\n(.*?)\n<!-- recipes:end -->", README, re.S)
    assert block, "README lacks the recipes:start/recipes:end markers"
    text = block.group(1).replace("\\\n", " ")  # a command goes on after a backslash
    return [shlex.split(line) for line in text.splitlines() if line.startswith("python -m")]


RECIPES = _recipes()


def test_model_table_is_generated_from_the_registry():
    table = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", README, re.S)
    assert table, "README lacks the models:start/models:end markers"
    assert table.group(1) == markdown_table(zoo.list_models()), (
        "README model table is stale: regenerate it with `python -m training list --markdown`"
    )


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = commands[1]
    assert "nox" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("argv", RECIPES, ids=[argv[argv.index("--model") + 1] for argv in RECIPES])
def test_recipe_parses_as_fit_config(argv):
    # Parsing only, no training: a renamed flag, model argument or data set
    # fails here instead of leaving a measured command stale.
    assert argv[:4] == ["python", "-m", "training", "fit"] and "--seed" in argv
    args = cli.parse_args(argv[3:])
    FitConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(FitConfig)})
    assert args.model in zoo.list_models()
    assert args.dataset in BUNDLED
    assert set(args.model_kwargs) <= set(zoo.model_arguments(args.model))


def test_every_family_has_a_recipe():
    families = {zoo.model_family(name) for name in zoo.list_models()}
    recipes = {zoo.model_family(argv[argv.index("--model") + 1]) for argv in RECIPES}
    assert recipes == families
