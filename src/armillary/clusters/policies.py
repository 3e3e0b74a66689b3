"""What attached policies decide: the scaling adjustment and its cooldown, which members go first on a
scale-in (deletion), and where new members run (placement). Pure functions over rows already loaded."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from armillary.clusters.models import ClusterMember, PolicyBinding
from armillary.clusters.schemas import DeletionSpec, PlacementSpec, ScalingSpec
from armillary.domain.states import SystemState

HEALTHY_STATES = frozenset({SystemState.CREATED.value, SystemState.READY.value})


def enabled(bindings: list[PolicyBinding], kind: str) -> list[PolicyBinding]:
    """The enabled bindings of ``kind``, in priority order (lower number first, then policy id)."""
    found = [b for b in bindings if b.enabled and b.policy.kind == kind]
    return sorted(found, key=lambda b: (b.priority, b.policy_id))


def scaling(bindings: list[PolicyBinding], direction: str) -> tuple[PolicyBinding, ScalingSpec] | None:
    """The first enabled scaling policy for ``direction`` ("out" or "in")."""
    for binding in enabled(bindings, "scaling"):
        spec = ScalingSpec.model_validate(binding.policy.spec)
        if spec.direction == direction:
            return binding, spec
    return None


def cooling_until(bindings: list[PolicyBinding], direction: str, now: datetime) -> datetime | None:
    """The end of the cooldown a scale in ``direction`` must respect now, if any."""
    ends = [b.cooldown_until for b in enabled(bindings, "scaling")
            if b.cooldown_until is not None and b.cooldown_until > now
            and ScalingSpec.model_validate(b.policy.spec).direction == direction]
    return max(ends) if ends else None


def deletion(bindings: list[PolicyBinding]) -> DeletionSpec:
    found = enabled(bindings, "deletion")
    return DeletionSpec.model_validate(found[0].policy.spec) if found else DeletionSpec()


@dataclass(frozen=True)
class Candidate:
    member: ClusterMember
    state: str


def victims(candidates: list[Candidate], count: int, spec: DeletionSpec, rng: random.Random | None = None
            ) -> list[ClusterMember]:
    """The ``count`` members a scale-in removes: failed and unfinished ones always first (oldest index
    first among them), then by the policy's criteria."""
    unhealthy = sorted((c for c in candidates if c.state not in HEALTHY_STATES), key=lambda c: c.member.member_index)
    healthy = [c for c in candidates if c.state in HEALTHY_STATES]
    if spec.criteria == "oldest_first":
        healthy.sort(key=lambda c: (c.member.joined_at, c.member.member_index))
    elif spec.criteria == "youngest_first":
        healthy.sort(key=lambda c: (c.member.joined_at, c.member.member_index), reverse=True)
    elif spec.criteria == "oldest_profile_first":
        healthy.sort(key=lambda c: (c.member.profile_revision, c.member.member_index))
    else:
        (rng or random.Random()).shuffle(healthy)
    return [c.member for c in (unhealthy + healthy)[:count]]


def placement(spec: PlacementSpec | None, hypervisor_ids: list[int], existing: list[int | None], count: int
              ) -> list[int | None]:
    """Hypervisors for ``count`` new members: each goes where (members there + 1) / weight is lowest, so
    members spread in proportion to the weights. ``hypervisor_ids`` are the policy's targets resolved, in
    its order; without a policy every member goes to ``None`` (the profile's hypervisor)."""
    if spec is None or not hypervisor_ids:
        return [None] * count
    weights = {h: t.weight for h, t in zip(hypervisor_ids, spec.hypervisors, strict=True)}
    load = Counter(h for h in existing if h in weights)
    chosen: list[int | None] = []
    for _ in range(count):
        best = min(hypervisor_ids, key=lambda h: ((load[h] + 1) / weights[h], hypervisor_ids.index(h)))
        load[best] += 1
        chosen.append(best)
    return chosen
