"""Real clients log on to a real `smbring serve` (list the share, get a file), a wrong password
fails for each, and what the default `ntlm auth = ntlmv2-only` refuses is refused.

impacket and pysmb send no SPNEGO mechListMIC in their last leg (RFC 4178 allows it when the
client's first mechanism was chosen): they must log on all the same."""
import io
import os
import subprocess
import sys

import pytest

from servers import PASSWORD, USER, smbclient

CONTENT = b"logged on\n" * 1000   # small: pysmb cannot read frames over 128 KiB


@pytest.fixture
def served(server):
    (server["share"] / "hello.txt").write_bytes(CONTENT)
    return server


def refused(result) -> bool:
    return result.returncode != 0 and "NT_STATUS_LOGON_FAILURE" in result.stdout + result.stderr


def test_smbclient(served, tmp_path):
    result = smbclient(served, f"ls; get hello.txt {tmp_path / 'got'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello.txt" in result.stdout and (tmp_path / "got").read_bytes() == CONTENT
    assert refused(smbclient(served, "ls", password="wrong"))


def test_smbclient_ntlmv1_is_refused_by_default(served):
    result = smbclient(served, "ls", "--option=client ntlmv2 auth=no")
    assert refused(result), result.stdout + result.stderr
    assert "NTLMv1 refused" in served["log"].read_text()


def test_smbprotocol(served):
    client = pytest.importorskip("smbclient")   # smbprotocol's high-level API (pyspnego inside)
    from smbprotocol.exceptions import SMBAuthenticationError, SMBResponseException
    root = r"\\127.0.0.1\share"
    try:
        client.register_session("127.0.0.1", username=USER, password=PASSWORD, port=served["port"])
        assert "hello.txt" in client.listdir(root, port=served["port"])
        with client.open_file(root + r"\hello.txt", mode="rb", port=served["port"]) as f:
            assert f.read() == CONTENT
    finally:
        client.reset_connection_cache()
    with pytest.raises((SMBAuthenticationError, SMBResponseException)) as failure:
        client.register_session("127.0.0.1", username=USER, password="wrong", port=served["port"])
    client.reset_connection_cache()
    assert "LOGON_FAILURE" in str(failure.value).upper().replace(" ", "_")


def test_impacket(served):
    smbconnection = pytest.importorskip("impacket.smbconnection")
    conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=served["port"])
    try:
        conn.login(USER, PASSWORD, domain="")
        assert "hello.txt" in [f.get_longname() for f in conn.listPath("share", "*")]
        got = io.BytesIO()
        conn.getFile("share", "hello.txt", got.write)
        assert got.getvalue() == CONTENT
    finally:
        conn.close()
    conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=served["port"])
    try:
        with pytest.raises(smbconnection.SessionError) as failure:
            conn.login(USER, "wrong", domain="")
        assert "STATUS_LOGON_FAILURE" in str(failure.value)
    finally:
        conn.close()


def pysmb_connect(server, password):
    """A pysmb connection, or None when its logon failed."""
    from smb.SMBConnection import SMBConnection
    conn = SMBConnection(USER, password, "client", "SMBRING", domain="", use_ntlm_v2=True, is_direct_tcp=True)
    logged_on = conn.connect("127.0.0.1", server["port"], timeout=15)
    if not logged_on:
        conn.close()
        return None
    return conn


def test_pysmb(served):
    pytest.importorskip("smb.SMBConnection")
    conn = pysmb_connect(served, PASSWORD)
    assert conn is not None
    try:
        assert "hello.txt" in [f.filename for f in conn.listPath("share", "/")]
        got = io.BytesIO()
        conn.retrieveFile("share", "/hello.txt", got)
        assert got.getvalue() == CONTENT
    finally:
        conn.close()
    assert pysmb_connect(served, "wrong") is None
    assert "wrong password" in served["log"].read_text()


def test_users_added_and_removed_take_effect_on_a_running_server(served, tmp_path):
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    cli = [sys.executable, "-m", "smbring.cli", "user"]
    # daemon: a Unix account, for a server started as root to act as
    assert refused(smbclient(served, "ls", user="daemon", password="Bob-pw-2"))
    subprocess.run(cli + ["add", "daemon", "--password-stdin"], input="Bob-pw-2\n", text=True, check=True,
                   env=env, capture_output=True)
    result = smbclient(served, "ls", user="daemon", password="Bob-pw-2")
    assert result.returncode == 0, result.stdout + result.stderr
    subprocess.run(cli + ["del", USER], check=True, env=env, capture_output=True)
    # (as root, USER logs on with root's entry: see servers.as_root_args)
    subprocess.run(cli + ["del", "root"], env=env, capture_output=True)
    assert refused(smbclient(served, "ls"))
