"""The ``docker`` driver: systems are containers on a Docker API endpoint."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class DockerConfig(StrictModel):
    base_url: str = Field("unix:///var/run/docker.sock", max_length=1024, description="Daemon URL")
    tls_verify: bool = Field(False, description="Verify the daemon's TLS certificate")
    tls_ca_cert: str | None = Field(None, max_length=1024, description="Path of the CA certificate")
    tls_client_cert: str | None = Field(None, max_length=1024, description="Path of the client certificate")
    tls_client_key: str | None = secret("Path or PEM of the client key", max_length=16384)
    network: str | None = Field(None, max_length=255, description="Default network for containers")


class DockerDriver(Driver):
    name = "docker"
    summary = "Containers on a Docker API endpoint (Docker Engine or podman)"
    Config = DockerConfig
