"""The ``aws`` driver: systems are EC2 instances."""

from __future__ import annotations

from pydantic import Field

from armillary.drivers.base import Driver, StrictModel, secret


class AwsConfig(StrictModel):
    region: str = Field("us-east-1", max_length=63)
    endpoint_url: str | None = Field(None, max_length=1024, description="Override for EC2-compatible endpoints")
    access_key_id: str | None = Field(None, max_length=128)
    secret_access_key: str | None = secret("AWS secret access key", max_length=1024)
    session_token: str | None = secret("Temporary session token", max_length=4096)
    default_subnet: str | None = Field(None, max_length=255)
    default_security_groups: list[str] = Field(default_factory=list)
    default_key_name: str | None = Field(None, max_length=255)


class AwsDriver(Driver):
    name = "aws"
    summary = "Amazon EC2 instances"
    Config = AwsConfig
