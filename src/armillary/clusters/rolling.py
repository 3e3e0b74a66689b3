"""Rolling profile updates: which members a rollout replaces, in which batches, and how each is replaced.
Pure: no I/O, no clock (the workflow ``cluster-rolling`` carries the plan out).

Our rules, written down:

- **Outdated members** are those made from another profile, or from an older revision of the target
  profile. Adopted members (revision 0: made from no profile) are left as they are.
- **Order**: failed members first (replacing them costs no service), then by index (oldest name first).
- **Replace semantics**, chosen once per rollout when it is accepted:

  - ``create_first`` (the default): a batch's new members are created, and only once they are all
    active are the old ones destroyed. Capacity never drops; the cluster briefly holds up to
    ``max_batch_size`` extra members.
  - ``destroy_first``, when that surge does not fit (the owner's quota or the cluster's ``max`` has no
    room for a batch of extra members): the batch's old members are destroyed, then their replacements
    created. Each batch then takes its healthy members out of service, so it is cut to at most
    ``active - min_in_service`` members.

- **min_in_service**: before a batch's old members are destroyed, the active members outside the batch
  must be at least ``min_in_service``; if they are not (a new member failed, a member died meanwhile),
  the rollout stops there. A request whose ``min_in_service`` already exceeds the active members, or
  (destroy-first) leaves no room for even one healthy member per batch, is refused (422).
"""

from __future__ import annotations

from dataclasses import dataclass

CREATE_FIRST = "create_first"
DESTROY_FIRST = "destroy_first"


class RolloutRefused(ValueError):
    """A rollout that can't keep its promises; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Outdated:
    system_id: int
    index: int
    healthy: bool


def order(outdated: list[Outdated]) -> list[Outdated]:
    """Failed members first, then by index."""
    return sorted(outdated, key=lambda m: (m.healthy, m.index))


def batches(outdated: list[Outdated], active: int, *, max_batch_size: int, min_in_service: int,
            surge_fits: bool) -> tuple[str, list[list[int]]]:
    """The rollout's mode and its batches of member system ids (by the rules in the module docstring)."""
    ordered = order(outdated)
    if not ordered:
        return CREATE_FIRST, []
    if min_in_service > active:
        raise RolloutRefused("min_in_service", f"the cluster has {active} active members, fewer than "
                             f"min_in_service ({min_in_service})")
    if surge_fits:
        size = max_batch_size
        mode = CREATE_FIRST
    else:
        mode = DESTROY_FIRST
        room = active - min_in_service
        if room < 1 and any(m.healthy for m in ordered):
            raise RolloutRefused("min_in_service", f"no room for a batch of extra members (quota or max), so "
                                 f"members are replaced destroy-first, and {active} active members leave none "
                                 f"to take out of service above min_in_service ({min_in_service})")
        size = max(1, min(max_batch_size, room))
    ids = [m.system_id for m in ordered]
    return mode, [ids[i:i + size] for i in range(0, len(ids), size)]
