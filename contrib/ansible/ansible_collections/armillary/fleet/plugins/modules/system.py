#!/usr/bin/python
# Copyright: Armillary contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: system
short_description: Manage a system of the Armillary inventory, and optionally its machine
version_added: "0.1.0"
description:
  - Creates or updates the record of a system (a machine Armillary manages) so that it matches the
    given options, idempotently. Only the options that are given are managed; the others are left as they are.
  - With O(state=created), O(state=staged) or O(state=destroyed) it also runs the lifecycle action that
    brings the machine there (C(create), C(stage) or C(provision), C(destroy)) and waits for its job.
  - With O(state=absent) it destroys the machine, when there is one, and deletes the record.
  - A system is found by its O(hostname) in its O(environment).
author:
  - Armillary contributors (!UNKNOWN)
extends_documentation_fragment:
  - armillary.fleet.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: all
options:
  hostname:
    description:
      - The system's hostname, unique in its environment.
    type: str
    required: true
  environment:
    description:
      - Name or id of the environment the system belongs to. It cannot be changed once the system exists.
    type: str
    required: true
  hypervisor:
    description:
      - Name or id of the hypervisor the system's machine runs on.
    type: str
  type:
    description:
      - Name or id of the system's type (its provisioner and the type's variables).
    type: str
  machine:
    description:
      - Machine properties. Only the sub-options that are given are managed.
    type: dict
    suboptions:
      user:
        description: The login user on the machine.
        type: str
      os:
        description: The operating system (image) the driver installs.
        type: str
      cpu:
        description: Number of CPUs.
        type: int
      memory:
        description: Memory in MiB.
        type: int
      disk:
        description: Disk size in GiB.
        type: int
      addresses:
        description:
          - IP addresses of the machine. Only operators of the environment and admins may set them.
        type: list
        elements: str
  driver:
    description:
      - Driver properties (checked by the hypervisor's driver), for example the C(host) and C(port) of a system on
        an C(ssh) hypervisor. Replaces all of the system's driver properties when given.
    type: dict
  labels:
    description:
      - The system's labels. Replaces all of its labels when given (V({}) removes them all).
    type: dict
  variables:
    description:
      - The system's own variables (the strongest level of Armillary's variable precedence).
        Replaces all of them when given.
    type: dict
  owner:
    description:
      - Name of the user the system belongs to (default for a new system is the token's user; only
        operators and admins may name another).
    type: str
  state:
    description:
      - V(present) makes the record match; nothing runs on a hypervisor.
      - V(created) also runs C(create) when the system has no machine (it is C(defined) or C(destroyed)).
      - V(staged) also runs C(stage) (create and provision) when it has no machine, or C(provision) when it
        is C(created) but not provisioned yet.
      - V(destroyed) also runs C(destroy) when it has a machine; the record stays.
      - V(absent) destroys the machine when there is one, then deletes the record.
      - A system in C(error) is retried by V(created) and V(staged) (the action is run again) and destroyed by V(destroyed).
      - When a job is working on the system (it is C(creating), C(provisioning), C(deploying) or C(destroying))
        and an action would be needed, the module fails saying so.
    type: str
    choices: [present, absent, created, staged, destroyed]
    default: present
  wait:
    description:
      - Wait for the action's job to end, and fail when it fails. With V(false) the job is started and
        returned at once. O(state=absent) always waits for the destroy before deleting the record.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the job.
    type: int
    default: 1800
notes:
  - The module runs wherever the task runs; usually delegated to C(localhost) or in a play on C(localhost),
    as it only talks HTTP to the Armillary server.
seealso:
  - module: armillary.fleet.action
  - plugin: armillary.fleet.armillary
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Define web1 in dev, on the hypervisor metal, with labels
  armillary.fleet.system:
    url: https://armillary.example.org
    token: "{{ armillary_token }}"
    hostname: web1
    environment: dev
    hypervisor: metal
    type: nginx
    machine:
      cpu: 2
      memory: 2048
    labels:
      tier: frontend
    variables:
      app_port: 8080

