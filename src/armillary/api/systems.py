"""/api/v1/systems: the machines, their labels and their resolved variables.

A system is addressed by id, or by hostname when that hostname is unique across environments.
Its lifecycle ``state`` is read-only here: only jobs move it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    etag_matches,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import (
    label_filter_query,
    check_hostname_free,
    driver_for,
    get_system,
    parse_label_filters,
    resolve_owner,
    system_page,
)
from armillary.api.security import Access, requires
from armillary.api.views import MACHINE_COLUMNS, system_out
from armillary.auth.policy import Permission
from armillary.domain import quotas
from armillary.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, invalid_from_pydantic
from armillary.domain.models import Environment, Hypervisor, System, SystemLabel, SystemType, utcnow
from armillary.domain.schemas import (
    ImportResult,
    LabelCount,
    MachineProps,
    Page,
    ResolvedVariables,
    SystemCreate,
    SystemImport,
    SystemOut,
    SystemUpdate,
)
from armillary.domain.states import DELETABLE_STATES
from armillary.domain.variables import resolve_system
from armillary.drivers.registry import drivers
from armillary.network import dns_registration

log = logging.getLogger(__name__)
router = APIRouter(prefix="/systems", tags=["systems"])
labels_router = APIRouter(prefix="/labels", tags=["systems"])


# ---------------------------------------------------------------- building and changing systems


def _pick_hypervisor(session: Session, env: Environment, ref: Any, driver_name: str | None) -> Hypervisor | None:
    if ref is not None:
        hypervisor = resolve_ref(session, Hypervisor, ref, "hypervisor", "hypervisor")
        if hypervisor.environment_id != env.id:
            raise InvalidInput(
                "hypervisor", f"hypervisor {hypervisor.name!r} belongs to environment {hypervisor.environment.name!r}, "
                f"not {env.name!r}"
            )
        return hypervisor
    if driver_name is None:
        return None
    if driver_name not in drivers():
        raise InvalidInput(driver_name, f"unknown field (and no driver named {driver_name!r} is installed)")
    found = list(
        session.scalars(select(Hypervisor).where(Hypervisor.environment_id == env.id, Hypervisor.driver == driver_name))
    )
    if len(found) != 1:
        how = "no" if not found else "several"
        raise InvalidInput(
            "hypervisor", f"{how} {driver_name} hypervisors in environment {env.name!r}; name one with 'hypervisor'"
        )
    return found[0]


def _check_driver_props(hypervisor: Hypervisor | None, props: dict[str, Any]) -> dict[str, Any]:
    if hypervisor is None:
        if props:
            raise InvalidInput("driver", "driver properties need a hypervisor (set 'hypervisor')")
        return {}
    try:
        driver_for(hypervisor.driver).SystemProps.model_validate(props)
    except ValidationError as exc:
        raise invalid_from_pydantic("driver", exc) from None
    return props


def _refuse_unless_operator(access: Access, env: Environment, fields: list[str], what: str) -> None:
    """403 naming each of ``fields`` when the caller set or changed them without operating ``env``
    (an operator there, or an admin): they decide where the hypervisor's credentials go or what they run."""
    if not fields or access.principal.operates(env.id):
        return
    raise Forbidden(
        f"only an operator of environment {env.name!r} may set {what}: they decide where the hypervisor's "
        "credentials are sent or what they run",
        errors=[{"field": name, "message": "only an operator of the environment may set this"} for name in fields],
    )


def _check_operator_only(
    access: Access, env: Environment, hypervisor: Hypervisor | None, props: dict[str, Any], before: dict[str, Any]
) -> None:
    """Refuse driver properties the driver marks operator-only (``Driver.operator_only_fields``) set, changed
    or removed by a non-operator. ``before``: the properties the system had on the same hypervisor ({} for a
    new system, or one moved to another hypervisor)."""
    if hypervisor is None:
        return
    guarded = driver_for(hypervisor.driver).operator_only_fields()
    changed = sorted(n for n in guarded if (n in props or n in before) and props.get(n) != before.get(n))
    _refuse_unless_operator(access, env, [f"driver.{name}" for name in changed],
                            f"the {hypervisor.driver} driver properties {', '.join(changed)}")


def _check_addresses(access: Access, env: Environment, machine: MachineProps, before: list[str]) -> None:
    """Addresses are connection targets too (transports reach the machine there with the hypervisor's
    keys): only an operator of ``env`` or an admin may set or change them; drivers report the rest."""
    if "addresses" in machine.model_fields_set and list(machine.addresses) != list(before or []):
        _refuse_unless_operator(access, env, ["machine.addresses"], "a system's addresses")


def _set_machine(system: System, machine: MachineProps, only_given: bool) -> None:
    given = machine.model_dump(exclude_unset=only_given)
    for field, column in MACHINE_COLUMNS.items():
        if field in given:
            setattr(system, column, given[field])


