"""Deploy: push a project's release onto a system, with archives and automatic rollback (issue 7).

``deploy`` = archive → sync → fixperms → install → fixperms again → switch ``current`` → verify, each a
step of the ``deploy`` workflow, so every stage is visible live in the job. ``rollback`` switches
``current`` back to an earlier release.

Layout on the target, per project::

    <root>/<project>/releases/<release-id>/        one directory per release (the project's files)
    <root>/<project>/shared/                       persistent data, linked into each release (``shared``)
    <root>/<project>/current -> releases/<id>      the live release (a relative symlink, switched atomically)
    <root>/<project>/archives/<release-id>/        one per deploy: ``project/`` (a copy of the release that
                                                   was live before it), whatever the post-archive hook
                                                   dumped there, and ``project.failed/`` when it failed

Where the project's configuration comes from
--------------------------------------------
The system's resolved variable ``deploy`` (a mapping; normally set on the system's **type**, so every
system of that type deploys the same project, and overridable by the usual precedence global <
environment < group < type < system), then the **action params** with the same names, each replacing
the variable's key of that name (a shallow merge). The keys (unknown keys are refused)::

    project:      "shop"                       # name of the project directory (letters, digits, . _ -)
    root:         "/srv/apps"                  # absolute path on the target; the project lives in root/project
    source:       {git: "https://…/shop.git", ref: "v2"}   # or {path: "shop-v2.tar.gz"} / {path: "shop/"}
                                               # or {upload: "<sha256>"} (POST /api/v1/sources)
    keep:         5                            # archives (and releases besides current) kept after a success
    shared:       ["var/uploads", "logs"]      # release paths that are links into shared/
    hooks:        {pre_archive: "…", post_archive: "…", rollback: "…"}   # shell text, run by /bin/sh -e -c
    perms:        {owner: "www-data", group: "www-data", dir_mode: "0755", file_mode: "0644",
                   modes: {"bin/run": "0750"}}
    health_check: "curl -fsS http://localhost/health"                      # shell text, after the switch
    tasks:        [{name: stop, run: "…"}, {name: update-code, run: "…", depends_on: [stop]}, …]
    install:      {playbook: "deploy/site.yml", extra_vars: {…}}   # an Ansible playbook of the release
    env:          {KEY: value}                 # extra environment of step files, tasks and hooks
    timeout:      1800                         # seconds one step file, task or hook may run

The action param ``release`` names the release id (default ``<UTC timestamp>-<job id>``).

Sources. ``git``: cloned **on the control host** with ``git clone --depth 1 [--branch ref]`` (``ref`` a
branch or tag), then sent to the target as a tarball through the system's transport (the target needs
neither git nor access to the repository); ``.git`` is left out. ``path``: a directory or a tarball
(``.tar``, ``.tar.gz``, ``.tgz``) on the control host, relative to the server's
``ARMILLARY_DEPLOY_SOURCES_DIR`` (without that setting, path sources are refused; a path never leaves
that directory, symlinks included). A git URL that is a local path or ``file://`` must lie under that
directory too: an API caller cannot make the server ship arbitrary files of the control host.
``upload``: the id (sha256) of a tarball uploaded with ``POST /api/v1/sources`` (``armillary.api.sources``),
stored in the server's data directory as ``<data_dir>/sources/<sha256>.tar.gz``; the sync checks its digest
and its members again (regular files and directories only, relative paths without ``..``) before sending it.

Install. The release's own ordered step files ``.armillary/NN_*.sh`` (two digits, sorted) run one after
the other with ``/bin/sh`` in the release directory, then the project's ``tasks`` (the recipe). Their
environment is built exactly as the script provisioner builds it (``build_env``): the system's resolved
variables (without ``deploy`` itself), then ``env``, then ``ARMILLARY_PROJECT``, ``ARMILLARY_PROJECT_DIR``,
``ARMILLARY_RELEASE``, ``ARMILLARY_RELEASE_DIR``, ``ARMILLARY_SHARED_DIR``, ``ARMILLARY_ARCHIVE_DIR``,
``ARMILLARY_PREVIOUS_RELEASE`` (empty on a first deploy), ``ARMILLARY_SYSTEM_ID``, ``ARMILLARY_HOSTNAME``,
``ARMILLARY_ENVIRONMENT`` and ``ARMILLARY_JOB_ID``. Every output line goes into the job's live log.

Ansible playbook. ``install.playbook`` names a playbook file of the release (a path relative to the
release directory, without ``..``). After the step files, the install step fetches the release from the
target (a tarball made there, links and special files left out), unpacks it in a private directory on
the control host and runs that playbook against the system with the ansible provisioner's machinery
(``AnsibleProvisioner.run_playbook``: the same inventory, pinned host key, generated configuration and
live log; ``roles/`` next to the playbook). Its extra vars: the system's resolved variables (without
``deploy``), then ``env``, then ``install.extra_vars``, then the deploy's own values as lower-case names
(``armillary_release``, ``armillary_release_dir``, ``armillary_project_dir``, ``armillary_shared_dir``,
``armillary_previous_release``…). Ansible's remote temporary directory is ``<root>/<project>/.ansible-tmp``.
A failed task fails the install and the deploy rolls back as for a step file; an unreachable host is
retried while the step has attempts left.

Task graphs (recipes). ``tasks`` is a list of ``{name, run, depends_on}``; tasks run in dependency
order, independent ones in parallel (one thread and one transport connection each), e.g.
``stop → update-code → {post-update, symlink} → start``. A cycle is refused with an error naming it
(``dependency cycle: a → b → a``) when the action is submitted (422, ``check_request``) and again at the
start of the deploy, before anything runs on the target. When a task fails, no further task starts, the
running ones are waited for, and the deploy fails (and rolls back).

Fixperms. ``perms`` is applied to the release and ``shared/`` after the sync and again after the install:
``chown -R owner:group``, ``dir_mode`` on directories and ``file_mode`` on files (when given), then
each ``modes`` entry (a path relative to the release). Nothing declared: nothing done (said in the log).

Switch. ``ln -s releases/<id> .current-<job>`` then ``mv -T`` onto ``current``: a rename, atomic, so
``current`` is at every instant either the old release or the complete new one. The health check, when
declared, runs after the switch in the new ``current``; archives and releases are rotated to ``keep``
only after it passed: ``keep`` archives, and ``keep`` releases besides ``current``, the release it replaced
counting among them (so neither ``current`` nor the release it replaced is ever removed).

Rollback on failure. Any failure after ``prepare`` (a step file, a task, a hook, the health check, the
transport) moves the failed release aside to ``archives/<id>/project.failed``, puts the previous release
back as ``current`` (removes ``current`` on a first deploy), runs the ``rollback`` hook (with
``ARMILLARY_FAILED_RELEASE`` set, e.g. to reload the dump the post-archive hook made) and ends the job
``failed`` with the original error, followed by what the rollback did. The system is ``ready`` again
(on its previous release) after a complete rollback, ``error`` when the rollback itself failed. A
transient failure (connection refused…) while the step has attempts left is retried instead; a step
interrupted by a crash of the server is run again by the next server (every step is idempotent: the
sync rebuilds the release directory, the install runs the step files again, the switch is a rename).

Steps that die without failing. A step whose worker dies (its lease expires) or that overruns its
timeout never reaches the code above on its last attempt. So every deploy step has one attempt more
than it runs its work for: that extra, last attempt does not run the step again but the rollback
(system ``error`` while it runs, so a rollback that itself dies leaves the system ``error``, from which
the ``rollback`` action is allowed), and ends the job ``failed`` saying the step did not complete and
what the rollback did. A step's commands stop ``ROLLBACK_RESERVE_S`` (at most a quarter of the step's
time) before its deadline, so a step file that runs out of time still leaves its own attempt the time to
roll back. A body that lost its lease (it stalled, and another attempt owns the step) does not roll back.

``rollback`` action: ``params.release`` names the release to go back to (default: the newest release
older than ``current``); ``current`` is switched atomically, the ``rollback`` hook runs, then the health
check. Allowed from ``ready`` and from ``error`` (a system whose deploy could not roll back).

On a simulated machine nothing real is deployed: the steps say so and record the release id only.

The modules: ``config`` (the configuration's model, ``merged_config``, ``parse_config``,
``check_request``), ``sources`` (fetching the release's content on the control host; uploaded tarballs),
``remote`` (a step's ``Run`` and the shell commands on the target; ``list_system_releases``),
``taskgraph`` (``run_tasks``), ``stages`` (the steps, the rollback, and the workflows ``deploy`` and
``rollback``: ``WORKFLOWS``, this package's entry point of ``armillary.workflows``).
"""