- name: Create and provision it, waiting for the job (URL and token from ARMILLARY_URL/ARMILLARY_TOKEN)
  armillary.fleet.system:
    hostname: web1
    environment: dev
    state: staged

- name: Destroy its machine and forget it
  armillary.fleet.system:
    hostname: web1
    environment: dev
    state: absent
"""

RETURN = r"""
system:
  description: The system's record after the task (as C(GET /api/v1/systems/{id}) shows it); null when it is absent.
  returned: always
  type: dict
  sample:
    id: 12
    hostname: web1
    environment: {id: 1, name: dev}
    hypervisor: {id: 3, name: metal}
    type: {id: 2, name: nginx}
    machine: {cpu: 2, memory: 2048, disk: null, os: null, user: null, addresses: ["10.1.2.5"]}
    labels: {tier: frontend}
    variables: {app_port: 8080}
    state: ready
    version: 4
job:
  description: The job of the action the task ran (its C(status), C(error), C(steps)...); null when none ran.
  returned: always
  type: dict
  sample:
    id: 41
    action: stage
    status: succeeded
    error: null
actions:
  description: The lifecycle actions the task ran (or, in check mode, would run), in order.
  returned: always
  type: list
  elements: str
  sample: [stage]
"""

import copy

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.armillary.fleet.plugins.module_utils.api import (
    BUSY_STATES,
    NO_MACHINE_STATES,
    ArmillaryClient,
    ArmillaryError,
    connection_argument_spec,
    job_failure,
)

MACHINE_FIELDS = ("user", "os", "cpu", "memory", "disk", "addresses")


def ref_matches(current, wanted):
    """Whether a reference (name or id) names ``current`` (a ``{id, name}`` object, or None)."""
    if current is None:
        return wanted is None
    return wanted is not None and str(wanted) in (current["name"], str(current["id"]))


def desired_record(params):
    """The fields of the record the task manages, as the API takes them (only what was given)."""
    record = {}
    for field in ("hypervisor", "type", "driver", "variables", "owner"):
        if params[field] is not None:
            record[field] = params[field]
    if params["labels"] is not None:
        record["labels"] = dict((str(k), str(v)) for k, v in params["labels"].items())
    machine = dict((k, v) for k, v in (params["machine"] or {}).items() if v is not None)
    if machine:
        record["machine"] = machine
    return record


def record_changes(system, record):
    """The PATCH body that brings ``system`` to ``record``: only the fields that differ."""
    changes = {}
    for field in ("hypervisor", "type"):
        if field in record and not ref_matches(system[field], record[field]):
            changes[field] = record[field]
    for field in ("driver", "labels", "variables", "owner"):
        if field in record and record[field] != system.get(field):
            changes[field] = record[field]
    machine = dict((k, v) for k, v in record.get("machine", {}).items() if system["machine"].get(k) != v)
    if machine:
        changes["machine"] = machine
    return changes


def view(system):
    """What the diff shows of a system (None when it does not exist)."""
    if system is None:
        return {}
    shown = dict((k, system.get(k)) for k in ("hostname", "driver", "labels", "variables", "owner", "state"))
    shown["environment"] = system["environment"]["name"]
    shown["hypervisor"] = system["hypervisor"]["name"] if system.get("hypervisor") else None
    shown["type"] = system["type"]["name"] if system.get("type") else None
    shown["machine"] = dict((k, system["machine"].get(k)) for k in MACHINE_FIELDS)
    return shown


def planned_view(before, params, record):
    """The diff's ``after`` in check mode: ``before`` with the managed fields as asked."""
    after = copy.deepcopy(view(before)) if before else {
        "hostname": params["hostname"], "environment": params["environment"], "hypervisor": None, "type": None,
        "driver": {}, "labels": {}, "variables": {}, "owner": None, "state": "defined",
        "machine": dict((k, None) for k in MACHINE_FIELDS),
    }
    for field, value in record.items():
        if field == "machine":
            after["machine"].update(value)
        else:
            after[field] = value
    return after


