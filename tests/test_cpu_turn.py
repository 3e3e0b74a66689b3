"""Turns to run Python among the inline engine's step threads (``engine.cpu_turn``): in order, one at
a time, handed over where a step waits, and never a lock a blocked step can hold the others behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from armillary.domain.db import Database
from armillary.domain.secrets import SecretBox
from armillary.engine import transports
from armillary.engine.context import StepContext
from armillary.engine.cpu_turn import CpuTurn, Holding
from armillary.engine.jobs import create_job
from armillary.engine.service import Engine
from armillary.engine.workflows import StepSpec, Workflow, register
from armillary.metrics import TimedDriver
from armillary.remote.base import CommandResult, Transport


def _in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _eventually(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.005)


def test_turns_are_taken_one_at_a_time_in_the_order_asked() -> None:
    turn = CpuTurn(patience_s=60)
    first = turn.hold()
    assert first.held
    order: list[str] = []
    holdings: dict[str, Holding] = {}

    def wait_for_turn(name: str) -> None:
        holdings[name] = turn.hold()
        order.append(name)

    threads = []
    for name in ("second", "third"):
        threads.append(_in_thread(lambda name=name: wait_for_turn(name)))
        _eventually(lambda: len(turn._line) == len(threads))  # in line in this order
    time.sleep(0.05)
    assert order == []  # nobody runs beside the holder
    first.close()
    _eventually(lambda: order == ["second"])
    assert holdings["second"].held and not first.held
    holdings["second"].close()
    _eventually(lambda: order == ["second", "third"])
    holdings["third"].close()
    assert turn._holder is None
    for thread in threads:
        thread.join(1)


def test_a_paused_holder_lets_the_next_in_line_run_and_waits_its_turn_after() -> None:
    turn = CpuTurn(patience_s=60)
    holder = turn.hold()
    other: list[Holding] = []
    waiter = _in_thread(lambda: other.append(turn.hold()))
    _eventually(lambda: len(turn._line) == 1)
    resumed = threading.Event()

    def pause_then_resume() -> None:
        with holder.paused():
            _eventually(lambda: bool(other))  # the waiter got the turn while the holder waited
            with holder.paused():  # nested: still paused inside
                assert not holder.held
        resumed.set()

    _in_thread(pause_then_resume)
    _eventually(lambda: len(turn._line) == 1 and bool(other))  # back in line, behind the one now running
    assert other[0].held and not holder.held and not resumed.is_set()
    other[0].close()
    assert resumed.wait(5) and holder.held
    holder.close()
    waiter.join(1)


def test_a_holder_blocked_past_patience_loses_the_turn_to_the_next_in_line() -> None:
    """A step blocked in a wait nobody marked (an SSH command): the others do not wait for it."""
    turn = CpuTurn(patience_s=0.05)
    blocked = turn.hold()
    started = time.monotonic()
    waiting: list[Holding] = []
    _in_thread(lambda: waiting.append(turn.hold()))
    _eventually(lambda: bool(waiting), timeout_s=2)
    assert 0.04 <= time.monotonic() - started < 1.0
    assert turn.overdue == 1 and waiting[0].held and not blocked.held
    blocked.close()  # it comes back: closing takes nothing from the new holder
    assert waiting[0].held
    waiting[0].close()
    assert turn._holder is None


def test_a_step_s_sleep_and_driver_calls_let_the_turn_go() -> None:
    """``ctx.sleep`` and a driver's machine operations (``metrics.TimedDriver``) run paused: the next
    in line runs at once, long before the holder would be overdue."""
    turn = CpuTurn(patience_s=60)
    holding = turn.hold()
    ctx = StepContext(runtime=None, job_id=1, action="create", step="s", attempt=1, system_id=None,  # type: ignore[arg-type]
                      params={}, context={}, deadline=time.monotonic() + 60, turn=holding)

    class Driver:
        name = "fake"

        def create(self, spec: object) -> bool:
            return holding.held

    driver = TimedDriver(Driver(), around=ctx.paused)
    assert driver.create(None) is False  # without the turn inside the call
    assert holding.held  # and with it after
    other: list[Holding] = []
    sleeper = _in_thread(lambda: ctx.sleep(0.5))
    _in_thread(lambda: other.append(turn.hold()))
    _eventually(lambda: bool(other), timeout_s=0.4)  # while the step sleeps
    other[0].close()
    sleeper.join(5)
    assert holding.held
    holding.close()


def test_a_body_abandoned_by_its_worker_takes_no_turn_when_its_wait_ends() -> None:
    turn = CpuTurn(patience_s=60)
    holding = turn.hold()
    in_wait, leave = threading.Event(), threading.Event()

    def body() -> None:
        with holding.paused():  # e.g. a driver call that outlives the step's timeout
            in_wait.set()
            leave.wait(5)

    thread = _in_thread(body)
    assert in_wait.wait(5)
    holding.close()  # the worker recorded the timeout and went on
    leave.set()
    thread.join(5)
    assert turn._holder is None and not holding.held
    assert turn.hold().held  # the next worker is not left waiting behind the abandoned body


def test_a_step_boundary_hands_over_only_when_the_slice_is_spent_and_someone_waits() -> None:
    turn = CpuTurn(patience_s=60, slice_s=0.05)
    holder = turn.hold()
    holder.boundary()
    assert holder.held  # nobody waits: kept
    other: list[Holding] = []
    _in_thread(lambda: other.append(turn.hold()))
    _eventually(lambda: len(turn._line) == 1)
    holder.boundary()
    assert holder.held and not other  # the slice is not spent yet
    time.sleep(0.06)
    handed = _in_thread(holder.boundary)  # hands over, then waits in line behind the other
    _eventually(lambda: bool(other))
    assert other[0].held
    other[0].close()
    handed.join(5)
    assert holder.held
    holder.close()


def test_a_transport_s_connection_and_operations_let_the_turn_go(monkeypatch) -> None:
    """Commands over SSH and the like (``transport_for``) wait on the machine: paused, and the object is
    still of its own class (the Ansible provisioner checks which transport it has)."""
    turn = CpuTurn(patience_s=60)
    holding = turn.hold()
    ctx = StepContext(runtime=None, job_id=1, action="deploy", step="s", attempt=1, system_id=None,  # type: ignore[arg-type]
                      params={}, context={}, deadline=time.monotonic() + 60, turn=holding)
    seen: list[tuple[str, bool]] = []

    class Remote(Transport):
        name = "fake"

        def __init__(self) -> None:
            seen.append(("connect", holding.held))

        def run(self, argv, on_line=None, **kwargs) -> CommandResult:
            seen.append((argv[0], holding.held))
            on_line("/tmp/armillary-x", "stdout")
            return CommandResult(0, "")

        def put(self, data, remote_path, mode=0o644) -> None:
            seen.append(("put", holding.held))

        def get(self, remote_path) -> bytes:
            seen.append(("get", holding.held))
            return b""

        def close(self) -> None:
            seen.append(("close", holding.held))

    monkeypatch.setattr(transports, "_transport_for", lambda ctx, system: Remote())
    with transports.transport_for(ctx, object()) as remote:
        assert isinstance(remote, Remote)
        remote.put(b"x", "/tmp/x")
        remote.get("/tmp/x")
        remote.make_temp_dir()  # the base class's helpers run through ``run``
    assert seen == [("connect", False), ("put", False), ("get", False), ("mktemp", False), ("close", False)]
    assert holding.held
    holding.close()


# ---------------------------------------------------------------- in the engine

WAIT_S = 0.5


def _marked_wait(ctx):
    ctx.sleep(WAIT_S)
    return {"waited": "marked"}


def _unmarked_wait(ctx):
    time.sleep(WAIT_S)  # a wait the engine is not told about
    return {"waited": "unmarked"}


register(Workflow("t-turn-marked", [StepSpec("wait", _marked_wait)], failure_state=None))
register(Workflow("t-turn-unmarked", [StepSpec("wait", _unmarked_wait)], failure_state=None))


@pytest.fixture
def engine(db: Database) -> Iterator[Engine]:
    eng = Engine(db, SecretBox("k"), workers=6, lease_s=5.0, poll_s=0.05)
    eng.start()
    yield eng
    eng.stop()


@pytest.mark.parametrize("workflow", ["t-turn-marked", "t-turn-unmarked"])
def test_steps_waiting_at_once_wait_together(db: Database, engine: Engine, workflow: str) -> None:
    """Six steps each waiting 0.5 s on six workers end in about 0.5 s, not 3 s: a waiting step lets
    the others run, whether it says it waits (``ctx.sleep``) or not (the turn passes on after patience)."""
    assert (engine.runtime.cpu_turn is not None) == db.is_sqlite  # turns on SQLite only
    with db.session() as session:
        jobs = [create_job(session, action=workflow, workflow=workflow) for _ in range(6)]
        session.flush()
        ids = [job.id for job in jobs]
    started = time.monotonic()
    engine.wake()
    ended = [engine.wait_for(job_id, 20) for job_id in ids]
    took = time.monotonic() - started
    assert [job.status for job in ended] == ["succeeded"] * 6
    assert took < 6 * WAIT_S / 2, f"the waits ran one after another ({took:.2f}s)"
