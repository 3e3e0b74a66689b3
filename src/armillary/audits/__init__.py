"""Audits and remediation (issue 20): checks over the fleet, findings with history, repairs in batches, and the
attention queue for what the repairs could not fix. See ``docs/audits.md``."""
