"""The ``powerdns`` DNS backend: the PowerDNS Authoritative server's HTTP API.

Reads are ``GET /api/v1/servers/{server_id}/zones/{zone}`` (with ``rrset_name=`` for one name, the whole
zone for :meth:`records`); a change is ONE ``PATCH`` of the zone's rrsets (``REPLACE``/``DELETE``) holding
both the record and its ownership marker, which PowerDNS applies in one transaction. The API has no
prerequisites, so unlike the ``rfc2136`` backend a concurrent writer between the read and the PATCH is
not detected; Armillary serializes its own writes to a name, so this only matters for hand edits made in
that instant. PowerDNS itself refuses a CNAME beside other data (422), which is reported as a conflict.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field

from armillary.drivers.base import secret
from armillary.network.dns.base import (
    BackendConfig,
    DnsBackend,
    DnsConflict,
    DnsRecord,
    DnsRefused,
    DnsUnavailable,
    InvalidRecord,
    NameState,
    marker_name,
)

SECONDARY_KINDS = {"slave", "secondary", "consumer"}


class PowerDnsConfig(BackendConfig):
    api_url: str = Field(..., max_length=1024,
                         description="The API's base URL: the webserver of pdns, e.g. `http://ns1:8081`")
    api_key: str = secret("The API key (pdns.conf `api-key`)", default=..., max_length=1024)
    server_id: str = Field("localhost", max_length=255, description="The server id in API paths")
    verify_tls: bool = Field(True, description="Check the API's TLS certificate (https URLs)")


class PowerDnsBackend(DnsBackend):
    kind: ClassVar[str] = "powerdns"
    Config: ClassVar[type[BackendConfig]] = PowerDnsConfig
    config: PowerDnsConfig

    def __init__(self, config: PowerDnsConfig) -> None:
        super().__init__(config)
        self._client = httpx.Client(base_url=config.api_url.rstrip("/"), timeout=config.timeout,
                                    headers={"X-API-Key": config.api_key}, verify=config.verify_tls)
        self._zone_path = (f"/api/v1/servers/{quote(config.server_id, safe='')}"
                           f"/zones/{quote(self.zone.replace('/', '=2F'), safe='')}")

    def close(self) -> None:
        self._client.close()

    # -- talking to the API

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        what = f"{method} {self.config.api_url.rstrip('/')}{path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise DnsUnavailable(f"PowerDNS API did not answer within {self.config.timeout:g} s: {what}") from exc
        except httpx.HTTPError as exc:
            raise DnsUnavailable(f"PowerDNS API unreachable: {what}: {type(exc).__name__} {exc}") from exc
        if response.is_success:
            return response
        detail = _error_text(response)
        if response.status_code in (401, 403):
            raise DnsRefused(f"PowerDNS API refused the API key ({response.status_code}): {what}")
        if response.status_code == 404:
            raise DnsRefused(f"PowerDNS found no such server or zone ({what}): {detail}; "
                             f"check server_id {self.config.server_id!r} and zone {self.zone}")
        if response.status_code in (400, 422):
            raise InvalidRecord(f"PowerDNS rejected the change: {detail}")
        if response.status_code >= 500 or response.status_code == 429:
            raise DnsUnavailable(f"PowerDNS API failed ({response.status_code}): {what}: {detail}")
        raise DnsRefused(f"PowerDNS API answered {response.status_code}: {what}: {detail}")

    # -- the primitives

    def check(self) -> str:
        """The server and the zone through the API; a secondary zone cannot be changed there. PowerDNS API
        keys may do everything, so reading the zone proves the key may change it too (a PATCH that changes
        nothing would still move the zone's serial)."""
        server = self._request("GET", f"/api/v1/servers/{quote(self.config.server_id, safe='')}").json()
        zone = self._request("GET", self._zone_path, params={"rrsets": "false"}).json()
        kind = str(zone.get("kind", "?"))
        if kind.lower() in SECONDARY_KINDS:
            raise DnsRefused(f"zone {self.zone} is a {kind} zone on PowerDNS: changes belong on its primary")
        return (f"PowerDNS {server.get('version', '?')} at {self.config.api_url} serves {self.zone} "
                f"({kind}, serial {zone.get('serial', '?')}); the API key may update it")

    def _rrsets_at(self, name: str) -> list[dict[str, Any]]:
        """The rrsets at one name (``rrset_name``: the server filters; the check here keeps an older
        server that ignores the parameter correct), without those holding only comments."""
        zone = self._request("GET", self._zone_path, params={"rrset_name": name}).json()
        return [rrset for rrset in zone.get("rrsets", [])
                if rrset["name"].lower() == name and rrset.get("records")]

    def _read_name(self, name: str) -> NameState:
        state = NameState(name)
        for rrset in self._rrsets_at(name):
            record = _record(rrset)
            state.rrsets[record.type] = record
        for rrset in self._rrsets_at(marker_name(name)):
            if rrset["type"] == "TXT":
                state.marker_values = tuple(r["content"] for r in rrset["records"])
                state.marker_ttl = rrset["ttl"]
        return state

    def _write(self, state: NameState, record: DnsRecord | None, type: str,
               marker_values: tuple[str, ...], ttl: int) -> bool:
        marker = marker_name(state.name)
        changes = [_rrset(state.name, type, record.ttl, record.values) if record is not None
                   else {"name": state.name, "type": type, "changetype": "DELETE"}]
        changes.append(_rrset(marker, "TXT", ttl, marker_values) if marker_values
                       else {"name": marker, "type": "TXT", "changetype": "DELETE"})
        try:
            self._request("PATCH", self._zone_path, json={"rrsets": changes})
        except InvalidRecord as exc:
            if "conflicts with" not in str(exc).lower():
                raise
            # PowerDNS's word for CNAME-beside-other-data that appeared since the read.
            raise DnsConflict(state.name, type, None, str(exc)) from exc
        return True

    def _zone_rrsets(self) -> list[DnsRecord]:
        zone = self._request("GET", self._zone_path).json()
        records = [_record(rrset) for rrset in zone.get("rrsets", []) if rrset.get("records")]
        return sorted(records, key=lambda r: (r.name, r.type))


def _rrset(name: str, type: str, ttl: int, values: tuple[str, ...]) -> dict[str, Any]:
    return {"name": name, "type": type, "ttl": ttl, "changetype": "REPLACE",
            "records": [{"content": value, "disabled": False} for value in values]}


def _record(rrset: dict[str, Any]) -> DnsRecord:
    return DnsRecord(rrset["name"], rrset["type"], rrset["ttl"],
                     tuple(record["content"] for record in rrset["records"]))


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]
