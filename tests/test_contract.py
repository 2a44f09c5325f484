"""The TensorFlow-free model contract: one implementation, used by everyone, TF Serving's rules."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from conftest import ROOT

import contract
from contract import (
    INT64_MAX,
    INT64_MIN,
    format_labels,
    parse_labels,
    parse_version,
    read_labels,
    version_folders,
    write_labels,
)
from export import layout
from serving.versions import versions_on_disk

# Child name of a model base path -> the version TF Serving reads (absl::SimpleAtoi), or None.
FOLDER_NAMES = [
    ("7", 7),
    ("007", 7),
    ("+7", 7),
    (" 7", 7),
    ("7 ", 7),
    ("\t7\n", 7),
    ("0", 0),
    ("-0", 0),
    ("-3", -3),
    ("9223372036854775807", INT64_MAX),
    ("-9223372036854775808", INT64_MIN),
    ("9223372036854775808", None),
    ("-9223372036854775809", None),
    ("\uff17", None),  # full-width 7
    ("\u00b2", None),  # superscript two
    ("\u0661", None),  # Arabic-Indic one
    ("7a", None),
    ("7.0", None),
    ("v7", None),
    ("0x7", None),
    ("+-7", None),
    ("++7", None),
    ("- 7", None),
    ("7 7", None),
    (" ", None),
    ("\u00a07", None),  # no-break space is not ASCII whitespace
    (".staging-7", None),
    (".staging-7-1234", None),
]


@pytest.mark.unit
@pytest.mark.parametrize(("name", "version"), FOLDER_NAMES)
def test_folder_name_rule(name, version):
    assert parse_version(name) == version


@pytest.mark.unit
@pytest.mark.parametrize(("name", "version"), FOLDER_NAMES)
def test_exporter_and_local_server_read_each_folder_name_alike(tmp_path, name, version):
    (tmp_path / name).mkdir()
    expected = {} if version is None else {version: [name]}
    assert layout.scan(tmp_path).versions == expected
    assert versions_on_disk(str(tmp_path)) == (
        {} if version is None else {version: str(tmp_path / name)}
    )


@pytest.mark.unit
def test_colliding_names_are_one_version_served_from_the_name_sorting_last(tmp_path):
    for name in ("7", "007", "+7", " 7", "8", "-0", "0", "tmp"):
        (tmp_path / name).mkdir()
    assert version_folders(p.name for p in tmp_path.iterdir()) == {
        7: [" 7", "+7", "007", "7"],
        8: ["8"],
        0: ["-0", "0"],
    }
    assert versions_on_disk(str(tmp_path)) == {
        7: str(tmp_path / "7"),
        8: str(tmp_path / "8"),
        0: str(tmp_path / "0"),
    }
    problems = layout.scan(tmp_path).problems()
    assert len(problems) == 2
    assert "folders ' 7', '+7', '007', '7' are all version 7" in problems[1]
    assert "folders '-0', '0' are all version 0" in problems[0]


@pytest.mark.unit
def test_labels_round_trip_and_refusals(tmp_path):
    path = tmp_path / "sub" / contract.LABELS_FILENAME
    write_labels(["dress", "hat", "t-shirt"], path)
    assert path.read_bytes() == b"dress\nhat\nt-shirt\n"
    assert read_labels(path) == ["dress", "hat", "t-shirt"]
    assert parse_labels("a\nb") == ["a", "b"]
    for text, message in [
        ("", "empty"),
        ("a\n\nb\n", "line 2"),
        (" a\n", "line 1"),
        ("a\rb\n", "line 1"),
        ("a\nb\na\n", "duplicate labels: ['a']"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_labels(text)
    with pytest.raises(ValueError, match="cannot be written"):
        format_labels(["a\nb"])
    with pytest.raises(ValueError, match="empty"):
        write_labels([], tmp_path / "none.txt")
    assert not (tmp_path / "none.txt").exists()


@pytest.mark.unit
def test_names_match_the_abstain_contract():
    assert contract.SIGNATURE_NAME == "serving_default"
    assert contract.INPUT_IMAGES == "images"
    assert (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_CLASSES) == ("probabilities", "classes")
    assert contract.OUTPUT_KNOWN_PROBABILITY == "known_probability"
    assert (contract.OUTPUT_ABSTAIN, contract.OUTPUT_ABSTAIN_REASON) == (
        "abstain",
        "abstain_reason",
    )
    assert contract.ABSTAIN_REASONS == ("not_a_known_category", "low_confidence")
    assert contract.RULE_FILENAME == "abstain_rule.json"
    assert sorted(contract.IMAGE_SUFFIXES) == sorted(
        [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"]
    )
    assert contract.is_image_name("IMG_1.JPEG") and not contract.is_image_name("notes.txt")
    assert not contract.is_image_name("jpg")


@pytest.mark.unit
def test_contract_imports_neither_tensorflow_nor_grpc():
    code = (
        "import sys, contract\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'grpc', 'keras', 'numpy', 'google'})\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------- nobody else defines the contract
RUNTIME_PACKAGES = ("batch", "bench", "devtools", "export", "gateway", "serving", "training")
MODEL_FOLDER_READERS = ("bench", "devtools", "export", "serving")
"""Packages that look at model base paths, where ``isdigit()`` would be a second version rule."""
CONTRACT_NAMES = set(contract.__all__) | {
    # names earlier copies used for the same things
    "DEFAULT_SIGNATURE",
    "INPUT_NAME",
    "PROBABILITIES",
    "CLASSES",
    "IMAGE_EXTENSIONS",
}
CONTRACT_LITERALS = {
    contract.SIGNATURE_NAME,
    contract.RULE_FILENAME,
    contract.LABELS_FILENAME,
    *contract.ABSTAIN_REASONS,
}
"""Values spelled out nowhere else (output names double as the gateway's JSON keys, so they may)."""


def _definitions(tree: ast.AST, reads_model_folders: bool = True) -> list[tuple[int, str]]:
    """(line, what) for every place a module defines a contract name, value or rule itself."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id in CONTRACT_NAMES:
                    found.append((node.lineno, f"assigns {name.id}"))
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in CONTRACT_NAMES:
            found.append((node.lineno, f"defines {node.name}"))
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and node.value in CONTRACT_LITERALS
        ):
            found.append((node.lineno, f"spells {node.value!r}"))
        if (
            reads_model_folders
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "isdigit"
        ):
            found.append((node.lineno, "reads a number with isdigit() (the version-folder rule)"))
    return found


@pytest.mark.unit
def test_no_other_module_defines_the_contract_again():
    offenders = []
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found = _definitions(tree, package in MODEL_FOLDER_READERS)
            offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in found]
    assert offenders == []


@pytest.mark.unit
def test_the_definition_check_catches_copies():
    copies = (
        'SIGNATURE_NAME = "x"\nIMAGE_EXTENSIONS = {".jpg"}\n'
        'def parse_version(n):\n    """Doc mentions serving_default."""\n    return n.isdigit()\n'
        'key = "serving_default"\n'
    )
    assert [what for _, what in _definitions(ast.parse(copies))] == [
        "assigns SIGNATURE_NAME",
        "assigns IMAGE_EXTENSIONS",
        "defines parse_version",
        "spells 'serving_default'",
        "reads a number with isdigit() (the version-folder rule)",
    ]


# ------------------------------------------------------------ the real local server, same table
@pytest.mark.integration
def test_local_server_serves_the_versions_the_rule_names(tiny_model_base, tmp_path):
    """Every folder name of the table under its own model; the server's REST status must report
    exactly the version the table gives (or no version at all)."""
    from serving.launcher import ModelServerProcess

    source = tiny_model_base / "1"
    cases = [(name, version) for name, version in FOLDER_NAMES if "\n" not in name]
    entries = []
    for index, (name, _) in enumerate(cases):
        base = tmp_path / f"m{index}"
        base.mkdir()
        shutil.copytree(source, base / name)
        entries.append(
            f'config {{ name: "m{index}" base_path: "{base}" model_platform: "tensorflow" }}'
        )
    # One version that does serve, so the server's readiness wait has something to wait for.
    entries.append(f'config {{ name: "ready" base_path: "{tiny_model_base}" }}')
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    with ModelServerProcess(
        [f"--model_config_file={config}"],
        rest=True,
        wait_for_model="ready",
        log_path=tmp_path / "server.log",
    ) as server:
        found = {}
        for index, (name, _) in enumerate(cases):
            try:
                with urllib.request.urlopen(
                    f"{server.rest_url}/v1/models/m{index}", timeout=30
                ) as r:
                    status = json.load(r)["model_version_status"]
            except urllib.error.HTTPError as exc:
                assert exc.code == 404, (name, exc.read())
                found[name] = None
                continue
            assert [s["state"] for s in status] == ["AVAILABLE"], (name, status)
            found[name] = int(status[0]["version"])
    assert found == dict(cases)
