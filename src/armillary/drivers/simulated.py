"""The ``simulated`` driver: a hypervisor that exists only in Armillary's database.

For tests, demos and benchmarks. Honest about it: every system it creates says it is simulated.
"""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel


class SimulatedConfig(StrictModel):
    latency_ms: float = Field(0, ge=0, le=600_000, description="Delay added to every driver call")
    failure_rate: float = Field(0, ge=0, le=1, description="Probability that a call fails transiently")
    fail_at: list[str] = Field(
        default_factory=list, description="Operations that always fail permanently (e.g. ['create'])"
    )
    capacity: int | None = Field(None, ge=0, description="Most machines this hypervisor will hold")


class SimulatedProps(StrictModel):
    image: str = Field("simulated-image", max_length=255)
    flavor: str | None = Field(None, max_length=63)


class SimulatedDriver(Driver):
    name = "simulated"
    summary = "In-database hypervisor for tests, demos and benchmarks (machines are not real)"
    Config = SimulatedConfig
    SystemProps = SimulatedProps
