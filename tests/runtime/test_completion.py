"""Completion: the one-shot outcome a blocking request waits for (ira.runtime.link)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import InvalidStateError

import pytest

from ira.runtime.link import Completion


def test_a_value_set_is_the_result_for_every_reader() -> None:
    c: Completion[int] = Completion()
    assert not c.done()
    c.set_result(7)
    assert c.done()
    assert c.result() == 7
    assert c.result(timeout=0) == 7


def test_an_exception_set_is_raised_by_result() -> None:
    c: Completion[int] = Completion()
    c.set_exception(ValueError("the session reset"))
    assert c.done()
    with pytest.raises(ValueError, match="the session reset"):
        c.result()


def test_the_outcome_is_set_once() -> None:
    c: Completion[int] = Completion()
    c.set_result(1)
    with pytest.raises(InvalidStateError):
        c.set_result(2)
    with pytest.raises(InvalidStateError):
        c.set_exception(RuntimeError())
    assert c.result() == 1


def test_result_times_out_when_nothing_is_set() -> None:
    c: Completion[int] = Completion()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        c.result(timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2.0
    with pytest.raises(TimeoutError):
        c.result(timeout=-1.0)  # a deadline already past: no wait, no error of its own


def test_a_waiting_reader_wakes_when_another_thread_sets_it() -> None:
    c: Completion[str] = Completion()
    got: list[str] = []
    readers = [threading.Thread(target=lambda: got.append(c.result(timeout=5.0))) for _ in range(3)]
    for r in readers:
        r.start()
    time.sleep(0.02)
    c.set_result("reply")
    for r in readers:
        r.join(timeout=5.0)
    assert got == ["reply"] * 3
