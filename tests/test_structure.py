"""The code's structure holds: one definition of each shared symbol, one error base, training as a
library (no CLI import), and the headless boundary (only ``blastscope.widgets`` imports napari or
Qt). Source scans read the files; the import checks run in a fresh interpreter."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import blastscope
import blastscope.classes
import blastscope.cli
import blastscope.errors
import blastscope.export
import blastscope.export._atomic
import blastscope.jsonable
import blastscope.models
import blastscope.models.bundle
import blastscope.models.classifier
import blastscope.progress
import blastscope.synthetic
from blastscope.errors import BlastscopeError

PACKAGE = Path(blastscope.__file__).parent
WIDGETS = PACKAGE / "widgets"
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6")


def _sources() -> dict[Path, str]:
    """Every module of the package, relative path -> text."""
    return {
        path.relative_to(PACKAGE): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _files_matching(pattern: str) -> list[str]:
    regex = re.compile(pattern, re.MULTILINE)
    return [str(path) for path, text in _sources().items() if regex.search(text)]


def test_shared_symbols_are_one_object_wherever_they_are_imported_from():
    assert blastscope.synthetic.MUTATION_CLASSES is blastscope.classes.MUTATION_CLASSES
    assert blastscope.models.classifier.MUTATION_CLASSES is blastscope.classes.MUTATION_CLASSES
    assert blastscope.models.classifier.BLAST_CLASSES is blastscope.classes.BLAST_CLASSES
    assert blastscope.models.classifier.NUCLEATED_CLASSES is blastscope.classes.NUCLEATED_CLASSES
    assert blastscope.cli.progress_bars is blastscope.progress.progress_bars
    assert blastscope.export.ExportError is blastscope.errors.ExportError
    assert blastscope.export._atomic.ExportError is blastscope.errors.ExportError
    assert blastscope.models.shipped_bundles is blastscope.models.bundle.shipped_bundles


@pytest.mark.parametrize(
    ("pattern", "home"),
    [
        (r"^MUTATION_CLASSES\s*=", "classes.py"),
        (r"^BLAST_CLASSES\s*=", "classes.py"),
        (r"^NUCLEATED_CLASSES\s*=", "classes.py"),
        (r"^class BlastscopeError\b", "errors.py"),
        (r"^class ExportError\b", "errors.py"),
        (r"^def jsonable\(", "jsonable.py"),
        (r"^def dumps_json\(", "jsonable.py"),
        (r"^def progress_bars\(", "progress.py"),
        (r"^def \w*resize\w*\(", "resample.py"),
        (r"^def \w*iou\w*\(", "train/boxes.py"),
        (r"rev-parse", "train/provenance.py"),
        (r"^def shipped_bundles\(", "models/bundle.py"),
    ],
)
def test_each_shared_definition_lives_in_one_file(pattern, home):
    assert _files_matching(pattern) == [home]


def _json_calls_with_a_default_hook(text: str) -> int:
    return sum(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("dump", "dumps")
        and any(keyword.arg == "default" for keyword in node.keywords)
        for node in ast.walk(ast.parse(text))
    )


def test_no_second_json_sanitiser_or_bundle_listing():
    # json.dump(s) with a default= hook is a sanitiser of its own; use blastscope.jsonable
    hooks = {str(path): _json_calls_with_a_default_hook(text) for path, text in _sources().items()}
    assert {path: count for path, count in hooks.items() if count} == {}
    # listing a folder's bundles is models.bundle.bundles_in / shipped_bundles
    listing = [
        str(path)
        for path, text in _sources().items()
        if "iterdir(" in text and ("bundle.json" in text or "METADATA_FILE" in text)
    ]
    assert listing == ["models/bundle.py"]


def test_synthetic_public_names_import_from_the_package():
    for name in blastscope.synthetic.__all__:
        assert getattr(blastscope.synthetic, name) is not None
    for name in ("generate_field", "generate_slide", "render_crops", "get_preset"):
        function = getattr(blastscope.synthetic, name)
        assert function.__module__.startswith("blastscope.synthetic.")


def _imports_of(text: str) -> set[str]:
    """Top-level names of every module ``text`` imports (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_widgets_import_napari_or_qt_in_their_source():
    offenders = {
        str(path): sorted(_imports_of(text) & set(GUI_MODULES))
        for path, text in _sources().items()
        if path.parts[0] != "widgets"
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_every_module_but_the_widgets_loads_neither_napari_nor_qt():
    script = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import blastscope

        def walk(path, prefix):
            for info in pkgutil.iter_modules(path, prefix):
                if info.name == "blastscope.widgets":
                    continue
                module = importlib.import_module(info.name)
                yield info.name
                if info.ispkg:
                    yield from walk(module.__path__, info.name + ".")

        imported = list(walk(blastscope.__path__, "blastscope."))
        gui = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {gui_modules}
        )
        print(json.dumps({{"imported": imported, "gui": gui}}))
        """
    ).format(gui_modules=repr(set(GUI_MODULES)))
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["gui"] == []
    imported = set(report["imported"])
    assert {
        "blastscope.cli",
        "blastscope.train.segmenter",
        "blastscope.synthetic.render",
    } <= imported
    assert not any(name.startswith("blastscope.widgets") for name in imported)


def test_training_is_a_library_that_never_imports_the_cli():
    train = {path: text for path, text in _sources().items() if path.parts[0] == "train"}
    assert train
    for path, text in train.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("blastscope.cli"), path
                if node.module == "blastscope":
                    assert "cli" not in {alias.name for alias in node.names}, path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("blastscope.cli") for a in node.names), path


def _domain_errors() -> list[type[Exception]]:
    """Every exception class defined in a non-widget module of blastscope."""
    import importlib
    import pkgutil

    def walk(path, prefix):
        for info in pkgutil.iter_modules(path, prefix):
            if info.name == "blastscope.widgets":
                continue
            module = importlib.import_module(info.name)
            yield module
            if info.ispkg:
                yield from walk(module.__path__, info.name + ".")

    found = {}
    for module in walk(blastscope.__path__, "blastscope."):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Exception) and value.__module__ == module.__name__:
                found[value.__qualname__] = value
    return list(found.values())


def test_every_domain_error_is_a_blastscope_error_and_still_a_value_error():
    errors = _domain_errors()
    names = {error.__name__ for error in errors}
    assert {
        "ImageInputError",
        "SegmentationError",
        "PredictionError",
        "BundleError",
        "ExportError",
        "OutputExistsError",
        "GeoJSONError",
        "SlideCallError",
        "DatasetError",
        "TrainingError",
        "EditError",
        "ReviewError",
        "DeviceError",
        "CropError",
        "ArchitectureError",
        "SlideRecordError",
    } <= names
    for error in errors:
        assert issubclass(error, BlastscopeError), error
        assert issubclass(error, ValueError), error


def test_cli_main_reports_any_blastscope_error_as_a_message(monkeypatch, capsys):
    from blastscope.models import BundleError

    def broken(args):
        raise BundleError("this bundle is broken; choose another")

    monkeypatch.setattr(blastscope.cli, "_cmd_models_list", broken)
    assert blastscope.cli.main(["models", "list"]) == 1
    assert capsys.readouterr().err == "error: this bundle is broken; choose another\n"


def test_json_values_are_plain_and_strict():
    import numpy as np
    import pandas as pd

    value = {
        "path": Path("a/b"),
        "n": np.int64(3),
        "p": np.float32(0.5),
        "nan": float("nan"),
        "na": pd.NA,
        "flag": np.bool_(True),
        "pair": (1, np.array([2.0, np.inf])),
    }
    assert blastscope.jsonable.jsonable(value) == {
        "path": "a/b",
        "n": 3,
        "p": 0.5,
        "nan": None,
        "na": None,
        "flag": True,
        "pair": [1, [2.0, None]],
    }
    with pytest.raises(blastscope.errors.ExportError, match=r"value\['x'\].*not a number"):
        blastscope.jsonable.jsonable({"x": object()})
