import pathlib
import re

import zoo
from training.cli import markdown_table

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


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
