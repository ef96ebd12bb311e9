"""The file system the SMB core is given (smb.fs.FileSystem): PosixVFS implements every method
of the protocol as declared, and the core reaches files only through it, checked two ways:
in the source (no os file call, no import of an I/O module or a VFS implementation) and at run
time (every audited file-system call of a CREATE/SET_INFO/QUERY_INFO/QUERY_DIRECTORY/CLOSE
sequence against real files is made by smbring.vfs code, none by smbring.smb)."""
import ast
import inspect
import struct
import sys
from pathlib import Path

import pytest
from sansio_client import FILE_DIRECTORY_FILE, Client

import smbring.smb
from smbring.smb import acl, wire
from smbring.smb.fs import STREAMS_DIR, FileSystem
from smbring.vfs.posix import PosixVFS

CORE = Path(smbring.smb.__file__).parent

# what the core may use of os: flags for FileSystem.open, random bytes, its own uid and gid
# (the owner of a mode-bits descriptor), and types in annotations
OS_ALLOWED = {"urandom", "geteuid", "getegid", "stat_result", "statvfs_result"}
# modules whose use means I/O (or a way around the FileSystem)
FORBIDDEN_IMPORTS = ("os.path", "ctypes", "fcntl", "socket", "asyncio", "select", "selectors", "mmap",
                     "shutil", "pathlib", "tempfile", "subprocess", "smbring.uring", "smbring.vfs.posix",
                     "smbring.vfs.modules", "smbring.server")
# file-data I/O (READ and WRITE payloads, FLUSH, encrypted READ buffers) that is becoming
# effects the server carries out; each entry goes with it
# anonymous memory for sealed READs (a buffer, not a file)
ALLOWED = {("connection.py", "import mmap")}


def core_modules():
    return sorted(CORE.rglob("*.py"))


