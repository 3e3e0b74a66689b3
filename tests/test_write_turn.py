"""The engine's SQLite write turn (``engine.write_turn``): one holder, reentrant, urgent waiters first."""

from __future__ import annotations

import threading
import time

from armillary.engine.write_turn import WriteTurn


def _wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_one_holder_at_a_time_and_reentrant_on_its_thread():
    turn = WriteTurn()
    inside, most = [0], [0]
    guard = threading.Lock()

    def write() -> None:
        for _ in range(200):
            with turn(), turn(urgent=True):  # nested on one thread: no wait for itself
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert most[0] == 1


def test_an_urgent_waiter_goes_before_those_that_waited_longer():
    turn = WriteTurn()
    order: list[str] = []
    release = threading.Event()

    def hold() -> None:
        with turn():
            release.wait(5)

    def take(name: str, urgent: bool) -> None:
        with turn(urgent=urgent):
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    _wait_until(lambda: turn.held)
    waiters = []
    for name, urgent in (("claim-1", False), ("claim-2", False), ("outcome", True)):
        waiters.append(threading.Thread(target=take, args=(name, urgent)))
        waiters[-1].start()
        _wait_until(lambda n=len(waiters): turn.waiting == n)
    release.set()
    for thread in (holder, *waiters):
        thread.join(5)
    assert order == ["outcome", "claim-1", "claim-2"]
