"""How the doctor names a place in the code."""

from __future__ import annotations

import sys

from forksafe_logging import _frames


def test_position_of_a_frame_without_a_line() -> None:
    """A thread's frame can have no line number for a moment: named without one, no error."""
    code = type("Code", (), {"co_name": "work", "co_filename": "/srv/app/jobs.py"})()
    frame = type("Frame", (), {"f_code": code, "f_lineno": None})()
    assert _frames.position(frame) == "work() in jobs.py"
    frame.f_lineno = 12
    assert _frames.position(frame) == "work() in jobs.py, line 12"


def test_stdlib_frames_are_skipped_to_the_caller() -> None:
    """The innermost frame outside the stdlib is the program's, named by its own file."""
    import json

    seen = []

    def hook(obj: object) -> object:
        seen.append(sys._getframe(0))
        return obj

    json.loads("{}", object_hook=hook)
    inner = seen[0]
    assert _frames.outside_stdlib(inner) is inner  # this test's own hook
    assert _frames.position(inner).startswith("hook() in test_frames.py, line ")
    in_json = inner.f_back  # json.decoder's, which called the hook
    assert _frames.position(in_json).startswith("raw_decode() in json/decoder.py, line ")
    caller = _frames.outside_stdlib(in_json)
    assert caller.f_code.co_name == "test_stdlib_frames_are_skipped_to_the_caller"
    assert _frames.in_stdlib(json.__file__)
    assert not _frames.in_stdlib(__file__)
