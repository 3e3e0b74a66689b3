#!/usr/bin/python
# Copyright: Armillary contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: action
short_description: Run a lifecycle action on an Armillary system and wait for its job
version_added: "0.1.0"
description:
  - Starts a lifecycle action (C(create), C(provision), C(deploy), C(rollback), C(destroy), C(stage), C(stop),
    C(start), C(reload), C(clone)) on one system, as C(POST /api/v1/systems/{system}/actions) does, and waits
    for the job to end.
  - The task fails when the job fails or is cancelled, with the job's error, and when the server refuses the
    action (for example C(409) when the system's state does not allow it, or a job is already working on it).
  - An action always reports C(changed); use O(idempotency_key) to make a repeated task return the job the first
    run started instead of starting another.
author:
  - Armillary contributors (!UNKNOWN)
extends_documentation_fragment:
  - armillary.fleet.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode the system is looked up and the task reports it would run the action; nothing is started.
  diff_mode:
    support: none
  platform:
    platforms: all
options:
  system:
    description:
      - The system, by id or by hostname (with O(environment) when the hostname is used in several environments).
    type: str
    required: true
  environment:
    description:
      - Name or id of the system's environment, to find O(system) by hostname in it.
    type: str
  action:
    description:
      - The lifecycle action.
    type: str
    required: true
    choices: [create, provision, deploy, rollback, destroy, stage, stop, start, reload, clone]
  params:
    description:
      - Parameters of the action, for example the C(release) of a C(deploy).
    type: dict
    default: {}
  hostname:
    description:
      - For O(action=clone) only, the new system's hostname.
    type: str
  queue:
    description:
      - Wait behind a job that holds the system instead of failing at once.
    type: bool
    default: false
  idempotency_key:
    description:
      - Sent as the C(Idempotency-Key) header. A second request with the same key returns the job of the first
        (no second job is started).
    type: str
  wait:
    description:
      - Wait for the job to end, and fail when it fails. With V(false) the job is returned as soon as it is accepted.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the job to end before the task fails (the job keeps running).
    type: int
    default: 1800
  poll_interval:
    description:
      - Seconds between two looks at the job.
    type: float
    default: 1.0
notes:
  - The module only talks HTTP to the Armillary server; run it on C(localhost) or delegate it to C(localhost).
seealso:
  - module: armillary.fleet.system
"""

EXAMPLES = r"""
- name: Deploy release v2 on web1 and wait for it
  armillary.fleet.action:
    url: https://armillary.example.org
    token: "{{ armillary_token }}"
    system: web1
    environment: prod
    action: deploy
    params:
      release: v2

- name: Re-provision every host of the play, from the controller (URL and token from the environment)
  armillary.fleet.action:
    system: "{{ armillary_id }}"
    action: provision
  delegate_to: localhost

- name: Start a destroy without waiting for it
  armillary.fleet.action:
    system: old1
    action: destroy
    wait: false
  register: started

- name: Clone web1 as web2
  armillary.fleet.action:
    system: web1
    action: clone
    hostname: web2
"""

RETURN = r"""
job:
  description: The job as C(GET /api/v1/jobs/{id}) shows it, once it has ended (or when accepted, with O(wait=false)).
  returned: success, and when the job failed
  type: dict
  sample:
    id: 41
    action: deploy
    status: succeeded
    error: null
    system_id: 12
    steps: []
system:
  description: The system's record after the job (before the action in check mode).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.armillary.fleet.plugins.module_utils.api import (
    ArmillaryClient,
    ArmillaryError,
    connection_argument_spec,
    job_failure,
)

ACTIONS = ["create", "provision", "deploy", "rollback", "destroy", "stage", "stop", "start", "reload", "clone"]


def find(client, module):
    """The system the task names, or fail saying it does not exist."""
    ref, environment = module.params["system"], module.params["environment"]
    if environment is not None:
        system = client.find_system(ref, environment)
        if system is None and ref.isdigit():
            system = client.system(ref)
        if system is None:
            module.fail_json(msg="no system %s in environment %s" % (ref, environment))
        return system
    return client.system(ref)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        system=dict(type="str", required=True),
        environment=dict(type="str"),
        action=dict(type="str", required=True, choices=ACTIONS),
        params=dict(type="dict", default={}),
        hostname=dict(type="str"),
        queue=dict(type="bool", default=False),
        idempotency_key=dict(type="str", no_log=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
        poll_interval=dict(type="float", default=1.0),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("action", "clone", ["hostname"])],
    )
    params = module.params
    client = ArmillaryClient.from_module(module)
    result = dict(changed=False, job=None, system=None)
    try:
        system = find(client, module)
        result["system"] = system
        result["changed"] = True
        if module.check_mode:
            module.exit_json(**result)
        body = {"action": params["action"], "params": params["params"] or {}}
        if params["hostname"] is not None:
            body["hostname"] = params["hostname"]
        headers = {"Idempotency-Key": params["idempotency_key"]} if params["idempotency_key"] else None
        query = {"queue": "true"} if params["queue"] else None
        job = client.post("/systems/%s/actions" % system["id"], body, query=query, headers=headers)
        result["job"] = job
        if params["wait"]:
            job = client.wait_job(job["id"], params["wait_timeout"], params["poll_interval"])
            result["job"] = job
        if job.get("system_id") is not None:
            try:
                result["system"] = client.system(job["system_id"])
            except ArmillaryError as exc:
                if exc.status != 404:  # a clone's source, or a system deleted since: keep what we had
                    raise
        failure = job_failure(job, system["hostname"]) if params["wait"] else None
        if failure:
            module.fail_json(msg=failure, **result)
        module.exit_json(**result)
    except ArmillaryError as exc:
        module.fail_json(msg=str(exc), status=exc.status, problem=exc.problem, **result)


if __name__ == "__main__":
    main()
