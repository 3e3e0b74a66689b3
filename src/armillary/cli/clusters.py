"""``armillary cluster``, ``armillary profile``, ``armillary policy`` and ``armillary receiver``: clusters and
what they are made of, over /api/v1/clusters, /profiles, /policies and /receivers. Every cluster operation
prints its job; ``--wait`` follows it live."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.actions import IdempotencyKeyOpt, WaitOpt, post_job, print_started
from armillary.cli.client import ref_path
from armillary.cli.common import (
    OutputOpt,
    client,
    command,
    delete_command,
    fmt,
    list_command,
    parse_pairs,
    show_command,
)
from armillary.cli.output import Column, field, print_items, print_object
from armillary.cli.watch import follow

cluster_app = typer.Typer(help="Clusters: groups of identical systems kept at a desired size.", no_args_is_help=True)
profile_app = typer.Typer(help="Profiles: the system templates clusters make members from.", no_args_is_help=True)
policy_app = typer.Typer(help="Cluster policies: scaling, deletion, placement.", no_args_is_help=True)
receiver_app = typer.Typer(help="Receivers: webhooks (Alertmanager too) that start a cluster operation.",
                           no_args_is_help=True)

CLUSTER_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ENVIRONMENT", field("environment.name")),
    ("PROFILE", field("profile.name")), ("MEMBERS", lambda c: f"{c['active_members']}/{c['desired']}"),
    ("MIN", field("min")), ("MAX", lambda c: c["max"] if c["max"] is not None else "-"),
    ("STATUS", field("status")), ("JOB", field("running_job_id")),
]
MEMBER_COLUMNS: list[Column] = [
    ("ID", field("system_id")), ("HOSTNAME", field("hostname")), ("INDEX", field("index")),
    ("STATE", field("state")), ("HYPERVISOR", field("hypervisor")), ("REVISION", field("profile_revision")),
    ("ATTENTION", lambda m: "yes" if m["needs_attention"] else ""),
]
PROFILE_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ENVIRONMENT", field("environment.name")),
    ("HYPERVISOR", field("hypervisor.name")), ("TYPE", field("type.name")), ("REVISION", field("revision")),
    ("CLUSTERS", lambda p: ", ".join(p["clusters"])),
]
POLICY_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("KIND", field("kind")),
    ("CLUSTERS", lambda p: ", ".join(p["clusters"])),
]
RECEIVER_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("CLUSTER", field("cluster.name")),
    ("OPERATION", field("operation")), ("ON RESOLVE", field("on_resolve")), ("URL", field("url")),
]


def _operate(path: str, body: dict[str, Any], what: str, key: str | None, wait: bool, output: Any,
             method: str = "POST") -> None:
    if method == "DELETE":
        job = client().request("DELETE", path).json()
    else:
        job = post_job(path, body, None, key)
    if wait:
        follow(job, fmt(output))
    else:
        print_started(job, what, fmt(output))


# ---------------------------------------------------------------- clusters

list_command(cluster_app, "/clusters", CLUSTER_COLUMNS, "clusters", "List clusters with their capacity.")
show_command(cluster_app, "/clusters", "Show a cluster: capacity, status, policies, the running job.",
             ref_metavar="CLUSTER")


@command(cluster_app, "create")
def cluster_create(
    name: Annotated[str, typer.Argument(help="Name (part of every member's hostname)", metavar="NAME")],
    profile: Annotated[str, typer.Option("--profile", help="Profile the members are made from")],
    desired: Annotated[int, typer.Option("--desired", help="Members to make now")] = 0,
    min_: Annotated[int, typer.Option("--min", help="Fewer active members is an error")] = 0,
    max_: Annotated[int | None, typer.Option("--max", help="Largest size (default: unlimited)")] = None,
    name_format: Annotated[str, typer.Option("--name-format", help="Member hostnames")] = "{cluster}-{index:03d}",
    concurrency: Annotated[int, typer.Option("--concurrency", help="Member jobs at once")] = 10,
    idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False, output: OutputOpt = None,
) -> None:
    """Create a cluster: `armillary cluster create web --profile web --desired 3 --min 1 --wait`"""
    body = {"name": name, "profile": profile, "desired": desired, "min": min_, "max": max_,
            "name_format": name_format, "concurrency": concurrency}
    _operate("/clusters", {k: v for k, v in body.items() if v is not None}, name, idempotency_key, wait, output)


def _scale(direction: str):
    def run(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
            count: Annotated[int | None, typer.Option("--count", help="Members (default: the policy's)")] = None,
            best_effort: Annotated[bool, typer.Option("--best-effort", help="Clamp to min/max")] = False,
            idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False, output: OutputOpt = None) -> None:
        body = {"best_effort": best_effort, **({"count": count} if count else {})}
        _operate(f"/clusters/{ref_path(cluster)}/scale-{direction}", body, cluster, idempotency_key, wait, output)

    run.__doc__ = f"Scale a cluster {direction} by --count members (default: its scaling policy's adjustment)."
    return run


command(cluster_app, "scale-out")(_scale("out"))
command(cluster_app, "scale-in")(_scale("in"))


@command(cluster_app, "resize")
def cluster_resize(
    cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
    exact: Annotated[int | None, typer.Option("--exact", help="New size")] = None,
    change: Annotated[int | None, typer.Option("--change", help="Add (or, negative, remove) members")] = None,
    percent: Annotated[float | None, typer.Option("--percent", help="Change by a percentage")] = None,
    min_step: Annotated[int, typer.Option("--min-step", help="Smallest change of a percentage")] = 0,
    min_: Annotated[int | None, typer.Option("--min", help="New min")] = None,
    max_: Annotated[int | None, typer.Option("--max", help="New max")] = None,
    best_effort: Annotated[bool, typer.Option("--best-effort", help="Clamp instead of refusing")] = False,
    idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False, output: OutputOpt = None,
) -> None:
    """Resize a cluster: `--exact 10`, `--change -2` or `--percent 30` (30 % of 5 adds 1), and/or --min/--max."""
    given = [(k, v) for k, v in (("exact", exact), ("change", change), ("percent", percent)) if v is not None]
    if len(given) > 1:
        raise typer.BadParameter("give one of --exact, --change and --percent")
    body: dict[str, Any] = {"min_step": min_step, "strict": not best_effort}
    if given:
        body["adjustment_type"], body["number"] = given[0]
    body.update({k: v for k, v in (("min", min_), ("max", max_)) if v is not None})
    _operate(f"/clusters/{ref_path(cluster)}/resize", body, cluster, idempotency_key, wait, output)


@command(cluster_app, "members")
def cluster_members(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")], output: OutputOpt = None) -> None:
    """List a cluster's members (ordinary systems labelled cluster=NAME)."""
    print_items(client().get_json(f"/clusters/{ref_path(cluster)}/members"), MEMBER_COLUMNS, fmt(output),
                empty="No members.")


