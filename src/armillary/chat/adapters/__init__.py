"""Chat network adapters, found through the ``armillary.chat_adapters`` entry-point group."""
