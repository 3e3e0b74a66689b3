"""IP address management and DNS registration in the system lifecycle (layer 4, beside the workflows).

``models`` (tables), ``ipam`` (pools and atomic allocation), ``dns`` (the DNS server backends),
``dns_registration`` (a system's records), ``machines`` (what create and destroy call), ``zone_check``.
"""
