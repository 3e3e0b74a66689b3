"""Coalescing the ansible provisioner's runs: the children of one bulk job share ONE ansible-playbook.

Why: a bulk ``provision`` starts one child job per system (each with its own job, log, summary, lease and
retry), and each child used to run its own ansible-playbook against its one host. Ansible's start-up
(Python, the collection loader, the callback machinery, a fork per task) is paid once per process, so ten
runs of one host cost about twice one run of ten hosts with ``-f 10``. Here the children stay separate
jobs, and only their runs are joined: the children's provision steps that would run *the same play*
(same spec, ssh hosts) meet in a ``Batch``, and one of them starts ONE run for all of them.

How (the engine is not involved; this is all in the provisioner's process):

* a child of a bulk job carries ``params["bulk"] = {"job": <parent id>, "batch": <n>, "wave": <k>}``
  (``workflows.bulk``): the parent started ``k`` children together. A provision step with ``k >= 2``
  *joins* the open ``Batch`` of its key (the provisioner's: parent, batch, spec), or opens one;
* a batch waits until ``k`` members have joined, or ``IDLE_S`` without a new member, or ``MAX_WAIT_S``
  after it opened, whichever comes first (siblings of another type, or that failed before their run,
  never come: that wait is the price of a mixed wave); then it is closed (a later sibling opens another);
* one member left: it runs alone, as a lone provision does (no batch outcome, no takeover). Two or more:
  ``run_many`` runs the tool once for all of them in the batch's own thread, and sets each member's
  ``result`` or ``error`` from its own host's outcome. The files of the run live in the first member's
  private directory: the batch takes over its cleanups (``ExitStack.pop_all``) and runs them when the
  run has ended, before any member is told, so no job ends with its files still on the control host;
* a member waits for its outcome in its own step (``wait``), checking its own cancellation and the
  server's shutdown: a member that goes *leaves* (its host's further output is ignored, its job ends at
  once) while the run goes on for the others; the run is stopped only when every member has left;
* a member that crashes with its process takes the whole batch with it (same process); each child's
  step is then retried by the engine after its lease expires, alone (a retry never joins a batch).

Batching happens only where siblings can meet: in one process (the ``inline`` engine); under Celery each
step may run in another worker process, so there children run alone with no added wait.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from armillary.failures import PermanentFailure

# A batch waits for its expected members at most this long after it opened...
MAX_WAIT_S = 3.0
# ...and closes earlier when no member joined for this long (the rest are not coming soon).
IDLE_S = 1.0
# How often a waiting member looks at its own cancellation and the server's shutdown.
POLL_S = 0.1


@dataclass(eq=False)
class Member:
    """One provision step in a batch: its context, its inventory name, and what the run needs of it."""

    ctx: Any
    name: str  # the inventory host name, unique within a batch
    payload: Any  # the provisioner's own data for the run (connection, variables, prepared files)
    scratch: ExitStack  # its control-host cleanups; the batch takes them over when the run uses its files
    done: threading.Event = field(default_factory=threading.Event)
    left: bool = False  # gone (cancelled, server stopping): its host's output is not wanted any more
    alone: bool = False  # the batch found no companion: the member runs by itself
    result: Any = None
    error: BaseException | None = None


# Runs the tool once for ``members``; sets each one's ``result`` or ``error``. The callable it gets says
# whether every member has left (then the run may be stopped).
RunMany = Callable[[list[Member], Callable[[], bool]], None]


class Batch:
    """Members gathered for one run; closed (out of ``Coalescer.open``) once the run is decided."""

    def __init__(self, coalescer: Coalescer, key: Hashable, expected: int, run_many: RunMany) -> None:
        self.coalescer, self.key, self.expected, self.run_many = coalescer, key, expected, run_many
        self.members: dict[str, Member] = {}
        self.opened = self.last_join = time.monotonic()

    def attached(self) -> list[Member]:
        return [m for m in self.members.values() if not m.left]

    def deserted(self) -> bool:
        with self.coalescer.lock:
            return not self.attached()

    def drive(self) -> None:
        """The batch's thread: gather, close, then run once (or let a lone member run by itself)."""
        cond = self.coalescer.changed
        with cond:
            while len(self.attached()) < self.expected:
                now = time.monotonic()
                until = min(self.opened + MAX_WAIT_S, self.last_join + IDLE_S)
                if now >= until:
                    break
                cond.wait(until - now)
            if self.coalescer.open.get(self.key) is self:  # closed: a later sibling opens another
                del self.coalescer.open[self.key]
            present = self.attached()
            if len(present) <= 1:
                for member in present:
                    member.alone = True
                    member.done.set()
                return
            cleanup = present[0].scratch.pop_all()  # the run's files are in the first one's directory
        error: BaseException | None = None
        try:
            with cleanup:
                self.run_many(present, self.deserted)
        except BaseException as exc:  # noqa: BLE001 - handed to every member, which raises it in its step
            error = exc
        for member in present:
            if member.result is None and member.error is None:  # each its own copy: raised in its own thread
                member.error = copy.copy(error) if error is not None else PermanentFailure(
                    "the shared Ansible run gave no outcome for this host")
            member.done.set()


class Coalescer:
    """The open batches of this process, by key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.open: dict[Hashable, Batch] = {}

    def join(self, key: Hashable, expected: int, member: Member, run_many: RunMany) -> bool:
        """Put ``member`` into the open batch of ``key`` (opening one); False: it must run alone (a member
        of that name is already in: an inventory cannot hold two hosts of one name)."""
        with self.changed:
            batch = self.open.get(key)
            if batch is not None and member.name in batch.members:
                return False
            if batch is None:
                batch = self.open[key] = Batch(self, key, expected, run_many)
                name = f"ansible-batch-{member.ctx.job_id}"
                threading.Thread(target=batch.drive, name=name, daemon=True).start()
            batch.members[member.name] = member
            batch.last_join = time.monotonic()
            self.changed.notify_all()
        return True

    def wait(self, member: Member, leave: Callable[[], BaseException | None]) -> tuple[bool, Any]:
        """Wait for ``member``'s outcome: ``(True, result)`` (or its error raised) when the batch ran it,
        ``(False, None)`` when it must run alone. ``leave`` is asked every ``POLL_S``: an exception means
        the member goes now (cancelled, server stopping); it is raised once the member has left."""
        while not member.done.wait(POLL_S):
            why = leave()
            if why is None:
                continue
            with self.changed:
                if member.done.is_set():
                    break  # decided meanwhile: take the outcome
                member.left = True
                self.changed.notify_all()
            raise why
        if member.alone:
            return False, None
        if member.error is not None:
            raise member.error
        return True, member.result


BATCHES = Coalescer()