def _set_labels(system: System, labels: dict[str, str]) -> None:
    system.labels = [SystemLabel(key=k, value=v) for k, v in sorted(labels.items())]


def _memo(memo: dict | None, key: tuple, load):
    """Look a reference up once per import batch instead of once per item."""
    if memo is None:
        return load()
    if key not in memo:
        memo[key] = load()
    return memo[key]


def _environment_for_new_system(session: Session, ref: Any, access: Access) -> Environment:
    env = resolve_ref(session, Environment, ref, "environment", "environment")
    access.check_ref(env, "environment", ref, owner_id=access.principal.user_id)
    return env


def build_system(
    session: Session, body: SystemCreate, access: Access, memo: dict | None = None, check_hostname: bool = True
) -> System:
    """A new, unsaved system from validated input; every reference and the caller's rights checked."""
    env = _memo(memo, ("env", body.environment), lambda: _environment_for_new_system(session, body.environment, access))
    hypervisor = _memo(memo, ("hv", env.id, body.hypervisor, body.driver_name),
                       lambda: _pick_hypervisor(session, env, body.hypervisor, body.driver_name))
    system_type = None
    if body.type is not None:
        system_type = _memo(memo, ("type", body.type), lambda: resolve_ref(session, SystemType, body.type, "type", "type"))
    if check_hostname:
        check_hostname_free(session, env.id, body.hostname)
    system = System(
        hostname=body.hostname,
        environment=env,
        hypervisor=hypervisor,
        type=system_type,
        driver_props=_check_driver_props(hypervisor, body.driver),
        variables=body.variables,
    )
    _check_operator_only(access, env, hypervisor, system.driver_props, {})
    _check_addresses(access, env, body.machine, [])
    _set_machine(system, body.machine, only_given=False)
    _set_labels(system, body.labels)
    resolve_owner(session, system, body.owner, access)
    return system


# ---------------------------------------------------------------- listing


