"""The SMB2/3 protocol: wire layouts (``wire``), message security (``security``), and the
per-connection state machine (``connection``). No sockets here."""
