"""`force unknown acl user` (Samba's share option, default no): a security descriptor naming an
owner or group that is no Unix account (Everyone, BUILTIN\\Users, a domain's SID).

Samba's default refuses it (STATUS_INVALID_OWNER: `unpack_nt_owners` in posix_acls.c), since a
file can be given only to a Unix account; with the option, the descriptor names it and the
file keeps its owner and group. smbtorture's own tests name such owners and groups: they pass
only where the option is set (smb2.create.aclfile and acldir create files whose SecD names
Everyone and BUILTIN\\Users; smb2.acls.SDFLAGSVSCHOWN sets an owner the same way)."""
import re
import shutil
import subprocess

import pytest

from servers import PASSWORD, USER, free_port, spawn, stop

pytestmark = pytest.mark.skipif(shutil.which("smbtorture") is None,
                                reason="smbtorture not installed (Debian package samba-testsuite)")

NAMING_UNKNOWN_SIDS = ["smb2.create.aclfile", "smb2.create.acldir", "smb2.acls.SDFLAGSVSCHOWN"]


def torture(tmp_path, option: str | None) -> str:
    share = tmp_path / "share"
    share.mkdir()
    conf = tmp_path / "smb.conf"
    port = free_port()
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n[share]\n"
                    f"path = {share}\nread only = no\n" + (f"force unknown acl user = {option}\n" if option else ""))
    proc, port, _log = spawn(tmp_path, "--config", str(conf), port=port)
    try:
        run = subprocess.run(["smbtorture", r"//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                              "--format=subunit", *NAMING_UNKNOWN_SIDS],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        stop(proc)
    return run.stdout


def outcomes(output: str) -> list[str]:
    return re.findall(r"^(success|failure|error): \S+", output, re.M)


def test_by_default_an_owner_or_group_that_is_no_account_is_refused(tmp_path):
    output = torture(tmp_path, None)
    assert outcomes(output) == ["failure"] * 3, output[-3000:]
    assert output.count("NT_STATUS_INVALID_OWNER") >= 3, output[-3000:]


def test_with_the_option_the_descriptor_names_them(tmp_path):
    output = torture(tmp_path, "yes")
    assert outcomes(output) == ["success"] * 3, output[-3000:]
