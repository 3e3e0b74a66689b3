"""The chat bot (issue 18): one command grammar for every chat network, adapters found by entry point.

``armillary bot`` (or ``armillary serve`` when connections are configured) runs ``bot.Bot``. A command
becomes calls of the public REST API made in-process with a short-lived token of the Armillary user the
chat account is linked to, so roles, environments, quotas and locks apply exactly as for any other client
(see docs/chat.md). Nothing here is imported by the API's routers but ``models`` and ``identity``.
"""
