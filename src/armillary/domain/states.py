"""The system lifecycle states of ARCHITECTURE.md.

``defined → creating → created → provisioning → ready → (deploying → ready)* → destroying → destroyed``,
with ``error`` reachable from every active state. Transitions are enforced by the job engine;
the inventory API only shows the state.
"""

from __future__ import annotations

from enum import StrEnum


class SystemState(StrEnum):
    DEFINED = "defined"
    CREATING = "creating"
    CREATED = "created"
    PROVISIONING = "provisioning"
    READY = "ready"
    DEPLOYING = "deploying"
    STOPPED = "stopped"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    ERROR = "error"


# States in which nothing runs on a hypervisor, so the inventory record may simply be deleted.
DELETABLE_STATES = frozenset({SystemState.DEFINED, SystemState.DESTROYED})


ACTIVE = frozenset(
    {SystemState.CREATING, SystemState.PROVISIONING, SystemState.DEPLOYING, SystemState.DESTROYING}
)

# action → the states it may start from. Every action may also start from ``error`` where that
# makes sense (the retry of ARCHITECTURE.md), which is listed explicitly.
ALLOWED_FROM: dict[str, frozenset[SystemState]] = {
    "create": frozenset({SystemState.DEFINED, SystemState.DESTROYED, SystemState.ERROR}),
    "stage": frozenset({SystemState.DEFINED, SystemState.DESTROYED, SystemState.ERROR}),
    "provision": frozenset({SystemState.CREATED, SystemState.READY, SystemState.ERROR}),
    "deploy": frozenset({SystemState.READY}),
    # Back to an earlier release; also from error, where a deploy that could not roll back leaves a system.
    "rollback": frozenset({SystemState.READY, SystemState.ERROR}),
    "stop": frozenset({SystemState.CREATED, SystemState.READY}),
    "start": frozenset({SystemState.STOPPED}),
    "reload": frozenset({SystemState.CREATED, SystemState.READY, SystemState.STOPPED, SystemState.ERROR}),
    "destroy": frozenset({SystemState.CREATED, SystemState.READY, SystemState.STOPPED, SystemState.ERROR}),
    "clone": frozenset({SystemState.DEFINED, SystemState.CREATED, SystemState.READY, SystemState.STOPPED}),
}

ACTIONS = tuple(ALLOWED_FROM)

_HINTS = {
    SystemState.DESTROYED: "it was destroyed; create it first",
    SystemState.DEFINED: "it has not been created yet; create it first",
    SystemState.STOPPED: "it is stopped; start it first",
}


class TransitionRefused(ValueError):
    """The action is not allowed from the system's current state; the message says why."""


def check_action(action: str, state: str, *, has_machine: bool = True) -> None:
    """Raise ``TransitionRefused`` when ``action`` may not start from ``state``."""
    current = SystemState(state)
    allowed = ALLOWED_FROM[action]
    if current not in allowed:
        hint = _HINTS.get(current, "another action must bring it to " + " or ".join(sorted(allowed)))
        raise TransitionRefused(f"cannot {action} a system that is {current}: {hint}")
    if action == "provision" and current is SystemState.ERROR and not has_machine:
        raise TransitionRefused("cannot provision: the system has no machine (its create failed); create it first")
