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
