"""The demo's progress line (issue 30): rewritten in place on a terminal, a line now and then in a
log, where nothing can be rewritten."""

from __future__ import annotations

import io

from lifecycle.demo import ProgressLine


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_rewritten_and_ended_once():
    said: list[str] = []
    screen = _Terminal()
    line = ProgressLine(said.append, screen)
    for n in (1000, 2000, 3000):
        line.update(f"emitted {n}")
    line.end("done")
    assert screen.getvalue() == "\r\x1b[Kemitted 1000\r\x1b[Kemitted 2000\r\x1b[Kemitted 3000\r\x1b[K"
    assert said == ["done"]


def test_into_a_log_updates_are_said_once_per_period_and_the_end_always():
    said: list[str] = []
    line = ProgressLine(said.append, io.StringIO(), every_s=3600)
    for n in range(100):
        line.update(f"emitted {n}")
    line.end("done")
    assert said == ["done"]
    line = ProgressLine(said.append, io.StringIO(), every_s=0)
    line.update("emitted 1")
    assert said[-1] == "emitted 1"
