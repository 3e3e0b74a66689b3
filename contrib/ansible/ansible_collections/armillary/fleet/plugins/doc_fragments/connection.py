# Copyright: Armillary contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  url:
    description:
      - Root URL of the Armillary server, for example C(https://armillary.example.org).
      - A trailing C(/api/v1) is accepted and ignored.
      - Taken from the environment variable E(ARMILLARY_URL) when not given.
    type: str
    required: true
  token:
    description:
      - A bearer token of the Armillary account the module acts as (C(armillary token create) makes a named,
        long-lived one for scripts).
      - Taken from the environment variable E(ARMILLARY_TOKEN) when not given.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the server's TLS certificate. Only set to V(false) on a test server.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each HTTP answer of the server.
    type: int
    default: 30
"""
