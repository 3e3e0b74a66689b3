"""The ``proxmox`` driver: systems are Proxmox VE guests."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class ProxmoxConfig(StrictModel):
    url: str = Field(..., max_length=1024, description="Proxmox API URL")
    user: str = Field(..., max_length=255, description="user@realm")
    token_name: str | None = Field(None, max_length=255)
    token_value: str | None = secret("API token secret", max_length=1024)
    password: str | None = secret("Password when no token is used", max_length=1024)
    node: str | None = Field(None, max_length=255)
    verify_tls: bool = True


class ProxmoxDriver(Driver):
    name = "proxmox"
    summary = "Proxmox VE virtual machines and containers"
    Config = ProxmoxConfig
