"""The detectors' table of remedies: every entry used, every entry whole in every mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forksafe_logging import _detect

MODES = ["forward", "inherit", "reset"]


def test_every_remedy_is_used_and_every_used_remedy_exists() -> None:
    source = Path(_detect.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r'remedy\(\s*"([a-z-]+)"', source))
    # The two a detector picks between with a conditional expression.
    used |= set(re.findall(r'remedy\("([a-z-]+)" if \w+ else "([a-z-]+)"\)', source)[0])
    assert used == set(_detect.REMEDIES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", sorted(_detect.REMEDIES))
def test_remedy_is_whole(key: str, mode: str) -> None:
    """Each remedy reads as a sentence in each mode: every field filled, the timeout named."""
    look = _detect.Look(mode, 0.25, {})
    text = look.remedy(key, dropped=" DROPPED", flushes=" FLUSHES")
    assert "%(" not in text
    assert text.endswith((".", ".)"))
    inherit, _, forward = _detect.REMEDIES[key]
    timed = "%(before_fork)s" in inherit or "%(fork_timeout)s" in inherit
    if timed and (mode != "forward" or forward is not None):
        assert "0.25 s at most" in text


def test_forward_mode_says_the_child_never_uses_it() -> None:
    """In forward mode, what the child inherited is never used, unless the entry says otherwise."""
    look = _detect.Look("forward", 0.1, {})
    for key, (_, _, forward) in _detect.REMEDIES.items():
        text = look.remedy(key, dropped="", flushes="")
        assert ("never uses it" in text) == (forward is None), key
