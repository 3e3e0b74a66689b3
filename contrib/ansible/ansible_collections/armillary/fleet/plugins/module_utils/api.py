# Copyright: Armillary contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small client of the Armillary REST API (/api/v1), shared by the modules and the inventory plugin.

Only the Python standard library and ``ansible.module_utils.urls.open_url``: nothing to install on
the controller. Errors are ``ArmillaryError`` carrying the HTTP status and the problem+json body.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode, urlsplit
from ansible.module_utils.urls import open_url

TERMINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
# Lifecycle states in which a job is working on the system (the engine refuses other actions then).
BUSY_STATES = ("creating", "provisioning", "deploying", "destroying")
# States in which the system has no machine: its record alone may be deleted.
NO_MACHINE_STATES = ("defined", "destroyed")


class ArmillaryError(Exception):
    """A failed request: ``status`` is the HTTP status (None when the server was not reached)."""

    def __init__(self, message, status=None, problem=None):
        super(ArmillaryError, self).__init__(message)
        self.status = status
        self.problem = problem or {}


def connection_argument_spec():
    """The options every module of the collection takes to reach the server."""
    from ansible.module_utils.basic import env_fallback

    return dict(
        url=dict(type="str", required=True, fallback=(env_fallback, ["ARMILLARY_URL"])),
        token=dict(type="str", required=True, no_log=True, fallback=(env_fallback, ["ARMILLARY_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=30),
    )


class ArmillaryClient:
    """Bearer-token requests to one Armillary server. ``url`` is the server's root (without /api/v1)."""

    def __init__(self, url, token, validate_certs=True, timeout=30):
        root = url.rstrip("/")
        if root.endswith("/api/v1"):
            root = root[: -len("/api/v1")]
        parts = urlsplit(root)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ArmillaryError("url must be an http:// or https:// address of the server, not %r" % url)
        self.origin = "%s://%s" % (parts.scheme, parts.netloc)
        self.base = root + "/api/v1"
        self.token = token
        self.validate_certs = validate_certs
        self.timeout = timeout

    @classmethod
    def from_module(cls, module):
        try:
            return cls(module.params["url"], module.params["token"], module.params["validate_certs"],
                       module.params["timeout"])
        except ArmillaryError as exc:
            module.fail_json(msg=str(exc))

    # ------------------------------------------------------------ requests

    def _absolute(self, path, query=None):
        if path.startswith("http://") or path.startswith("https://"):
            # A ``next`` link: only ever followed on this server (the token goes nowhere else).
            parts = urlsplit(path)
            url = self.origin + parts.path + ("?" + parts.query if parts.query else "")
        else:
            url = self.base + path
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query, doseq=True)
        return url

    def request(self, method, path, body=None, query=None, headers=None):
        """The decoded JSON answer (None for an empty one); ``ArmillaryError`` for a 4xx/5xx or no answer."""
        url = self._absolute(path, query)
        sent = {"Authorization": "Bearer %s" % self.token, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        try:
            response = open_url(url, method=method, data=data, headers=sent, validate_certs=self.validate_certs,
                                timeout=self.timeout, follow_redirects="none")
            raw = response.read()
        except HTTPError as exc:
            raise self._problem(method, url, exc)
        except URLError as exc:
            raise ArmillaryError("cannot reach the Armillary server at %s: %s" % (self.origin, exc.reason))
        except (OSError, ValueError) as exc:
            raise ArmillaryError("cannot reach the Armillary server at %s: %s" % (self.origin, exc))
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise ArmillaryError("%s %s: the answer is not JSON" % (method, url))

    @staticmethod
    def _problem(method, url, exc):
        problem = {}
        try:
            problem = json.loads(exc.read().decode("utf-8"))
        except Exception:  # an answer that is no problem+json: the status says enough
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        detail = problem.get("detail") or problem.get("title") or exc.reason
        return ArmillaryError("%s %s answered %s: %s" % (method, url.split("?")[0], exc.code, detail),
                              status=exc.code, problem=problem)

    def get(self, path, query=None):
        return self.request("GET", path, query=query)

    def post(self, path, body, query=None, headers=None):
        return self.request("POST", path, body=body, query=query, headers=headers)

    def patch(self, path, body):
        return self.request("PATCH", path, body=body)

    def delete(self, path):
        return self.request("DELETE", path)

    def pages(self, path, query=None):
        """Every item of a listing, following the keyset pages' ``next`` links."""
        page = self.get(path, query)
        while True:
            yield from page.get("items", [])
            if not page.get("next"):
                return
            page = self.get(page["next"])

    # ------------------------------------------------------------ systems and jobs

    @staticmethod
    def ref(value):
        return quote(str(value), safe="")

    def find_system(self, hostname, environment):
        """The system ``hostname`` of ``environment``, or None."""
        query = {"environment": environment, "q": hostname, "limit": 1000}
        for system in self.pages("/systems", query):
            if system["hostname"] == hostname:
                return system
        return None

    def system(self, ref):
        return self.get("/systems/%s" % self.ref(ref))

    def start_action(self, system_id, action, params=None, idempotency_key=None, queue=False):
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        query = {"queue": "true"} if queue else None
        return self.post("/systems/%s/actions" % self.ref(system_id), {"action": action, "params": params or {}},
                         query=query, headers=headers)

    def wait_job(self, job_id, timeout, interval=1.0):
        """The job once it has ended; ``ArmillaryError`` when it is still running after ``timeout`` seconds."""
        deadline = time.time() + timeout
        while True:
            job = self.get("/jobs/%s" % int(job_id))
            if job["status"] in TERMINAL_JOB_STATES:
                return job
            if time.time() > deadline:
                raise ArmillaryError("job %s (%s) is still %s after %s seconds"
                                     % (job["id"], job["action"], job["status"], timeout))
            time.sleep(interval)


def job_failure(job, hostname):
    """The message a failed or cancelled job fails a task with (None when it succeeded)."""
    if job["status"] == "succeeded":
        return None
    return "job %s (%s of %s) %s: %s" % (
        job["id"], job["action"], hostname, job["status"], job.get("error") or "no error given")
