"""Plugin settings with write-only secrets, as hypervisors and DNS zones store them: shared by their routers.

Not a router. The plugin's typed ``Config`` validates the settings; fields marked ``secret`` (see
``armillary.drivers.base.secret``) are split off, encrypted with the server's key and never returned
(``secrets_set`` lists which are held). A change merges into the stored settings; null removes one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from armillary.domain.errors import invalid_from_pydantic
from armillary.domain.secrets import SecretBox


def secret_names(model: type[BaseModel]) -> set[str]:
    return {name for name, info in model.model_fields.items()
            if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")}


def validated_config(model: type[BaseModel], config: dict[str, Any],
                     field: str = "config") -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``config`` against ``model``; return (plain settings, secret settings)."""
    try:
        checked = model.model_validate(config)
    except ValidationError as exc:
        raise invalid_from_pydantic(field, exc) from None
    given = checked.model_dump(mode="json", exclude_unset=True)
    secrets = secret_names(model)
    plain = {k: v for k, v in given.items() if k not in secrets}
    hidden = {k: v for k, v in given.items() if k in secrets and v is not None}
    return plain, hidden


def store_secrets(row: Any, box: SecretBox, secrets: dict[str, Any]) -> None:
    """Encrypt ``secrets`` into ``row.secret_config`` and list their names in ``row.secret_fields``."""
    row.secret_config = box.encrypt(secrets) if secrets else None
    row.secret_fields = sorted(secrets)


def decrypted_config(row: Any, box: SecretBox) -> dict[str, Any]:
    """The full settings a plugin needs to connect: plain and secret together."""
    return {**row.config, **box.decrypt(row.secret_config)}


def merged_config(row: Any, box: SecretBox, changes: dict[str, Any]) -> dict[str, Any]:
    """The stored settings with ``changes`` merged in (null removes a setting)."""
    merged = {**decrypted_config(row, box), **changes}
    return {k: v for k, v in merged.items() if v is not None}
