"""The ``libvirt`` driver: systems are libvirt domains (KVM/QEMU or any libvirt backend)."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class LibvirtConfig(StrictModel):
    uri: str = Field(..., max_length=1024, description="libvirt URI, e.g. qemu:///system or qemu+ssh://host/system")
    username: str | None = Field(None, max_length=255)
    password: str | None = secret("Password for URIs that authenticate", max_length=1024)
    storage_pool: str = Field("default", max_length=255)
    network: str = Field("default", max_length=255)


class LibvirtDriver(Driver):
    name = "libvirt"
    summary = "Domains on a libvirt host (KVM/QEMU)"
    Config = LibvirtConfig
