"""Making a driver instance for a hypervisor: its settings validated, its secrets decrypted."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from armillary.domain.secrets import SecretBox
from armillary.drivers.base import Driver, PermanentDriverError
from armillary.drivers.registry import UnknownDriver, get_driver


def connect(
    *, hypervisor_id: int, name: str, driver: str, config: dict[str, Any], secret_config: str | None,
    secret_box: SecretBox, runtime: Any = None,
) -> Driver:
    """The driver bound to one hypervisor. Raises ``PermanentDriverError`` when it cannot be made."""
    try:
        driver_cls = get_driver(driver)
    except UnknownDriver as exc:
        raise PermanentDriverError(str(exc)) from None
    settings = {**config, **secret_box.decrypt(secret_config)}
    try:
        validated = driver_cls.Config.model_validate(settings)
    except ValidationError as exc:
        raise PermanentDriverError(f"hypervisor {name}: invalid settings: {exc}") from None
    return driver_cls(validated, hypervisor_id=hypervisor_id, runtime=runtime)
