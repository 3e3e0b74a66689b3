"""Task graphs (the project's ``tasks``, its recipe): each task once its dependencies succeeded,
independent ones in parallel, one thread and one transport connection each.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from armillary.engine.workflows import CycleError, check_acyclic
from armillary.failures import PermanentFailure
from armillary.workflows.deploy.config import Task
from armillary.workflows.deploy.remote import Run, sh


def run_tasks(run: Run, tasks: list[Task], env: dict[str, str], cwd: str) -> list[str]:
    """The task graph: each task once its dependencies succeeded, independent ones in parallel threads."""
    ctx = run.ctx
    try:
        check_acyclic({task.name: list(task.depends_on) for task in tasks})
    except CycleError as exc:
        raise PermanentFailure(str(exc)) from None
    by_name = {task.name: task for task in tasks}
    done: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(task: Task) -> None:
        ctx.log(f"task {task.name} starting", task=task.name)
        started = time.monotonic()
        with run.transport() as transport:
            sh(run, transport, task.run, what=f"task {task.name}", env={**env, "ARMILLARY_TASK": task.name},
               cwd=cwd)
        ctx.log(f"✔ task {task.name} done in {time.monotonic() - started:.1f}s", task=task.name)

    pending = dict(by_name)
    running: dict[Any, str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(tasks)), thread_name_prefix=f"deploy-{ctx.job_id}") as pool:
        while pending or running:
            if not failures:
                ready = [t for t in pending.values() if set(t.depends_on) <= set(done)]
                for task in ready:
                    del pending[task.name]
                    running[pool.submit(one, task)] = task.name
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                error = future.exception()
                with lock:
                    if error is None:
                        done.append(name)
                    else:
                        failures.append(f"{name}: {error}")
    if failures:
        skipped = sorted(pending)
        raise PermanentFailure("task " + failures[0] + (f"\n(not run: {', '.join(skipped)})" if skipped else ""))
    return done