@router.get("", response_model=Page[SystemOut])
def list_systems(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    environment: str | None = Query(None, max_length=63, description="Environment id or name"),
    hypervisor: str | None = Query(None, max_length=63, description="Hypervisor id or name"),
    type: str | None = Query(None, max_length=63, description="Type id or name"),
    state: str | None = Query(None, max_length=31),
    label: list[str] = label_filter_query(),
    q: str | None = Query(None, max_length=253, description="Hostname prefix"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """Systems of the environments the caller holds a role in (admins: all)."""
    items, next_url = system_page(
        session, page, request, response, access, environment=environment, hypervisor=hypervisor, type=type, state=state,
        labels=parse_label_filters(label), q=q,
    )
    return {"items": [system_out(s) for s in items], "next": next_url}


# ---------------------------------------------------------------- create, import, read, update, delete


@router.post("", status_code=201, response_model=SystemOut)
def create_system(
    body: SystemCreate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_OWN),
) -> SystemOut:
    """Define a system (state ``defined``), owned by the caller unless ``owner`` names another user.
    Accepts the seed shape too, as JSON or YAML."""
    system = build_system(session, body, access)
    session.add(system)
    session.flush()
    created(response, request, system.id, system.version)
    return system_out(system)


@router.post("/import", status_code=201, response_model=ImportResult)
def import_systems(
    body: SystemImport, session: Session = SessionDep, access: Access = requires(Permission.ENV_OWN)
) -> ImportResult:
    """Define up to 1000 systems at once, all or nothing: one bad item fails the batch, naming the item."""
    memo: dict = {}
    specs: list[SystemCreate] = []
    for index, item in enumerate(body.items):
        try:
            specs.append(SystemCreate.model_validate(item))
        except ValidationError as exc:
            raise invalid_from_pydantic(f"items[{index}]", exc) from None
    taken = {
        (env_id, hostname)
        for env_id, hostname in session.execute(
            select(System.environment_id, System.hostname).where(System.hostname.in_({s.hostname for s in specs}))
        )
    }
    systems: list[System] = []
    seen: dict[tuple[int, str], int] = {}
    for index, spec in enumerate(specs):
        try:
            system = build_system(session, spec, access, memo, check_hostname=False)
            key = (system.environment.id, system.hostname)
            if key in taken:
                raise Conflict(f"hostname {system.hostname!r} is already used in environment "
                               f"{system.environment.name!r}", errors=[{"field": "hostname", "message": "taken"}])
            if key in seen:
                raise Conflict(f"hostname {system.hostname!r} appears twice in this import (also item {seen[key]})",
                               errors=[{"field": "hostname", "message": "duplicate"}])
            seen[key] = index
        except (InvalidInput, Conflict, NotFound, Forbidden) as exc:
            for err in exc.errors or []:
                err["field"] = f"items[{index}].{err['field']}"
            exc.detail = f"items[{index}]: {exc.detail}"
            raise
        systems.append(system)
    session.add_all(systems)
    session.flush()
    return ImportResult(created=len(systems), ids=[s.id for s in systems])


@router.get("/{ref}", response_model=SystemOut)
def read_system(
    ref: str, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> SystemOut | Response:
    system = get_system(session, ref, access)
    set_etag(response, system.version)
    if etag_matches(request.headers.get("if-none-match") or "", system.version):
        return Response(status_code=304, headers={"ETag": response.headers["ETag"]})
    return system_out(system)


@router.patch("/{ref}", response_model=SystemOut)
def update_system(
    ref: str, body: SystemUpdate, request: Request, response: Response, background: BackgroundTasks,
    session: Session = SessionDep, access: Access = requires(Permission.ENV_OWN),
) -> SystemOut:
    """Change a system's record. A new hostname (or new ``dns_*`` variables) of a system with a machine
    re-registers its DNS names once the change is committed (``GET /dns-zones/{id}/check`` shows any
    that could not be)."""
    system = get_system(session, ref, access)
    check_if_match(request, system.version)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("hostname") is not None:
        check_hostname_free(session, system.environment_id, body.hostname, exclude_id=system.id)
        system.hostname = body.hostname
    before = (system.hypervisor, dict(system.driver_props or {}))  # for _check_operator_only
    if "hypervisor" in changes:
        system.hypervisor = _pick_hypervisor(session, system.environment, body.hypervisor, None)
    if "type" in changes:
        system.type = resolve_ref(session, SystemType, body.type, "type", "type") if body.type is not None else None
    if body.machine is not None:
        _check_addresses(access, system.environment, body.machine, system.addresses)
        _set_machine(system, body.machine, only_given=True)
    if body.driver is not None or "hypervisor" in changes:
        system.driver_props = _check_driver_props(
            system.hypervisor, body.driver if body.driver is not None else system.driver_props
        )
        _check_operator_only(access, system.environment, system.hypervisor, system.driver_props,
                             before[1] if system.hypervisor is before[0] else {})
    if body.labels is not None:
        _set_labels(system, body.labels)
    if body.variables is not None:
        system.variables = body.variables
    if body.owner is not None:
        resolve_owner(session, system, body.owner, access)
    if body.machine is not None or body.owner is not None:
        session.flush()
        quotas.resize(session, system)  # a bigger machine is charged now, or refused (403)
    system.updated_at = utcnow()  # a change of labels alone must still bump the version (ETag)
    session.flush()
    if system.provider_id is not None and ("hostname" in changes or "variables" in changes):
        background.add_task(reregister_names, request.app.state.engine.runtime, system.id)
    set_etag(response, system.version)
    return system_out(system)


def reregister_names(runtime: Any, system_id: int) -> None:
    """After the response (the change is committed): the zones follow the new name; a failure is logged."""
    try:
        for line in dns_registration.register(runtime, system_id):
            log.info("system %s: %s", system_id, line)
    except Exception:  # noqa: BLE001 - the record change stands; the zone check shows what is stale
        log.exception("DNS names of system %s not updated", system_id)


@router.delete("/{ref}", status_code=204)
def delete_system(
    ref: str, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ENV_OWN)
) -> Response:
    """Forget a system that runs nowhere (``defined`` or ``destroyed``); others must be destroyed first."""
    system = get_system(session, ref, access)
    check_if_match(request, system.version)
    if system.state not in DELETABLE_STATES:
        raise Conflict(
            f"system {system.hostname!r} is {system.state}; destroy it before deleting its record",
            state=system.state,
        )
    quotas.release(session, system.id)  # a create that never ran may still hold its reservation
    session.delete(system)
    return Response(status_code=204)


@router.get("/{ref}/variables", response_model=ResolvedVariables)
def system_variables(
    ref: str, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)
) -> ResolvedVariables:
    """Each variable's value and where it came from (global < environment < group < type < system)."""
    return resolve_system(session, get_system(session, ref, access))


@labels_router.get("", response_model=list[LabelCount])
def list_labels(
    key: str | None = Query(None, max_length=63), session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> list[LabelCount]:
    """Every label in use with the number of systems carrying it (among the systems the caller can see)."""
    query = select(SystemLabel.key, SystemLabel.value, func.count()).group_by(SystemLabel.key, SystemLabel.value)
    visible = access.principal.visible_env_ids()
    if visible is not None:
        query = query.join(System, System.id == SystemLabel.system_id).where(System.environment_id.in_(visible))
    if key is not None:
        query = query.where(SystemLabel.key == key)
    rows = session.execute(query.order_by(SystemLabel.key, SystemLabel.value).limit(10000))
    return [LabelCount(key=k, value=v, systems=n) for k, v, n in rows]