def actions_for(state, system_state):
    """The lifecycle actions that bring a system in ``system_state`` to the wanted ``state``."""
    if state == "created" and system_state in ("defined", "destroyed", "error"):
        return ["create"]
    if state == "staged":
        if system_state in ("defined", "destroyed", "error"):
            return ["stage"]
        if system_state == "created":
            return ["provision"]
    if state in ("destroyed", "absent") and system_state not in NO_MACHINE_STATES:
        return ["destroy"]
    return []


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        hostname=dict(type="str", required=True),
        environment=dict(type="str", required=True),
        hypervisor=dict(type="str"),
        type=dict(type="str"),
        machine=dict(
            type="dict",
            options=dict(
                user=dict(type="str"),
                os=dict(type="str"),
                cpu=dict(type="int"),
                memory=dict(type="int"),
                disk=dict(type="int"),
                addresses=dict(type="list", elements="str"),
            ),
        ),
        driver=dict(type="dict"),
        labels=dict(type="dict"),
        variables=dict(type="dict"),
        owner=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "created", "staged", "destroyed"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    client = ArmillaryClient.from_module(module)
    state = params["state"]
    result = dict(changed=False, system=None, job=None, actions=[])

    try:
        before = client.find_system(params["hostname"], params["environment"])
        record = desired_record(params)

        if state == "absent":
            if before is None:
                module.exit_json(**result)
            result["changed"] = True
            result["actions"] = actions_for(state, before["state"])
            result["diff"] = dict(before=view(before), after={})
            if module.check_mode:
                result["system"] = before
                module.exit_json(**result)
            system = before
            if result["actions"]:
                if system["state"] in BUSY_STATES:
                    module.fail_json(msg="system %s is %s: a job is working on it; try again once it has ended"
                                     % (params["hostname"], system["state"]), system=system)
                job = client.start_action(system["id"], "destroy")
                job = client.wait_job(job["id"], params["wait_timeout"])
                result["job"] = job
                failure = job_failure(job, params["hostname"])
                if failure:
                    module.fail_json(msg=failure, **result)
            client.delete("/systems/%s" % system["id"])
            module.exit_json(**result)

        if before is None:
            body = dict(record, hostname=params["hostname"], environment=params["environment"])
            result["changed"] = True
            if module.check_mode:
                result["actions"] = actions_for(state, "defined")
                result["diff"] = dict(before={}, after=planned_view(None, params, record))
                module.exit_json(**result)
            system = client.post("/systems", body)
        else:
            changes = record_changes(before, record)
            system = before  # in check mode it stays as it is; its state decides the actions all the same
            if changes:
                result["changed"] = True
                if not module.check_mode:
                    system = client.patch("/systems/%s" % before["id"], changes)

        actions = actions_for(state, system["state"])
        result["actions"] = actions
        if actions:
            result["changed"] = True
            if system["state"] in BUSY_STATES:
                module.fail_json(msg="system %s is %s: a job is working on it; try again once it has ended"
                                 % (params["hostname"], system["state"]), system=system)
        if module.check_mode:
            result["system"] = before
            result["diff"] = dict(before=view(before), after=planned_view(before, params, record))
            module.exit_json(**result)

        for action in actions:
            job = client.start_action(system["id"], action)
            if params["wait"]:
                job = client.wait_job(job["id"], params["wait_timeout"])
            result["job"] = job
            if params["wait"]:
                failure = job_failure(job, params["hostname"])
                if failure:
                    result["system"] = client.system(system["id"])
                    module.fail_json(msg=failure, **result)
        if actions:
            system = client.system(system["id"])
        result["system"] = system
        result["diff"] = dict(before=view(before), after=view(system))
        module.exit_json(**result)
    except ArmillaryError as exc:
        module.fail_json(msg=str(exc), status=exc.status, problem=exc.problem, **result)


if __name__ == "__main__":
    main()
