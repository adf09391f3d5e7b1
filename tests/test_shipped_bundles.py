"""The shipped demonstration bundles and the commands that made them.

The commands recorded in ``models/shipped/TRAINING.md`` are re-run here with a tiny budget; the
bundles they make must have the shipped bundles' schema and architecture.
"""

import json
import shlex
from pathlib import Path

import pytest

from blastscope.cli import main
from blastscope.models.bundle import SHIPPED_DIR
from blastscope.models.classifier import BLAST_CLASSES, MUTATION_CLASSES, load_classifier

COMMANDS_FILE = SHIPPED_DIR / "TRAINING.md"
BCCD_DIR = Path(__file__).parent / "data" / "bccd"
TINY_BUDGET = {"--n-slides": "6", "--cells-per-slide": "24", "--epochs": "1"}


def recorded_commands() -> dict[str, list[str]]:
    """Classifier bundle name -> the argument list of the `blastscope train blast|mutation ...`
    command that made it (the segmenter's command is checked in test_segmenter_training.py)."""
    text = COMMANDS_FILE.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = {}
    for line in text.splitlines():
        if line.strip().startswith(("blastscope train blast ", "blastscope train mutation ")):
            argv = shlex.split(line.strip())[1:]
            commands[argv[argv.index("--name") + 1]] = argv
    return commands


def with_tiny_budget(argv: list[str], out: Path) -> list[str]:
    """The same command with the tiny budget, writing to ``out`` (not into the package); BCCD
    from the test fields."""
    argv = list(argv)
    if "--real-negatives" in argv:
        argv += ["--bccd", str(BCCD_DIR), "--bccd-list", str(BCCD_DIR / "fields.txt")]
    for option, value in TINY_BUDGET.items():
        argv[argv.index(option) + 1] = value
    for option in ("--bundle", "--out"):
        if option in argv:
            at = argv.index(option)
            del argv[at : at + 2]
    return [*argv, "--out", str(out), "--device", "cpu"]


def schema(value):
    """The nested keys of a JSON value (lists and leaves reduced to their type)."""
    if isinstance(value, dict):
        return {key: schema(item) for key, item in value.items()}
    return type(value).__name__ if not isinstance(value, (int, float)) else "number"


SHIPPED = [("blast-smear", "blast"), ("blast-demo", "blast"), ("mutation-demo", "mutation")]


@pytest.mark.parametrize(("name", "kind"), SHIPPED)
def test_shipped_bundle_loads_by_name_and_says_it_is_a_demo(name, kind):
    classifier = load_classifier(name, kind)
    assert classifier.demo is True
    assert classifier.classes == (BLAST_CLASSES if kind == "blast" else MUTATION_CLASSES)
    source = classifier.metadata["training"]["dataset"]["source"]
    synthetic = source if source["kind"] == "synthetic" else source["parts"][0]
    assert synthetic["preset"] == "default"
    assert classifier.metadata["metrics"]["test"]["accuracy"] > 0.5
    size = sum(path.stat().st_size for path in classifier.path.iterdir())
    assert size < 8_000_000


def test_recorded_commands_name_both_bundles_and_say_not_for_diagnosis():
    text = COMMANDS_FILE.read_text(encoding="utf-8")
    assert "not for diagnosis" in text
    commands = recorded_commands()
    assert set(commands) == {name for name, _ in SHIPPED}
    for name, argv in commands.items():
        assert argv[argv.index("--synthetic") + 1] == "default"
        assert "--demo" in argv
        shipped = json.loads((SHIPPED_DIR / name / "bundle.json").read_text())
        assert shipped["training"]["command"].endswith(" ".join(argv[1:])), name


@pytest.mark.parametrize(("name", "kind"), SHIPPED)
def test_recorded_command_with_a_tiny_budget_makes_a_bundle_like_the_shipped_one(
    name, kind, tmp_path
):
    argv = with_tiny_budget(recorded_commands()[name], tmp_path / name)
    assert main(argv) == 0
    made = json.loads((tmp_path / name / "bundle" / "bundle.json").read_text())
    shipped = json.loads((SHIPPED_DIR / name / "bundle.json").read_text())
    for key in ("kind", "architecture", "classes", "threshold", "demo", "format_version"):
        assert made[key] == shipped[key], key
    assert made["input"] | {"normalisation": None} == shipped["input"] | {"normalisation": None}
    assert set(made) == set(shipped)
    assert schema(made["input"]) == schema(shipped["input"])
    assert set(made["training"]) == set(shipped["training"])
    assert set(made["metrics"]["test"]) == set(shipped["metrics"]["test"])
    shipped_weights = load_classifier(name, kind).network.state_dict()
    made_weights = load_classifier(tmp_path / name / "bundle", kind).network.state_dict()
    assert {k: v.shape for k, v in made_weights.items()} == {
        k: v.shape for k, v in shipped_weights.items()
    }
