"""The package's version, its changelog and its metadata agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set, Tuple

from conftest import TESTS

import forksafe_logging

ROOT = TESTS.parent
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$", re.M)


def _release(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def _headings() -> List[Tuple[str, str]]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return [(m["name"], m["date"] or "") for m in HEADING.finditer(text)]


def test_changelog_matches_version() -> None:
    """A release has its own section on top; a development version comes after the last one."""
    version = forksafe_logging.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", version), version
    headings = _headings()
    released = [(name, date) for name, date in headings if name != "Unreleased"]
    assert released, "the changelog names no released version"
    assert all(date for _, date in released), released
    versions = [_release(name) for name, _ in released]
    assert versions == sorted(versions, reverse=True)  # newest first
    if ".dev" in version:
        assert headings[0][0] == "Unreleased"
        assert versions[0] < _release(version)
    else:
        assert headings[0][0] == version


def test_setup_cfg_has_no_license_classifier() -> None:
    """License classifiers are deprecated (PEP 639): setuptools warns at every build."""
    text = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert "License ::" not in text
    assert re.search(r"^license = MIT$", text, re.M)


def _defined(path: Path) -> Set[str]:
    """``Class``, ``Class::method`` and ``function`` names a test module defines."""
    import ast

    names: Set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add("%s::%s" % (node.name, item.name))
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def test_guarantees_name_tests_that_exist() -> None:
    """Each test the "Guarantees and failure modes" page ties a fault to is in the suite."""
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    missing: List[str] = []
    seen = 0
    for row in text.splitlines():
        if not row.startswith("|"):
            continue
        current = None
        for token in re.findall(r"`([^`]+)`", row):
            file, _, name = token.partition("::")
            if re.fullmatch(r"test_\w+\.py", file):
                current = file
            elif current is not None and re.fullmatch(r"(Test\w+|test_\w+)(::\w+)?", token):
                file, name = current, token
            else:
                continue
            seen += 1
            path = TESTS / file
            defined = _defined(path) if path.exists() else set()
            # A bare method name stands for that method of any class.
            if not path.exists() or (
                name and name not in defined and not any(d.endswith("::" + name) for d in defined)
            ):
                missing.append(token if file == token.partition("::")[0] else file + "::" + token)
    assert seen > 20  # the page still ties faults to tests
    assert missing == []
