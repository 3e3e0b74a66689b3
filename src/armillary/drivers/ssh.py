"""The ``ssh`` driver: systems are machines that already exist, reached over SSH."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class SshConfig(StrictModel):
    default_user: str = Field("root", max_length=63)
    port: int = Field(22, ge=1, le=65535)
    private_key: str | None = secret("PEM private key used to log in", max_length=32768)
    password: str | None = secret("Password used when no key is given", max_length=1024)
    connect_timeout: float = Field(10, gt=0, le=300)


class SshDriver(Driver):
    name = "ssh"
    summary = "Existing machines or bare metal reached over SSH"
    Config = SshConfig
