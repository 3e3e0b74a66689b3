"""The heartbeat of a process that runs steps: it renews the leases of the steps running there.

Shared by the engine of ``armillary serve`` (``Engine``) and by ``armillary worker`` (Celery mode),
so both keep exactly the same promise: only the steps whose bodies run in this process now
(``Runtime.running_steps``) are renewed, then their jobs' locks, in two transactions (see
``leases.renew_step_leases`` for why two). A step whose ``run_step`` crashed is not renewed, so
its lease expires and a reaper retries it.
"""

from __future__ import annotations

import logging
import threading

from armillary.engine import leases
from armillary.engine.runtime import Runtime

log = logging.getLogger("armillary.engine")


def renew(runtime: Runtime) -> None:
    """One beat: renew the leases of the steps running here, then their jobs' locks."""
    owner, running, lease_s = runtime.worker_id, runtime.running_steps(), runtime.lease_s
    try:
        with runtime.db.session() as session:
            leases.renew_step_leases(session, owner, running, lease_s)
        with runtime.db.session() as session:
            leases.renew_job_locks(session, owner, running, lease_s)
    except Exception:  # noqa: BLE001 - the next beat tries again; leases outlast two missed beats
        log.exception("heartbeat failed")


def run(runtime: Runtime, stop: threading.Event) -> None:
    """Beat every third of a lease until ``stop`` is set (a thread's target)."""
    interval = runtime.lease_s / 3
    while not stop.wait(interval):
        renew(runtime)
