"""Fetching a release's content on the control host through ``armillary.sources`` (the one module
provisioners use too): a git clone, a directory or tarball under ``ARMILLARY_DEPLOY_SOURCES_DIR``, or a
tarball uploaded to ``POST /api/v1/sources``, checked again as it is copied.

``fetch`` leaves the release as one tarball in a work directory, for the sync step to send to the target.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from armillary import sources
from armillary.workflows.deploy.config import Source
from armillary.workflows.deploy.remote import Run


def fetch(run: Run, source: Source, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The release as ``<workdir>/release.tar.gz``, and what to record of where it came from (``commit``,
    ``upload``)."""
    ctx = run.ctx
    roots = sources.Roots.from_settings(ctx.runtime.settings)
    if roots.uploads is None and ctx.runtime.data_dir is not None:  # a runtime without settings (tests, bench)
        roots = replace(roots, uploads=Path(ctx.runtime.data_dir) / sources.UPLOADS_SUBDIR)
    if source.git:
        ctx.log(f"git clone{' --branch ' + source.ref if source.ref else ''} {source.git} (on the control host)")
    spec = sources.Source.model_validate(source.model_dump(exclude_none=True))
    fetched = sources.fetch_tarball(spec, workdir / "release.tar.gz", root=roots.root("deploy_sources"),
                                    uploads=roots.uploads, timeout=run.timeout())
    if fetched.commit:
        ctx.log(f"cloned {source.git} at {fetched.commit[:12]}")
    if fetched.upload:
        ctx.log(f"uploaded source {fetched.upload[:12]} ({fetched.path.stat().st_size} bytes)")
    return fetched.path, fetched.origin()