def _simple(operation: str, doc: str):
    def run(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")], idempotency_key: IdempotencyKeyOpt = None,
            wait: WaitOpt = False, output: OutputOpt = None) -> None:
        _operate(f"/clusters/{ref_path(cluster)}/{operation}", {}, cluster, idempotency_key, wait, output)

    run.__doc__ = doc
    return run


command(cluster_app, "check")(_simple("check", "Ask the driver about every member; dead machines → error."))


@command(cluster_app, "recover")
def cluster_recover(
    cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
    action: Annotated[str, typer.Option("--action", help="recreate (new machine) or reboot (stop+start)")] = "recreate",
    system: Annotated[list[str] | None, typer.Option("--system", help="Only this member; repeat")] = None,
    idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False, output: OutputOpt = None,
) -> None:
    """Recover the failed members: recreate them (default) or reboot them (`--action reboot`)."""
    body: dict[str, Any] = {"action": action, **({"systems": system} if system else {})}
    _operate(f"/clusters/{ref_path(cluster)}/recover", body, cluster, idempotency_key, wait, output)


@command(cluster_app, "update-profile")
def cluster_update_profile(
    cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
    profile: Annotated[str | None, typer.Option("--profile", help="Roll to this profile (default: its own)")] = None,
    version: Annotated[int | None, typer.Option("--version", help="The profile revision you expect")] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Members replaced at once")] = 1,
    min_in_service: Annotated[int, typer.Option("--min-in-service", help="Active members never fewer")] = 0,
    pause: Annotated[int, typer.Option("--pause", help="Seconds between batches")] = 0,
    idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False, output: OutputOpt = None,
) -> None:
    """Rolling update: replace the members made from an older profile revision (or another profile), batch
    after batch: `armillary cluster update-profile web --max-batch-size 2 --min-in-service 3 --wait`"""
    body: dict[str, Any] = {"max_batch_size": max_batch_size, "min_in_service": min_in_service,
                            "pause_seconds": pause}
    body.update({k: v for k, v in (("profile", profile), ("version", version)) if v is not None})
    _operate(f"/clusters/{ref_path(cluster)}/update-profile", body, cluster, idempotency_key, wait, output)


