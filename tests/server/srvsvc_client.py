"""srvsvc's calls as Samba's own Python bindings make them (run by the system's python3, which
has python3-samba): `srvsvc_client.py PORT USER PASSWORD SHARE_PATH [act]` (USER empty: anonymously) prints, as JSON,
what each call answered, or {"error": [werror, name]} where it was refused. With `act`, after
the lists: the file named held.txt closed (twice: the second finds none), and the sessions of
USER ended (all but the caller's own), then of a client that has none."""
import json
import sys

from samba import credentials, param
from samba.dcerpc import srvsvc

port, user, password, share_path = sys.argv[1:5]
lp = param.LoadParm()
lp.set("smb ports", port)
creds = credentials.Credentials()
creds.guess(lp)
if user:
    creds.set_username(user)
    creds.set_password(password)
else:
    creds.set_anonymous()           # (an empty USER: the anonymous logon)
conn = srvsvc.srvsvc("ncacn_np:127.0.0.1", lp, creds)
SERVER = "\\\\127.0.0.1"


def fields(row) -> dict:
    return {k: getattr(row, k) for k in dir(row) if not k.startswith("_") and not callable(getattr(row, k))}


def listed(kind: str, level: int, call) -> list:
    ctr = getattr(srvsvc, f"Net{kind}InfoCtr")()
    ctr.level = level
    ctr.ctr = getattr(srvsvc, f"Net{kind}Ctr{level}")()
    info, _total, _resume = call(ctr)
    return [fields(r) for r in info.ctr.array or []]


def sessions(level, client=None, who=None):
    return listed("Sess", level, lambda ctr: conn.NetSessEnum(SERVER, client, who, ctr, 0xFFFFFFFF, None))


def files(level, path=None, who=None):
    return listed("File", level, lambda ctr: conn.NetFileEnum(SERVER, path, who, ctr, 0xFFFFFFFF, None))


def connections(level, qualifier):
    return listed("Conn", level, lambda ctr: conn.NetConnEnum(SERVER, qualifier, ctr, 0xFFFFFFFF, None))


def time_of_day():
    t = conn.NetRemoteTOD(SERVER)
    return {k: getattr(t, k) for k in ("elapsed", "hours", "mins", "secs", "timezone", "day", "month", "year",
                                       "weekday")}


def disks():
    info, total, _resume = conn.NetDiskEnum(SERVER, 0, srvsvc.NetDiskInfo(), 0xFFFFFFFF, None)
    return {"total": total, "disks": [d.disk for d in info.disks]}


calls = {
    **{f"sessions{level}": (lambda level=level: sessions(level)) for level in (0, 1, 2, 10, 502)},
    "sessions_of_nobody": lambda: sessions(1, who="nobody-at-all"),
    "sessions_of_user": lambda: sessions(1, who=user),
    "sessions_of_client": lambda: sessions(0, client="\\\\127.0.0.1"),
    "sessions_of_other_client": lambda: sessions(0, client="\\\\192.0.2.1"),
    "files2": lambda: files(2),
    "files3": lambda: files(3),
    "files_below_share": lambda: files(3, path=share_path),
    "files_elsewhere": lambda: files(3, path="C:\\elsewhere"),
    "connections_to_share": lambda: connections(1, "share"),
    "connections_from_client": lambda: connections(1, "\\\\127.0.0.1"),
    "connections_to_nothing": lambda: connections(1, "nosuch"),
    "time_of_day": time_of_day,
    "disks": disks,
    "share_check": lambda: conn.NetShareCheck(SERVER, share_path),
    "share_check_elsewhere": lambda: conn.NetShareCheck(SERVER, "C:\\elsewhere"),
}

def close_held():
    ids = [f["fid"] for f in files(3) if f["path"].endswith("\\held.txt")] or [12345]
    return conn.NetFileClose(SERVER, ids[0])


if sys.argv[5:] == ["act"]:
    calls.update({
        "close_held": close_held,
        "close_held_again": close_held,
        "end_sessions_of_user": lambda: conn.NetSessDel(SERVER, None, user),
        "end_sessions_of_other_client": lambda: conn.NetSessDel(SERVER, "\\\\192.0.2.1", None),
        "end_nothing_named": lambda: conn.NetSessDel(SERVER, None, None),
        "sessions_after": lambda: sessions(0),
    })
out = {}
for name, call in calls.items():
    try:
        out[name] = call()
    except RuntimeError as e:       # (a WERROR: (code, name))
        out[name] = {"error": list(e.args)}
print(json.dumps(out, default=str))
