"""The model: ORM tables, schemas, state machines, variable resolution; no I/O beyond the database.

Importing any part of the domain registers every table (the package imports them all here), so
relationships between modules (``System.owner`` is a ``User`` of ``accounts``) always resolve and
no table module has to import another one for its side effect.
"""

from armillary.domain import accounts, jobs, models, uploads  # noqa: F401  (every table registered)
