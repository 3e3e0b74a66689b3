"""The ``vsphere`` driver: systems are VMs cloned from templates in vCenter."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class VsphereConfig(StrictModel):
    url: str = Field(..., max_length=1024, description="vCenter URL")
    user: str = Field(..., max_length=255)
    password: str | None = secret("vCenter password", max_length=1024)
    datacenter: str | None = Field(None, max_length=255)
    cluster: str | None = Field(None, max_length=255)
    resource_pool: str | None = Field(None, max_length=255)
    datastore: str | None = Field(None, max_length=255)
    folder: str | None = Field(None, max_length=1024)
    insecure: bool = Field(False, description="Skip TLS verification")


class VsphereDriver(Driver):
    name = "vsphere"
    summary = "VMware vSphere virtual machines"
    Config = VsphereConfig