from armillary.workflows.deploy.config import (
    CONFIG_VARIABLE,
    PARAM_KEYS,
    SOURCES_DIR_ENV,
    ConfigError,
    DeployConfig,
    Hooks,
    Install,
    Perms,
    Source,
    Task,
    check_request,
    merged_config,
    parse_config,
    release_id,
)
from armillary.workflows.deploy.remote import Run, list_releases, list_system_releases
from armillary.workflows.deploy.sources import fetch
from armillary.workflows.deploy.stages import (
    DEPLOY,
    ROLLBACK,
    WORKFLOWS,
    archive,
    deploy_step_spec,
    fixperms,
    install,
    rollback_release,
    run_playbook,
    switch,
    sync,
    verify,
)
from armillary.workflows.deploy.taskgraph import run_tasks

__all__ = [
    "CONFIG_VARIABLE", "DEPLOY", "PARAM_KEYS", "ROLLBACK",
    "SOURCES_DIR_ENV", "WORKFLOWS", "ConfigError", "DeployConfig", "Hooks",
    "Install", "Perms", "Run", "Source", "Task", "archive", "check_request",
    "deploy_step_spec", "fetch", "fixperms", "install", "list_releases",
    "list_system_releases", "merged_config", "parse_config", "release_id", "rollback_release", "run_playbook",
    "run_tasks", "switch", "sync", "verify",
]
