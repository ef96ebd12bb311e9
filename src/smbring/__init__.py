"""smbring: an SMB2/3 file server and the Linux io_uring engine under it.

Layers, bottom up: ``uring`` (the ring, its ops, feature probing) -> ``events`` (tevent-style event
contexts) and asyncio glue -> ``vfs`` (stackable file-system modules) -> ``smb`` (sans-I/O protocol)
-> ``server`` (sockets, shares, configuration) -> ``bench``.
"""

__version__ = "0.1.0"
