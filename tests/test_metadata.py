"""The package's version, its changelog and its metadata agree."""

from __future__ import annotations

import re
from typing import List, Tuple

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
