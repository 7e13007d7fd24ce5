"""Tests for live.handoff: newest-wins and lossless hand-off between two threads."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from live.handoff import Handoff


def _start(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_newest_wins_replaces_and_counts_dropped_items() -> None:
    dropped: list[int] = []
    handoff: Handoff[int] = Handoff(on_drop=dropped.append)
    assert all(handoff.put(item) for item in range(5))
    assert handoff.get(timeout=0) == 4
    assert (handoff.dropped, handoff.delivered) == (4, 1)
    assert dropped == [0, 1, 2, 3]
    assert handoff.get(timeout=0.01) is None


def test_newest_wins_consumer_sees_increasing_items_and_the_last_one() -> None:
    handoff: Handoff[int] = Handoff()

    def produce() -> None:
        for item in range(300):
            handoff.put(item)
            if item % 10 == 0:
                time.sleep(0.001)
        handoff.close()

    producer = _start(produce)
    seen = []
    while (item := handoff.get(timeout=2.0)) is not None:
        seen.append(item)
        time.sleep(0.002)
    producer.join(2)
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert seen[-1] == 299
    assert handoff.delivered + handoff.dropped == 300
    assert handoff.finished


def test_lossless_hands_over_every_item_in_order() -> None:
    handoff: Handoff[int] = Handoff(lossless=True)

    def produce() -> None:
        for item in range(50):
            assert handoff.put(item)
        handoff.close()

    producer = _start(produce)
    seen = []
    while (item := handoff.get(timeout=2.0)) is not None:
        seen.append(item)
        if item % 7 == 0:
            time.sleep(0.005)  # a slow consumer makes the producer wait, never drop
    producer.join(2)
    assert seen == list(range(50))
    assert handoff.dropped == 0


def test_lossless_put_waits_for_the_consumer() -> None:
    handoff: Handoff[str] = Handoff(lossless=True)
    handoff.put("first")
    done = threading.Event()
    producer = _start(lambda: (handoff.put("second"), done.set()))
    assert not done.wait(0.1)  # still waiting: "first" has not been taken
    assert handoff.get(timeout=1) == "first"
    assert done.wait(2)
    assert handoff.get(timeout=1) == "second"
    producer.join(2)


def test_get_waits_until_an_item_or_the_timeout() -> None:
    handoff: Handoff[int] = Handoff()
    start = time.monotonic()
    assert handoff.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.045
    assert not handoff.finished
    timer = threading.Timer(0.05, handoff.put, args=(7,))
    timer.start()
    assert handoff.get() == 7  # no timeout: waits for the item
    timer.join()


def test_close_wakes_a_waiting_consumer_after_the_last_item() -> None:
    handoff: Handoff[int] = Handoff()
    handoff.put(1)
    handoff.close()
    assert not handoff.finished  # the last item is still delivered
    assert handoff.put(2) is False  # nothing more after close
    assert handoff.get(timeout=0) == 1
    assert handoff.finished
    waiting: Handoff[int] = Handoff()
    results: list[int | None] = []
    consumer = _start(lambda: results.append(waiting.get()))
    time.sleep(0.05)
    waiting.close()
    consumer.join(2)
    assert not consumer.is_alive() and results == [None]


def test_close_with_an_error_raises_it_after_the_items() -> None:
    handoff: Handoff[int] = Handoff()
    handoff.put(1)
    handoff.close(ValueError("bad frame"))
    handoff.close(RuntimeError("later"))  # the first error wins
    assert handoff.get(timeout=0) == 1
    for _ in range(2):  # on every call after the end
        with pytest.raises(ValueError, match="bad frame"):
            handoff.get(timeout=0)
    assert isinstance(handoff.error, ValueError)


def test_cancel_discards_the_waiting_item_and_wakes_a_waiting_producer() -> None:
    dropped: list[str] = []
    handoff: Handoff[str] = Handoff(lossless=True, on_drop=dropped.append)
    handoff.put("waiting")
    results: list[bool] = []
    producer = _start(lambda: results.append(handoff.put("blocked")))
    time.sleep(0.05)
    handoff.cancel()
    producer.join(2)
    assert not producer.is_alive() and results == [False]  # "blocked" stays with its producer
    assert dropped == ["waiting"]
    assert handoff.dropped == 0  # discarded at the end, not dropped to keep up
    assert handoff.get(timeout=0) is None and handoff.finished
