"""The server-wide ([global]) security settings the protocol core enforces, with Samba's
names for their values. The shell reads them from smb.conf (smbring.server.config) and hands
one `Policy` to every connection."""
from __future__ import annotations

from dataclasses import dataclass, field

from smbring.smb import security, wire
from smbring.smb.sids import NoUnixNames, UnixNames
from smbring.smb.share_access import Accounts, NoAccounts

# `server min protocol` / `server max protocol` (Samba's enum_protocol): SMB1 and older are
# not served here, so they mean the lowest SMB2 dialect
PROTOCOLS = {
    "smb3": wire.SMB311, "smb3_11": wire.SMB311, "smb3_02": wire.SMB302, "smb3_00": wire.SMB300,
    "smb2": wire.SMB210, "smb2_10": wire.SMB210, "smb2_02": wire.SMB202,
    "nt1": wire.SMB202, "lanman2": wire.SMB202, "lanman1": wire.SMB202, "core": wire.SMB202,
    "coreplus": wire.SMB202, "core+": wire.SMB202,
}
DIALECT_NAMES = {wire.SMB311: "SMB3_11", wire.SMB302: "SMB3_02", wire.SMB300: "SMB3_00",
                 wire.SMB210: "SMB2_10", wire.SMB202: "SMB2_02"}
# `server smb3 encryption algorithms`, `server smb3 signing algorithms`
CIPHER_NAMES = {"aes-128-gcm": security.AES_128_GCM, "aes-128-ccm": security.AES_128_CCM,
                "aes-256-gcm": security.AES_256_GCM, "aes-256-ccm": security.AES_256_CCM}
SIGNING_NAMES = {"aes-128-gmac": security.AES_GMAC, "aes-128-cmac": security.AES_CMAC,
                 "hmac-sha256": security.HMAC_SHA256}
ENCRYPTION_MODES = ("off", "if_required", "desired", "required")


@dataclass
class Policy:
    min_dialect: int = wire.SMB202                 # server min protocol
    max_dialect: int = wire.SMB311                 # server max protocol
    encryption: str = "if_required"                # server smb encrypt in [global]
    ciphers: tuple = security.CIPHER_PREFERENCE    # server smb3 encryption algorithms
    signing_algorithms: tuple = security.SIGNING_PREFERENCE   # server smb3 signing algorithms
    # unknown users become guests where a share admits guests (Samba's `map to guest = bad
    # user`), or are refused (`never`)
    map_to_guest: str = "bad user"
    # `server multi channel support`: SMB2_GLOBAL_CAP_MULTI_CHANNEL, session binding and the
    # interface list (yes by default, as Samba 4.15 and later on Linux)
    multi_channel: bool = True
    host_msdfs: bool = True                        # host msdfs: DFS offered (shares with msdfs root)
    # `smb2 leases`: SMB2_GLOBAL_CAP_LEASING on SMB 2.1 and later, and lease contexts heeded
    # (yes by default, as Samba 4.x)
    smb2_leases: bool = True
    # `smb3 directory leases` (auto by default, as Samba: on): SMB2_GLOBAL_CAP_DIRECTORY_LEASING
    # on SMB 3 and leases on directories, where `smb2 leases` is on too and the server sees
    # every change that must break them (one process; see smb.dirleases)
    directory_leases: bool = True
    # `smb2 disable oplock break retry` (no by default, as Samba): an oplock break not
    # delivered on one channel is sent again on the session's next one (MS-SMB2), else it
    # goes on the newest channel only, once (Windows)
    oplock_break_retry: bool = True
    # `change notify` (yes by default, as Samba): CHANGE_NOTIFY is answered; `no`:
    # STATUS_NOT_IMPLEMENTED, as smbd answers then
    change_notify: bool = True
    # `kernel change notify` (yes by default, as Samba): changes other programs make are seen
    # through inotify (server.change_watcher); `no`: only the server's own are reported
    kernel_change_notify: bool = True
    # `max disk size` (MiB; 0, the default: none): the most a share's size and free space are
    # said to be, as Samba's disk_norm (old programs that cannot count past a size)
    max_disk_size: int = 0
    # `smbd:FSCTL_SMBTORTURE` (no by default): Samba's test controls (smb.breaks)
    smbtorture_fsctl: bool = False
    # Apple's extension (smb.aapl) on shares with `vfs objects = fruit`: `fruit:aapl` (yes by
    # default, as Samba), `fruit:copyfile` (no by default, as Samba), `fruit:model`
    fruit_aapl: bool = True
    fruit_copyfile: bool = False
    fruit_model: str = "MacSamba"
    fruit_nfs_aces: bool = True     # AAPL's NFS_ACE: Unix mode, owner, group as NFS ACEs (smb.aapl)
    guest_account: str = "nobody"                  # the name guests have in user lists
    restrict_anonymous: int = 0                    # 2: no anonymous IPC$
    server_name: str = "SMBRING"                   # %L
    accounts: Accounts = field(default_factory=NoAccounts)   # Unix groups and homes (%G, @group)
    unix_names: UnixNames = field(default_factory=NoUnixNames)   # uids and gids (lsarpc lookups)

    def allows(self, dialect: int) -> bool:
        return self.min_dialect <= dialect <= self.max_dialect