SCHEDULE_COLUMNS: list[Column] = [
    ("NAME", field("name")), ("CRON", field("cron")), ("TZ", field("timezone")), ("OPERATION", field("operation")),
    ("NEXT", field("next_run_at")), ("LAST", field("last_outcome")), ("REASON", field("last_reason")),
]


@command(cluster_app, "schedule")
def cluster_schedule(
    cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
    name: Annotated[str, typer.Argument(metavar="NAME")],
    cron: Annotated[str, typer.Option("--cron", help="Five-field cron, e.g. '0 8 * * 1-5'")],
    operation: Annotated[str, typer.Option("--operation", help="scale_out, scale_in, resize, check, recover, "
                                           "update_profile")],
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE; repeat")] = None,
    timezone: Annotated[str, typer.Option("--timezone")] = "UTC",
    output: OutputOpt = None,
) -> None:
    """Run an operation on a schedule: `armillary cluster schedule web morning --cron '0 8 * * *'
    --operation resize --param number=10` (a tick that finds the cluster busy is skipped, and says why)."""
    body = {"name": name, "cron": cron, "timezone": timezone, "operation": operation,
            "params": parse_pairs(param, "--param")}
    print_object(client().post_json(f"/clusters/{ref_path(cluster)}/schedules", body), fmt(output))


