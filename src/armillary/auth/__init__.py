"""Identities, roles, tokens, LDAP, quotas and the audit trail."""
