# Copyright: Armillary contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: armillary
short_description: Armillary systems as an Ansible inventory
version_added: "0.1.0"
author:
  - Armillary contributors (!UNKNOWN)
description:
  - Reads the systems of an Armillary server (C(GET /api/v1/systems), every page) and makes each one a host,
    named by its hostname.
  - Groups each host by environment (C(env_<name>)), type (C(type_<name>)) and label (C(label_<key>_<value>));
    characters that are not valid in group names become C(_).
  - Sets C(ansible_host) to the system's first address (systems without an address get none), and as host
    variables the system's resolved variables as C(GET /api/v1/systems/{id}/variables) gives them (global <
    environment < group < type < system), optionally prefixed, plus the facts C(armillary_id), C(armillary_hostname),
    C(armillary_state), C(armillary_environment), C(armillary_type), C(armillary_hypervisor),
    C(armillary_driver), C(armillary_labels) and C(armillary_addresses).
  - Variable keys are made valid Ansible names as Armillary's ansible provisioner makes them (other characters
    become C(_), a leading digit gets a C(_)). A resolved variable named C(ansible_host) overrides the address.
  - The inventory source is a YAML file whose name ends in C(armillary.yml) or C(armillary.yaml).
  - Only the systems the token's account can see are listed (an admin sees all).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it makes the file an Armillary inventory source.
    required: true
    type: str
    choices: [armillary.fleet.armillary]
  url:
    description:
      - Root URL of the Armillary server, for example C(https://armillary.example.org).
    type: str
    required: true
    env:
      - name: ARMILLARY_URL
  token:
    description:
      - A bearer token of the account the inventory reads as (C(armillary token create inventory) makes one).
      - Prefer the environment variable to writing it in the file.
    type: str
    required: true
    env:
      - name: ARMILLARY_TOKEN
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: int
    default: 30
  page_size:
    description: Systems per request (the API's keyset pages are followed to the end).
    type: int
    default: 1000
  environments:
    description: Only the systems of these environments (names or ids). Empty means all.
    type: list
    elements: str
    default: []
  labels:
    description: Only the systems that carry all of these labels, a mapping of label keys to values.
    type: dict
    default: {}
  states:
    description: Only the systems in one of these lifecycle states (for example C(ready)). Empty means all.
    type: list
    elements: str
    default: []
  types:
    description: Only the systems of one of these types (names). Empty means all.
    type: list
    elements: str
    default: []
  variables:
    description: Set the systems' resolved variables as host variables (one request per system).
    type: bool
    default: true
  vars_prefix:
    description: A prefix for the names of the resolved variables, for example C(arm_).
    type: str
    default: ""
  hostname_with_environment:
    description:
      - Name hosts C(<hostname>.<environment>) instead of C(<hostname>). Needed when one hostname is used in
        several of the environments listed; without it such a duplicate is an error.
    type: bool
    default: false
"""

EXAMPLES = r"""
# inventory.armillary.yml: the ready systems of prod and staging
plugin: armillary.fleet.armillary
url: https://armillary.example.org   # or ARMILLARY_URL
# token: from ARMILLARY_TOKEN
environments: [prod, staging]
states: [ready]
labels:
  tier: frontend
vars_prefix: arm_
keyed_groups:
  - key: armillary_labels.role | default('none')
    prefix: role
compose:
  ansible_user: arm_login_user | default('root')
groups:
  big: armillary_hypervisor == 'metal'
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/armillary-inventory
cache_timeout: 300
"""

import re

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible_collections.armillary.fleet.plugins.module_utils.api import ArmillaryClient, ArmillaryError

_INVALID_NAME = re.compile(r"[^A-Za-z0-9_]")


def variable_name(key):
    """A variable key as a valid Ansible variable name (the ansible provisioner's rule)."""
    name = _INVALID_NAME.sub("_", str(key))
    if not name or name[0].isdigit():
        name = "_" + name
    return name


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = "armillary.fleet.armillary"

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        if path.endswith(("armillary.yml", "armillary.yaml")):
            return True
        self.display.vvv("Skipping %s: an armillary inventory file's name ends in armillary.yml or armillary.yaml"
                         % path)
        return False

    # ------------------------------------------------------------ reading the server

    def _fetch(self):
        """The systems (with their resolved variables) as plain data: what the cache keeps."""
        client = ArmillaryClient(self.get_option("url"), self.get_option("token"),
                                 self.get_option("validate_certs"), self.get_option("timeout"))
        query = {"limit": self.get_option("page_size")}
        labels = self.get_option("labels") or {}
        if labels:
            query["label"] = ["%s=%s" % (k, v) for k, v in sorted(labels.items())]
        states = set(self.get_option("states") or [])
        types = set(self.get_option("types") or [])
        systems = []
        for environment in self.get_option("environments") or [None]:
            page_query = dict(query)
            if environment is not None:
                page_query["environment"] = environment
            for system in client.pages("/systems", page_query):
                if states and system["state"] not in states:
                    continue
                if types and (system.get("type") or {}).get("name") not in types:
                    continue
                systems.append(system)
        if self.get_option("variables"):
            for system in systems:
                resolved = client.get("/systems/%s/variables" % system["id"])
                system["resolved_variables"] = dict(
                    (key, item["value"]) for key, item in resolved.get("variables", {}).items()
                )
        return {"systems": systems}

    # ------------------------------------------------------------ building the inventory

    def _group(self, name, host):
        group = self.inventory.add_group(self._sanitize_group_name(name))
        self.inventory.add_child(group, host)

    def _host_name(self, system):
        if self.get_option("hostname_with_environment"):
            return "%s.%s" % (system["hostname"], system["environment"]["name"])
        return system["hostname"]

    def _populate(self, data):
        strict = self.get_option("strict")
        prefix = self.get_option("vars_prefix") or ""
        seen = {}
        for system in data["systems"]:
            host = self._host_name(system)
            environment = system["environment"]["name"]
            if host in seen:
                raise AnsibleError(
                    "the hostname %s is used in the environments %s and %s: set hostname_with_environment: true, "
                    "or list only one of them in environments" % (host, seen[host], environment))
            seen[host] = environment
            self.inventory.add_host(host)

            system_type = (system.get("type") or {}).get("name")
            hypervisor = (system.get("hypervisor") or {}).get("name")
            addresses = list((system.get("machine") or {}).get("addresses") or [])
            labels = system.get("labels") or {}
            hostvars = {
                "armillary_id": system["id"],
                "armillary_hostname": system["hostname"],
                "armillary_state": system["state"],
                "armillary_environment": environment,
                "armillary_type": system_type,
                "armillary_hypervisor": hypervisor,
                "armillary_driver": system.get("driver_name"),
                "armillary_labels": labels,
                "armillary_addresses": addresses,
            }
            if addresses:
                hostvars["ansible_host"] = addresses[0]
            for key, value in sorted((system.get("resolved_variables") or {}).items()):
                hostvars[variable_name(prefix + key)] = value
            for name, value in hostvars.items():
                self.inventory.set_variable(host, name, value)

            self._group("env_%s" % environment, host)
            if system_type:
                self._group("type_%s" % system_type, host)
            for key, value in sorted(labels.items()):
                self._group("label_%s_%s" % (key, value), host)

            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if data is None:
            try:
                data = self._fetch()
            except ArmillaryError as exc:
                raise AnsibleError("armillary inventory: %s" % to_native(exc))
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)
