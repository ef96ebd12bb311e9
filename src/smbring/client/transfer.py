"""Whole-file (and whole-tree) downloads and uploads that are either complete or absent.

``get`` writes to a temporary name beside the destination and renames it into place only when
every byte the server announced has arrived; a directory is assembled in a temporary directory
and renamed as a whole. ``put`` writes a temporary name on the share and renames it over the
destination at the end. On any failure the temporary is removed and the destination is left as
it was. What a hostile server may say is checked: short reads and wrong lengths
(ProtocolError), names in a listing that are paths or parent references (ProtocolError, nothing
written), trees deeper than MAX_DEPTH.
"""
from __future__ import annotations

import os
import secrets
import shutil

from smbring.client.errors import ProtocolError
from smbring.client.files import RemoteFile
from smbring.client.session import check_listed_name, smb_path

MAX_DEPTH = 64        # directory levels a download follows (a server could nest forever)


def _temporary_name(name: str) -> str:
    return f".{name}.smbring-{secrets.token_hex(4)}.part"


def _basename(remote: str) -> str:
    path = smb_path(remote)
    return path.rsplit("\\", 1)[-1] if path else ""


async def get(client, remote: str, local: str) -> str:
    """Downloads a remote file or directory tree to `local` (into it, when it is an existing
    directory and the remote is a file); returns the local path written."""
    st = await client.stat(remote)
    name = _basename(remote)
    if st.is_dir:
        if os.path.lexists(local):
            raise FileExistsError(f"{local} exists; a directory is downloaded to a new name")
        parent = os.path.dirname(os.path.abspath(local))
        staging = os.path.join(parent, _temporary_name(os.path.basename(os.path.abspath(local))))
        os.mkdir(staging, 0o700)
        try:
            await _get_tree(client, smb_path(remote), staging, 0)
            os.chmod(staging, 0o755)
            os.rename(staging, local)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return local
    if os.path.isdir(local):
        if not name:
            raise ValueError("the share root is a directory")
        local = os.path.join(local, name)
    await _get_file(client, remote, local)
    return local


async def _get_tree(client, remote: str, local_dir: str, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ProtocolError(f"{remote!r} nests deeper than {MAX_DEPTH} directories: refused")
    # streamed: memory stays bounded however many names the server lists
    async for entry in client.listdir(remote):
        check_listed_name(entry.name)     # listdir did; a later caller must never skip it
        target = os.path.join(local_dir, entry.name)
        # and whatever the name check missed, the path must stay inside the staging directory
        if os.path.dirname(os.path.abspath(target)) != os.path.abspath(local_dir):
            raise ProtocolError(f"the listed name {entry.name!r} leads outside {local_dir}: refused")
        child = f"{remote}\\{entry.name}" if remote else entry.name
        if entry.is_dir:
            os.mkdir(target, 0o755)
            await _get_tree(client, child, target, depth + 1)
        else:
            # inside the staging directory: nothing is presented until the whole tree is there
            await _download(client, child, target)


async def _get_file(client, remote: str, local: str) -> None:
    directory = os.path.dirname(os.path.abspath(local))
    temporary = os.path.join(directory, _temporary_name(os.path.basename(local)))
    try:
        await _download(client, remote, temporary)
        os.replace(temporary, local)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


async def _download(client, remote: str, local: str) -> None:
    """remote -> a new local file (O_EXCL, never following a link), byte for byte. The remote
    file is opened first: a name the server refuses creates nothing here."""
    async with await RemoteFile.open(client, remote, "r") as f:
        size = f.size_at_open
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            def sink(offset: int, data) -> None:
                view = memoryview(data)
                while len(view):           # pwrite may write less (a full disk): go on or fail
                    n = os.pwrite(fd, view, offset)
                    view, offset = view[n:], offset + n

            got = await f.read_to(0, size, sink, exact=True)
            if got != size:
                raise ProtocolError(f"{remote!r}: {got} bytes arrived, the server announced {size}")
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


async def put(client, local: str, remote: str) -> str:
    """Uploads a local file to `remote` (into it, when it names an existing directory or ends
    with a separator); returns the remote path written."""
    name = os.path.basename(local)
    target = smb_path(remote)
    if remote.endswith(("/", "\\")) or not target:
        target = f"{target}\\{name}" if target else name
    else:
        try:
            if (await client.stat(target)).is_dir:
                target = f"{target}\\{name}"
        except FileNotFoundError:
            pass
    directory, _, base = target.rpartition("\\")
    temporary = f"{directory}\\{_temporary_name(base)}" if directory else _temporary_name(base)
    with open(local, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        fd = source.fileno()
        try:
            async with await RemoteFile.open(client, temporary, "x") as f:
                await f.write_from(0, size, lambda offset, n: os.pread(fd, n, offset))
                written = (await f.stat()).size
                if written != size:
                    raise ProtocolError(f"{temporary!r} is {written} bytes on the server after "
                                        f"writing {size}")
            await client.rename(temporary, target, replace=True)
        except BaseException:
            try:
                await client.remove(temporary)
            except (OSError, ConnectionError):
                pass
            raise
    return target.replace("\\", "/")