def uses_of_io(path: Path) -> set[tuple[str, str]]:
    """(file, what) for each os attribute outside OS_ALLOWED, builtin open(), and import of a
    forbidden module, anywhere in the module (functions included)."""
    rel = str(path.relative_to(CORE))
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr not in OS_ALLOWED and not node.attr.startswith("O_"):
                found.add((rel, f"os.{node.attr}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            found.add((rel, "open()"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                found.add((rel, "from os import"))
            for name in names:
                if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_IMPORTS):
                    found.add((rel, f"import {name}"))
    return found


def test_the_core_makes_no_file_system_call_of_its_own():
    found = set().union(*(uses_of_io(p) for p in core_modules()))
    assert found - ALLOWED == set()


def test_the_source_check_finds_what_it_looks_for(tmp_path):
    """The check above can fail: each kind of escape in a module is found."""
    sample = CORE / "commands" / "_sample_for_the_check.py"
    sample.write_text("import os\nimport ctypes\nfrom os import fstat\n"
                      "from smbring.vfs.posix import get_dos\n"
                      "def f(fd):\n    os.ftruncate(fd, 0)\n    open('/etc/passwd')\n"
                      "    return os.O_RDONLY, os.urandom(8)\n")
    try:
        found = {what for _file, what in uses_of_io(sample)}
    finally:
        sample.unlink()
    assert found == {"import ctypes", "from os import", "import smbring.vfs.posix", "os.ftruncate", "open()"}


# -- PosixVFS implements the protocol --------------------------------------------------------

def protocol_methods():
    return sorted(name for name, value in vars(FileSystem).items()
                  if callable(value) and not name.startswith("_"))


def test_the_protocol_declares_what_the_core_calls():
    assert set(protocol_methods()) >= {
        "open", "stat", "match_case", "mkdir", "remove", "rename", "statvfs", "stream_id",
        "stream_parts", "streams", "make_stream_dir", "remove_streams", "close_file", "fstat",
        "ftruncate", "fchmod", "set_times", "allocate", "names", "entry_stat", "get_dos",
        "get_dos_at", "set_dos", "get_sd", "set_sd", "list_eas", "set_ea", "close"}
    for name in protocol_methods():
        assert getattr(FileSystem, name).__doc__, f"{name}: what it does and raises"


@pytest.mark.parametrize("name", protocol_methods())
def test_posix_vfs_has_each_method_with_the_protocols_signature(tmp_path, name):
    fs = PosixVFS(str(tmp_path))
    try:
        declared = inspect.signature(getattr(FileSystem, name))
        declared = declared.replace(parameters=list(declared.parameters.values())[1:])   # self
        implemented = inspect.signature(getattr(fs, name))
        assert [(p.name, p.kind, p.default) for p in implemented.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in declared.parameters.values()]
    finally:
        fs.close()


def test_posix_vfs_is_a_file_system(tmp_path):
    fs = PosixVFS(str(tmp_path))
    try:
        assert isinstance(fs, FileSystem)
        assert fs.root == str(tmp_path.resolve())
    finally:
        fs.close()


# -- at run time: every audited file-system call comes from smbring.vfs ------------------------

FS_EVENTS = ("open", "os.", "ctypes.dlopen", "shutil.")


class CallerRecorder:
    """An audit hook (they cannot be removed: it records only while `active`) noting, for each
    file-system event, the smbring module that made the call."""

    def __init__(self):
        self.active = False
        self.callers: list[tuple[str, str]] = []
        sys.addaudithook(self.hook)

    def hook(self, event, _args):
        if not self.active or not event.startswith(FS_EVENTS):
            return
        frame = sys._getframe(1)
        while frame is not None and not frame.f_globals.get("__name__", "").startswith("smbring."):
            frame = frame.f_back            # through the standard library to the caller
        if frame is not None:
            self.callers.append((event, frame.f_globals["__name__"]))


@pytest.fixture
def recorder():
    r = CallerRecorder()
    yield r
    r.active = False


def check(status):
    assert status == 0, hex(status)


def test_a_session_of_requests_reaches_files_only_through_the_vfs(tmp_path, recorder):
    share = tmp_path / "share"
    share.mkdir()
    client = Client(share, share={"strict_allocate": True})       # (so an allocation reaches the disk too)
    recorder.active = True
    d = client.open("Dir", options=FILE_DIRECTORY_FILE, disposition=wire.FILE_CREATE)
    f = client.open("dir\\f.txt", disposition=wire.FILE_CREATE)         # the case of "Dir" matched
    basic = struct.pack("<QQQQI", 0, 0, 132_000_000_000_000_000, 0, wire.ATTR_READONLY)
    check(client.set_info(f, 4, basic + b"\0" * 4))                      # times, attributes
    check(client.set_info(f, 4, struct.pack("<QQQQI", 0, 0, 0, 0, wire.ATTR_ARCHIVE) + b"\0" * 4))
    check(client.set_info(f, 20, struct.pack("<Q", 100)))                # end of file
    check(client.set_info(f, 19, struct.pack("<Q", 8192)))               # allocation
    ea = b"NAME\0value"
    check(client.set_info(f, 15, struct.pack("<IBBH", 0, 0, 4, 5) + ea))    # an EA
    for klass in (4, 5, 6, 7, 15, 18, 22, 34, 35):
        check(client.query_info(f, klass)[0])
    for klass in (1, 3, 5, 7):
        check(client.query_info(f, klass, info_type=wire.INFO_FILESYSTEM)[0])
    status, sd = client.query_info(f, 0, info_type=wire.INFO_SECURITY, additional=acl.DACL)
    check(status)
    check(client.set_info(f, 0, sd, info_type=wire.INFO_SECURITY, additional=acl.DACL))
    # a named stream, with the rights the descriptor just stored grants (a stream's are its
    # file's, as on NTFS)
    s = client.open("dir\\f.txt:stream", disposition=wire.FILE_CREATE, access=wire.GENERIC_READ | wire.GENERIC_WRITE)
    check(client.close(s))
    assert client.query_directory(d)[0] == 0
    check(client.close(d, flags=wire.CLOSE_FLAG_POSTQUERY_ATTRIB))    # (an open parent: no rename)
    check(client.rename(f, "dir\\g.txt"))
    check(client.delete_on_close(f))
    check(client.close(f, flags=wire.CLOSE_FLAG_POSTQUERY_ATTRIB))
    client.conn.close_all()
    recorder.active = False
    assert list((share / "Dir").iterdir()) == []                      # g.txt is gone
    assert list((share / STREAMS_DIR).iterdir()) == []                # and its stream
    by = {module for _event, module in recorder.callers}
    assert {e for e, _m in recorder.callers} >= {"os.truncate", "os.chmod", "os.utime", "os.setxattr",
                                                 "os.listdir", "os.rename", "os.remove", "ctypes.dlopen"}
    assert by and all(m.startswith("smbring.vfs.") for m in by), \
        [(e, m) for e, m in recorder.callers if not m.startswith("smbring.vfs.")]