@command(cluster_app, "schedules")
def cluster_schedules(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")], output: OutputOpt = None) -> None:
    """List a cluster's schedules with the outcome of their last tick."""
    print_items(client().get_json(f"/clusters/{ref_path(cluster)}/schedules"), SCHEDULE_COLUMNS, fmt(output),
                empty="No schedules.")


@command(cluster_app, "unschedule")
def cluster_unschedule(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
                       name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Delete one of a cluster's schedules."""
    client().request("DELETE", f"/clusters/{ref_path(cluster)}/schedules/{ref_path(name)}")
    typer.echo(f"Schedule {name} of cluster {cluster} deleted.", err=True)


@command(cluster_app, "delete")
def cluster_delete(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")], wait: WaitOpt = False,
                   output: OutputOpt = None) -> None:
    """Destroy every member, then the cluster."""
    _operate(f"/clusters/{ref_path(cluster)}", {}, cluster, None, wait, output, method="DELETE")


@command(cluster_app, "attach")
def cluster_attach(cluster: Annotated[str, typer.Argument(metavar="CLUSTER")],
                   policy: Annotated[str, typer.Argument(metavar="POLICY")],
                   priority: Annotated[int, typer.Option("--priority")] = 50, output: OutputOpt = None) -> None:
    """Attach a policy to a cluster."""
    print_object(client().post_json(f"/clusters/{ref_path(cluster)}/policies",
                                    {"policy": policy, "priority": priority}), fmt(output))


# ---------------------------------------------------------------- profiles, policies, receivers

list_command(profile_app, "/profiles", PROFILE_COLUMNS, "profiles", "List profiles.")
show_command(profile_app, "/profiles", "Show a profile.", ref_metavar="PROFILE")
delete_command(profile_app, "/profiles", "profile", "Delete a profile no cluster uses.", ref_metavar="PROFILE")


@command(profile_app, "create")
def profile_create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    environment: Annotated[str, typer.Option("--env", help="Environment")],
    hypervisor: Annotated[str | None, typer.Option("--hypervisor")] = None,
    type_: Annotated[str | None, typer.Option("--type")] = None,
    cpu: Annotated[int | None, typer.Option("--cpu")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="e.g. 2G")] = None,
    driver: Annotated[list[str] | None, typer.Option("--driver", help="KEY=VALUE driver property; repeat")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE; repeat")] = None,
    output: OutputOpt = None,
) -> None:
    """Create a profile: `armillary profile create web --env dev --hypervisor sim1 --cpu 2 --memory 2G`"""
    machine = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    body = {"name": name, "environment": environment, "hypervisor": hypervisor, "type": type_, "machine": machine,
            "driver": parse_pairs(driver, "--driver"), "labels": parse_pairs(label, "--label", yaml_values=False)}
    print_object(client().post_json("/profiles", {k: v for k, v in body.items() if v is not None}), fmt(output))


list_command(policy_app, "/policies", POLICY_COLUMNS, "policies", "List cluster policies.")
show_command(policy_app, "/policies", "Show a policy.", ref_metavar="POLICY")
delete_command(policy_app, "/policies", "policy", "Delete a policy no cluster uses.", ref_metavar="POLICY")


@command(policy_app, "create")
def policy_create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    kind: Annotated[str, typer.Option("--kind", help="scaling, deletion or placement")],
    spec: Annotated[list[str] | None, typer.Option("--spec", help="KEY=VALUE of the spec; repeat")] = None,
    output: OutputOpt = None,
) -> None:
    """Create a policy: `armillary policy create out2 --kind scaling --spec direction=out --spec number=2
    --spec cooldown=300`"""
    body = {"name": name, "kind": kind, "spec": parse_pairs(spec, "--spec")}
    print_object(client().post_json("/policies", body), fmt(output))


list_command(receiver_app, "/receivers", RECEIVER_COLUMNS, "receivers", "List receivers.")
show_command(receiver_app, "/receivers", "Show a receiver (its secret is never shown again).",
             ref_metavar="RECEIVER")
delete_command(receiver_app, "/receivers", "receiver", "Delete a receiver.", ref_metavar="RECEIVER")


@command(receiver_app, "create")
def receiver_create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    cluster: Annotated[str, typer.Option("--cluster")],
    operation: Annotated[str, typer.Option("--operation", help="scale_out, scale_in, resize, check, recover")],
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE; repeat")] = None,
    on_resolve: Annotated[str | None, typer.Option("--on-resolve", help="Operation for resolved alerts")] = None,
    rate_limit: Annotated[int, typer.Option("--rate-limit", help="Calls a minute")] = 6,
    output: OutputOpt = None,
) -> None:
    """Create a receiver; prints its URL and secret (shown this once)."""
    body = {"name": name, "cluster": cluster, "operation": operation, "params": parse_pairs(param, "--param"),
            "on_resolve": on_resolve, "rate_limit": rate_limit}
    print_object(client().post_json("/receivers", {k: v for k, v in body.items() if v is not None}), fmt(output))


@command(receiver_app, "rotate")
def receiver_rotate(receiver: Annotated[str, typer.Argument(metavar="RECEIVER")], output: OutputOpt = None) -> None:
    """A new secret (printed this once); the old one stops working at once."""
    print_object(client().post_json(f"/receivers/{ref_path(receiver)}/rotate", {}), fmt(output))


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(profile_app, name="profile")
    app.add_typer(policy_app, name="policy")
    app.add_typer(receiver_app, name="receiver")
