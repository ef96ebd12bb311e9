"""An asyncio SMB2/3 client built on the server's own codecs (smbring.smb.wire, .security).

    async with await smbring.client.connect("host", 445, "user", "password", "share") as c:
        await c.put("local.bin", "dir/remote.bin")
        async for entry in c.listdir("dir"):
            print(entry.name, entry.size)
        async with await c.open("dir/remote.bin") as f:
            head = await f.read(4096)

See docs/CLIENT.md.
"""
from smbring.client.errors import LimitExceeded, ProtocolError, SMBError
from smbring.client.files import RemoteFile
from smbring.client.limits import Limits
from smbring.client.messages import DirEntry, RemoteStat
from smbring.client.session import Client, connect
from smbring.client.transfer import get, put

__all__ = ["connect", "Client", "RemoteFile", "DirEntry", "RemoteStat", "SMBError",
           "ProtocolError", "LimitExceeded", "Limits", "get", "put"]
