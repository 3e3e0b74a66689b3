"""Loading what a request names, with the caller's access checked: shared by the routers.

Not a router. Every router may import from here (and from ``deps``, ``security``, ``views``,
``job_start``, ``audit_trail``), never from another router: a lookup that a second router needs
moves here. ``get_*_for`` answer 404 alike for what is missing and what the caller may not see.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from fastapi import Query, Request, Response
from sqlalchemy import Select, bindparam, exists, select
from sqlalchemy.orm import Session, aliased, lazyload, selectinload
from sqlalchemy.orm.interfaces import ORMOption

from armillary.api.deps import PageParams, get_by_ref, id_of, paginate
from armillary.api.security import Access
from armillary.auth.policy import Permission
from armillary.domain.accounts import User
from armillary.domain.errors import Conflict, InvalidInput, NotFound, UnknownReference
from armillary.domain.models import Environment, Hypervisor, System, SystemLabel, SystemType
from armillary.drivers.base import Driver
from armillary.drivers.registry import UnknownDriver, get_driver

# ---------------------------------------------------------------- names for listings


def hostnames(session: Session, system_ids: Any) -> dict[int, str]:
    """Hostnames of the given systems in one query: a listing names each row's system (one query per row
    made the address and record listings slow)."""
    ids = {i for i in system_ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(System.id, System.hostname).where(System.id.in_(ids))).all())


# ---------------------------------------------------------------- environments, hypervisors, drivers


def get_environment_for(session: Session, ref: str, access: Access) -> Environment:
    """The environment, if the caller may see it (404 alike for missing and hidden ones)."""
    env = get_by_ref(session, Environment, ref, "environment")
    access.check(env, hidden=f"no environment {ref!r}", mutating=False)
    return env


def get_hypervisor_for(session: Session, ref: str, access: Access) -> Hypervisor:
    """The hypervisor, if the caller may see its environment (404 alike for missing and hidden ones)."""
    hypervisor = get_by_ref(session, Hypervisor, ref, "hypervisor")
    access.check(hypervisor.environment, hidden=f"no hypervisor {ref!r}")
    return hypervisor


def driver_for(name: str, field: str = "driver") -> type[Driver]:
    """The installed driver ``name``; an unknown one is invalid input in ``field``."""
    try:
        return get_driver(name)
    except UnknownDriver as exc:
        raise UnknownReference(field, str(exc)) from None


# ---------------------------------------------------------------- systems


# What an access check reads of a system: its row joined to its environment. Its hypervisor, type, owner
# and labels are loaded when used, not with every action or every job followed.
ACCESS_LOADING = (lazyload(System.labels), lazyload(System.hypervisor), lazyload(System.type),
                  lazyload(System.owner).lazyload(User.grants))


def system_by_id(session: Session, system_id: int, options: Sequence[ORMOption] = ()) -> System | None:
    """The system with ``options`` (a route passes a constant), or None."""
    return session.scalars(_system_by_id(tuple(options)), {"b_id": system_id}).first()


def get_system(session: Session, ref: str, access: Access, options: Sequence[ORMOption] = ()) -> System:
    """By id, or by hostname when only one environment the caller can see has it; checked for the route's
    permission (404 alike for missing systems and systems in environments the caller has no role in).
    ``options``: loader options for the system (a route that needs less than the mapping loads)."""
    ref_id = id_of(ref)
    if ref_id is not None:
        system = system_by_id(session, ref_id, options)
        if system is None:
            raise NotFound(f"no system {ref}")
    else:
        query = access.visible(select(System).where(System.hostname == ref.lower()).options(*options),
                               System.environment_id)
        matches = list(session.scalars(query.limit(10)).unique())
        if not matches:
            raise NotFound(f"no system {ref!r}")
        if len(matches) > 1:
            envs = ", ".join(sorted(s.environment.name for s in matches))
            raise Conflict(f"hostname {ref!r} exists in several environments ({envs}); use the system id")
        system = matches[0]
    access.check(system.environment, hidden=f"no system {ref if ref_id is not None else repr(ref)}",
                 owner_id=system.owner_id)
    return system


@functools.lru_cache(maxsize=16)
def _system_by_id(options: tuple[ORMOption, ...]) -> Select[tuple[System]]:
    """A system by id, with ``options``: built once per set of options (a route passes a constant), so
    a request neither builds it nor works out its cache key again (as ``session.get`` with options does)."""
    return select(System).options(*options).where(System.id == bindparam("b_id"))


def resolve_owner(session: Session, system: System, owner: str | None, access: Access, field: str = "owner") -> None:
    """Give ``system`` to ``owner`` (default: the caller). Naming someone else takes operator rights there."""
    if owner is None or owner.lower() == access.principal.name:
        system.owner_id = access.principal.user_id
        return
    access.check(system.environment, hidden="", permission=Permission.ENV_OPERATE)
    user_id = session.scalar(select(User.id).where(User.name == owner.lower()))
    if user_id is None:
        raise UnknownReference(field, f"no user {owner!r}")
    system.owner_id = user_id


def check_hostname_free(session: Session, env_id: int, hostname: str, exclude_id: int | None = None) -> None:
    """409 if another system of the environment has ``hostname``."""
    query = select(System.id).where(System.environment_id == env_id, System.hostname == hostname)
    if exclude_id is not None:
        query = query.where(System.id != exclude_id)
    if session.scalar(query) is not None:
        raise Conflict(
            f"hostname {hostname!r} is already used in this environment",
            errors=[{"field": "hostname", "message": "taken"}],
        )


def system_page(
    session: Session,
    page: PageParams,
    request: Request,
    response: Response,
    access: Access,
    *,
    environment: str | None = None,
    hypervisor: str | None = None,
    type: str | None = None,
    state: str | None = None,
    labels: dict[str, str] | None = None,
    q: str | None = None,
) -> tuple[list[System], str | None]:
    """One page of the systems the caller can see, filtered (GET /systems, GET /groups/{ref}/systems)."""
    # A page's systems share a few environments, hypervisors and types: load each of those once (selectin
    # by the distinct ids) rather than join their full rows, JSON columns and all, onto every system row.
    query = select(System).options(
        selectinload(System.environment), selectinload(System.hypervisor), selectinload(System.type),
        selectinload(System.owner),
    )
    query = access.visible(query, System.environment_id)
    if environment is not None:
        query = query.where(System.environment_id == get_environment_for(session, environment, access).id)
    if hypervisor is not None:
        query = query.where(System.hypervisor_id == get_by_ref(session, Hypervisor, hypervisor, "hypervisor").id)
    if type is not None:
        query = query.where(System.type_id == get_by_ref(session, SystemType, type, "type").id)
    if state is not None:
        query = query.where(System.state == state)
    page_key = None
    if labels:
        # The first label drives the query: joined through the (key, value, system_id) index, its rows come
        # in system id order, so a keyset page reads about `limit` index entries however deep it is. (With
        # `System.id IN (SELECT system_id ...)` SQLite built the list of every matching id on each request:
        # 2 ms on the first page, 9 ms on the last, at 100k systems.) Other labels are checked per row
        # through the (system_id, key) primary key. (system_id, key) is unique, so no row is repeated.
        (first_key, first_value), *more = labels.items()
        driver = aliased(SystemLabel)
        query = query.join(driver, driver.system_id == System.id).where(
            driver.key == first_key, driver.value == first_value
        )
        for key, value in more:
            other = aliased(SystemLabel)
            query = query.where(
                exists().where(other.system_id == driver.system_id, other.key == key, other.value == value)
            )
        page_key = driver.system_id
    if q:
        query = query.where(System.hostname.startswith(q.lower(), autoescape=True))
    return paginate(session, query, System, page, request, response, key=page_key)


# ``?label=key=value``: a key without '=', then '=', then the value (which may be empty). What
# parse_label_filters refuses, stated in the OpenAPI document (its 422 names the field ``label``).
LABEL_FILTER_SCHEMA = {"items": {"type": "string", "pattern": "^[^=]+="}}


def label_filter_query() -> Any:
    return Query([], description="key=value; repeat to require several labels", json_schema_extra=LABEL_FILTER_SCHEMA)


def parse_label_filters(values: list[str]) -> dict[str, str]:
    """``?label=k=v`` query values as a dict; a malformed one is a 422 on ``label``."""
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput("label", f"{item!r} is not key=value")
        labels[key] = value
    return labels
