"""Capacity maths: how many members a cluster should have after an adjustment. Pure: no I/O, no clock.

Resize requests, scale-out/in and scaling policies all go through ``new_size`` (one rule, one place).

Our rule, written down because Senlin's documentation and code disagreed on it:

- ``exact``: the new size is ``number``.
- ``change``: the new size is ``current + number``.
- ``percent``: the change is ``number × current / 100``. When its magnitude is below 1 (and not 0) it
  rounds *away* from zero (to ±1), so a percentage step always moves a non-empty cluster; otherwise it
  truncates *toward* zero. 30 % of 5 is 1.5 → **1** (Senlin's documentation says 2, its code gives 1;
  we pin 1), 10 % of 5 is 0.5 → 1, -30 % of 5 → -1.
- ``min_step`` (percent only) then raises a non-zero change's magnitude to at least ``min_step``.
- The result is checked against ``min``/``max`` (``max`` None: unlimited, but never above the hard cap
  of 10,000): with ``strict`` a violation is an error naming the bound; without, it is clamped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

HARD_MAX_SIZE = 10_000

AdjustmentType = Literal["exact", "change", "percent"]


class CapacityError(ValueError):
    """An adjustment that breaks a bound under ``strict`` (or asks for nonsense); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Bounds:
    min: int = 0
    max: int | None = None  # None: unlimited (the hard cap still holds)

    @property
    def upper(self) -> int:
        return HARD_MAX_SIZE if self.max is None else min(self.max, HARD_MAX_SIZE)


def percent_change(current: int, number: float, min_step: int = 0) -> int:
    """The change ``number`` percent of ``current`` makes, by the rule in the module docstring."""
    raw = number * current / 100
    if raw == 0:
        return 0
    change = int(math.copysign(1, raw)) if abs(raw) < 1 else math.trunc(raw)
    if min_step and abs(change) < min_step:
        change = int(math.copysign(min_step, change))
    return change


def new_size(current: int, adjustment_type: AdjustmentType, number: float, *, min_step: int = 0,
             bounds: Bounds = Bounds(), strict: bool = True) -> int:
    """The size a cluster of ``current`` members should have after the adjustment."""
    if adjustment_type == "exact":
        if number != int(number):
            raise CapacityError("number", "an exact size is a whole number")
        target = int(number)
    elif adjustment_type == "change":
        if number != int(number):
            raise CapacityError("number", "a change is a whole number of members")
        target = current + int(number)
    elif adjustment_type == "percent":
        target = current + percent_change(current, number, min_step)
    else:
        raise CapacityError("adjustment_type", f"unknown adjustment type {adjustment_type!r}")
    return check_bounds(target, bounds, strict)


def check_bounds(target: int, bounds: Bounds, strict: bool) -> int:
    """``target`` within ``bounds``: clamped, or (``strict``) refused naming the bound it breaks."""
    check_limits(bounds)
    if target < bounds.min:
        if strict:
            raise CapacityError("min", f"the new size {target} would be below the cluster's min ({bounds.min})")
        return bounds.min
    if target > bounds.upper:
        if strict:
            which = "max" if bounds.max is not None and bounds.max <= HARD_MAX_SIZE else "hard cap"
            raise CapacityError("max", f"the new size {target} would be above the cluster's {which} ({bounds.upper})")
        return bounds.upper
    return target


def check_limits(bounds: Bounds) -> None:
    """min and max themselves: non-negative, min ≤ max, max ≤ the hard cap."""
    if bounds.min < 0:
        raise CapacityError("min", "must be 0 or more")
    if bounds.max is not None:
        if bounds.max > HARD_MAX_SIZE:
            raise CapacityError("max", f"must be at most {HARD_MAX_SIZE} (the hard cap)")
        if bounds.max < bounds.min:
            raise CapacityError("max", f"must be at least min ({bounds.min})")
