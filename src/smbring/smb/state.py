"""What a connection knows: shares, sessions, tree connects, opens, requests that wait,
and what a compound chain carries from one request to the next."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smbring.smb import acl, notify, security, wire
from smbring.smb.fs import FileSystem
from smbring.smb.share_access import NameRules
from smbring.smb.slots import slot_maker
from smbring.smb.wire import Header
from smbring.vfs.shadow_copy import ShadowCopyOptions

if TYPE_CHECKING:
    from smbring.smb.aapl import Offered

FID_ANY = b"\xff" * 16


@dataclass
class Chain:
    """What a compound chain carries from one request to the next (MS-SMB2 3.3.5.2.7)."""

    related: bool = False
    last: bool = True
    single: bool = True                    # the frame holds one request, not a compound
    session_id: int = 0xFFFFFFFFFFFFFFFF   # before the first request: nothing to inherit
    tree_id: int = 0xFFFFFFFF
    fid: bytes | None = None               # the open the previous request used or created
    create_error: int = 0                  # a failed CREATE fails the requests that follow it
    split: object = None                   # the AsyncRequest of a held CREATE within the chain
    # the tree connect the checks before the handler found for the request they passed
    # (Connection._one sets it for each command that needs one): a handler takes it from
    # here rather than looking it up again; None where no checks ran (a held CREATE's retry)
    tree: object = None


@dataclass
class AsyncRequest:
    """A request answered STATUS_PENDING, completed later by complete_async()."""

    async_id: int
    hdr: Header
    sealed: bool
    signed: bool
    on_cancel: object = None     # called when CANCEL, close or disconnect ends the wait
    close_status: int = wire.STATUS_CANCELLED    # the answer when its open is closed
    # a compound's requests after this one (a CREATE held for an oplock break): handled
    # once it is answered, with the chain as it left it ((header, message) pairs, copied)
    rest: list = field(default_factory=list)
    chain: "Chain | None" = None
    sealed_by: object = None
    # a CREATE a replay may name (DH2Q): it outlives the loss of its connection where its
    # session goes on through another channel; moved there, it is `orphaned` (its answer
    # goes nowhere: the client gets the open by replaying the CREATE)
    replayable: bool = False
    orphaned: bool = False


class GoAsync(Exception):
    """Raised by a handler whose request must wait: `start(areq)` arranges its completion."""

    def __init__(self, start):
        super().__init__("pending")
        self.start = start


@dataclass
class Share:
    """A share and its smb.conf rules (docs/ADMIN.md). Fields listed in
    `share_access.TEMPLATE_FIELDS` may hold session variables (%U, %S, ...), substituted at
    each tree connect; lists hold smb.conf's tokens (names, @group, +group)."""

    name: str
    path: str
    read_only: bool = False
    guest_ok: bool = False
    valid_users: list = field(default_factory=list)   # empty: everyone
    encrypt: bool = False                              # smb encrypt = required
    vfs_objects: list = field(default_factory=list)    # data modules, top first (vfs.modules)
    read_path: str | None = None                       # auto, copy, splice, zc (None: server's)
    strict_allocate: bool = False                      # reserve the space a client allocates
    section: str = ""                 # the section it came from ("homes" for a home share)
    homes: bool = False               # [homes]: a share per user, named after them
    comment: str = ""
    guest_only: bool = False          # everyone connects as the guest account (with guest ok)
    invalid_users: list = field(default_factory=list)
    read_list: list = field(default_factory=list)     # read-only for these, whatever read only
    write_list: list = field(default_factory=list)    # writable for these (wins over read list)
    # `admin users`: these act on the share as root (where the server acts as each user's
    # account), as Samba's do
    admin_users: list = field(default_factory=list)
    hosts_allow: tuple = ()           # smb.hosts tokens
    hosts_deny: tuple = ()
    encrypt_desired: bool = False     # smb encrypt = desired: encrypted where the client can
    max_connections: int = 0          # tree connects at once, all clients (0: no bound)
    veto_files: list = field(default_factory=list)    # neither listed nor reachable
    hide_files: list = field(default_factory=list)    # listed with the hidden attribute
    veto_oplock_files: list = field(default_factory=list)   # granted no oplock or lease
    dont_descend: list = field(default_factory=list)   # directories listed as empty (share_access)
    hide_dot_files: bool = True
    hide_unreadable: bool = False
    # a descriptor may name an owner or group that is no Unix account: the file keeps its
    # own (Samba's `force unknown acl user`; default: STATUS_INVALID_OWNER)
    force_unknown_acl_user: bool = False
    hide_unwriteable: bool = False
    hide_special_files: bool = False
    hide_new_files_timeout: float = 0.0
    mangled_names: bool = True        # long names have 8.3 short names (listed, and reaching them)
    # names as Samba's options of the same names treat them (smb.share_access.NameRules)
    case_sensitive: bool = False      # a name reaches only the file spelled so
    preserve_case: bool = True        # a new file keeps the case its name was given in
    short_preserve_case: bool = True  # ... a new file with an 8.3 name too
    default_case: str = "lower"       # the case of new names not preserved ("lower", "upper")
    # new files given to their directory's owner (inherit owner: "no", "unix only", "windows
    # and unix"; smb.unix_owner.directory_owner)
    inherit_owner: str = "no"
    # symbolic links inside the share followed (follow symlinks; `no`: none, vfs.posix)
    follow_symlinks: bool = True
    # a directory holding only vetoed names counts as empty, and its delete removes them
    # (delete veto files; smb.vetoed_entries)
    delete_veto_files: bool = False
    # an account that may write a file may set its times, as on Windows (dos filetimes; POSIX
    # lets only the owner: `no`)
    dos_filetimes: bool = True
    # a new file's or directory's mode from its directory's, in place of the masks below
    # (inherit permissions: a file takes its rw bits, a directory all but setuid)
    inherit_permissions: bool = False
    create_mask: int = 0o744          # mode bits of a new file: 0o666 & mask | force
    force_create_mode: int = 0
    directory_mask: int = 0o755       # of a new directory: 0o777 & mask | force
    force_directory_mode: int = 0
    browseable: bool = True           # listed (srvsvc NetShareEnum) or not
    access_based_share_enum: bool = False   # listed only to those who may connect to it
    # who the share's users act as (Samba's options; the server applies them where it runs as
    # root): None keeps the session's own account
    force_user: str | None = None
    force_group: str | None = None                     # "+group": only for its members
    oplocks: bool = True              # grant oplocks (smb.conf's oplocks)
    level2_oplocks: bool = True       # level II ones too (level2 oplocks)
    durable_handles: bool = True      # grant durable handles (durable handles)
    # byte-range locks held as kernel locks too, which local programs see and which stop a
    # client's lock (posix locking; smb.posix_locks)
    posix_locking: bool = True
    # reads and writes checked against other programs' kernel locks too, where posix_locking
    # (strict locking: auto and yes; no: the server's own locks only, which are always checked)
    strict_locking: bool = True
    # what FileFsVolumeInformation and FileFsAttributeInformation name (volume, fstype): the
    # share's name (None) and NTFS by default, as Samba's
    volume: str | None = None
    # clients may set security descriptors (nt acl support; `no`: a SET_INFO of one, or a
    # CREATE's SecD context, stores nothing, as smbd; those inherited still are)
    nt_acl_support: bool = True
    # a DACL set with SE_DACL_AUTO_INHERITED keeps it only where the setter also asked with
    # SE_DACL_AUTO_INHERIT_REQ, as Windows (acl flag inherited canonicalization; `no`: it
    # keeps the flag as set, as Samba then does)
    acl_flag_inherited_canonicalization: bool = True
    # extended attributes kept for clients (ea support; `no`: none shown, none set, as smbd)
    ea_support: bool = True
    fstype: str = "NTFS"
    fruit: bool = False               # `vfs objects` names fruit: Apple's AAPL context (smb.aapl)
    # a Time Machine destination (fruit:time machine): FULL_SYNC offered; where the most its
    # backups may take is set (fruit:time machine max size), the share's size is that
    time_machine: bool = False
    time_machine_max_size: int = 0
    # a descriptor set with an empty DACL leaves the DACL as it was (fruit:ignore_zero_aces)
    fruit_ignore_zero_aces: bool = True
    # file ids are 0 to a client that negotiated AAPL (fruit:zero_file_id): macOS takes them
    # for HFS+ catalog ids, never reused, which inode numbers are not
    fruit_zero_file_id: bool = True
    # macOS's "._" files taken into their files' streams while serving (fruit:convert_adouble,
    # smb.appledouble)
    fruit_convert_adouble: bool = True
    # and a resource fork macOS wrote for a file that has none taken for none
    # (fruit:wipe_intentionally_left_blank_rfork)
    fruit_wipe_blank_rfork: bool = False
    # a "._" file taken in whole is removed (else rewritten as Samba keeps one: smb.appledouble)
    fruit_delete_empty_adfiles: bool = False
    # an MS-DFS root: its "msdfs:" links refer clients to other shares (smb.dfs)
    msdfs_root: bool = False
    # previous versions from file-system snapshots (vfs objects = shadow_copy2; its shadow:*
    # options: vfs.shadow_copy); None: the share has none
    shadow_copy: ShadowCopyOptions | None = None
    # a previous version's view of a share (a CREATE's TWrp, smb.commands.create.snapshot_tree):
    # read-only, and what would change a file is refused as write-protected media
    snapshot: bool = False
    # what enriched macOS listings work out (readdir_attr:aapl_rsize, aapl_finder_info,
    # aapl_max_access): each costs a look at every entry listed
    readdir_attr: tuple[bool, bool, bool] = (True, True, True)
    sync_always: bool = False         # every WRITE on stable storage before it is answered
    csc_policy: int = 0               # TREE_CONNECT's caching ShareFlags (`csc policy`)


@dataclass(eq=False, slots=True)
class Open:
    fd: int
    parts: list
    is_dir: bool
    access: int
    delete_on_close: bool = False
    dir_entries: list | None = None
    dir_pos: int = 0
    # a listing dropped for `max listed names per user` (smb.listings): the scan goes on after
    # `dir_after` (the last name returned; None: from the start) once listed again with the
    # scan's pattern; `dir_owner`: the user its held listing is counted to
    dir_pattern: str = "*"
    dir_resume: bool = False
    dir_after: str | None = None
    dir_owner: str | None = None
    key: tuple = ()                 # (st_dev, st_ino): where its byte-range locks live
    position: int = 0               # CurrentByteOffset: just past the last read or write
    fid: bytes = b""
    tree: "Tree | None" = None
    session_id: int = 0
    tree_id: int = 0
    waiting: list = field(default_factory=list)   # AsyncRequests that end when it closes
    watch: notify.Watch | None = None              # after its first CHANGE_NOTIFY
    granted: int = 0                               # access granted (generic rights mapped)
    mode: int = 0                                  # FileModeInformation, as last set
    stream: str | None = None                      # a named stream: parts are its depot file
    base_parts: list | None = None                 # the file as the client names it
    base_key: str | None = None                    # and its stream id, for a stream
    file_key: tuple = ()                           # a stream's: its file's (st_dev, st_ino)
    resume_key: bytes = b""                        # names it as a server-side copy's source
    kept_write_ns: int | None = None               # a write time set or frozen on this handle:
                                                   # its own writes leave it (MS-FSA 2.1.5.14.2)
    channel_sequence: int = 0                      # the client's ChannelSequence (3.x), as last seen
    # the replay key of the CREATE that made it (smb.durable: ClientGuid, user, CreateGuid),
    # until a request on it shows its client had the CREATE's answer (DurableHandles.seen)
    create_key: tuple | None = None
    index_number: int = 0                          # its FileId on disk (a stream: its file's)
    # LockSequenceArray (MS-SMB2 3.3.1.10): the last LockSequenceNumber that succeeded in each
    # of the 64 LockSequenceIndex buckets, 0xFF where none is valid (smb.commands.lock)
    lock_sequences: bytearray | None = None
    # whose byte-range locks it holds (its session's owner at its first LOCK): `max locks per
    # user` counts them there, until each is released, whichever session or connection it is on
    lock_owner: str | None = None
    # a change of its kernel byte-range locks is being made off the event loop (a LOCK or
    # unlock of many ranges, smb.commands.lock): what waits to change them after it, called
    # in order when it is over (a Wait effect's `done`, a blocking lock's retry); None: none
    kernel_locking: dict | None = None
    released: bool = False          # its locks, share mode and descriptor are gone (release_file)
    counted_for: str | None = None  # the user whose `max open files per user` counts it, while it does
    # a CLOSE waits for the I/O under way on it (Connection.after_io): no request reaches it
    # meanwhile (FILE_CLOSED, as Samba's fsp closing flag)
    closing: bool = False
    # data was written through it: its directory's leases are broken when it closes (the size
    # and write time a listing shows settle then; smb.dirleases)
    wrote: bool = False
    spares: tuple | None = None     # at its close: the directory lease its changes spared
    # opened with FILE_WRITE_THROUGH: each WRITE through it is on stable storage before it is
    # answered (MS-SMB2 2.2.13; Samba opens it O_SYNC)
    write_through: bool = False
    # the name its directory lease is watched under while it holds one (ServerState's
    # watch_leased_directory: this process's watch, counted per open, so that each process
    # of a server with workers watches what its own opens lease)
    lease_watched: str | None = None

    def display_name(self) -> str:
        """The path as the client knows it: "dir\\file" or "dir\\file:stream"."""
        name = "\\".join(self.base_parts if self.base_parts is not None else self.parts)
        return f"{name}:{self.stream}" if self.stream else name

    def path(self) -> str:
        return "/".join([self.tree.fs.root] + self.parts)

    @property
    def is_stream(self) -> bool:
        """Whether `parts` name a stream's depot file (no streams of its own to remove)."""
        return self.stream is not None


# Open(**fields) made without its __init__ (a CREATE's, on the per-request path)
make_open = slot_maker(Open)


@dataclass(eq=False)
class Pipe:
    """A named pipe open on IPC$ (srvsvc, wkssvc): no file, a DCE/RPC association instead
    (`rpc.endpoint.Endpoint`). Its FileId is bound to its session and tree like an Open's."""

    name: str
    endpoint: object
    fid: bytes = b""
    tree: "Tree | None" = None
    session_id: int = 0
    tree_id: int = 0
    waiting: list = field(default_factory=list)   # AsyncRequests that end when it closes
    readers: list = field(default_factory=list)   # READs (and TRANSCEIVEs) waiting for data
    counted_for: str | None = None                # (as Open.counted_for)
    closing: bool = False                         # (never: a pipe's CLOSE waits for nothing)

    def display_name(self) -> str:
        return self.name


@dataclass
class Tree:
    share: Share | None          # None: IPC$; else the share as this session sees it
    fs: FileSystem | None        # None: IPC$
    names: NameRules = field(default_factory=NameRules)   # veto and hide rules
    guest: bool = False          # acts as the guest (guest only = yes)
    counted: str | None = None   # the share whose `max connections` counts this tree
    token: acl.Token = acl.GUEST_TOKEN   # whom security descriptors see (smb.acl)
    name: str = ""               # the share's name as the client connected to it (lower case)
    # Apple's AAPL query answered (smb.aapl), None before: what its replies offered (an
    # empty named stream is then taken for none; with copyfile a COPYCHUNK of no chunks
    # copies a whole file; with readdir_attr FileIdBothDirectoryInformation entries carry
    # maximal access, resource fork size, Finder information and Unix mode; with nfs_aces
    # descriptors show and set the Unix mode)
    aapl: Offered | None = None
    # a Time Machine share's bundles' use as last counted (smb.time_machine.used_bytes)
    time_machine_counted: dict = field(default_factory=dict)

    @property
    def zero_file_ids(self) -> bool:
        """Whether the tree's client is shown 0 for every file id (IndexNumber, FileId): once
        it negotiated AAPL on a fruit share with fruit:zero_file_id (as Samba's vfs_fruit)."""
        return self.aapl is not None and self.share.fruit_zero_file_id

    def file_id(self, index_number: int) -> int:
        return 0 if self.zero_file_ids else index_number


@dataclass
class Session:
    id: int
    auth: object = None
    preauth: security.PreauthIntegrity | None = None
    valid: bool = False
    guest: bool = False
    user: str = ""
    pipes_open: int = 0         # named pipes it has open (the limit counts a connection's sessions)
    opens_held: int = 0         # its opens and pipes (`max open files` counts a connection's sessions)
    locks_held: int = 0         # byte-range locks of its opens (likewise `max locks per connection`)
    signing_key: bytes = b""
    sign: bool = False
    encrypt_key: bytes = b""      # server -> client
    decrypt_key: bytes = b""      # client -> server
    encrypt: bool = False         # every response of this session is encrypted
    client_seals: bool = False    # the client has sent a frame sealed with its key (status)
    trees: dict = field(default_factory=dict)
    asked_as: str = ""            # the user name the client gave (a guest's too)
    domain: str = ""
    reauth_of: str | None = None  # the user, while a re-authentication is in progress
    identity: object = None       # the account its file-system calls act as (the server's)
    # when its Kerberos ticket ends (time.monotonic()); 0: never. Past it the session is
    # Expired (MS-SMB2 3.3.5.2.9) until a re-authentication (Connection._check_session)
    expires: float = 0.0
    expiry_told: bool = False     # its expiry logged (once, until it re-authenticates)
    account: str = ""             # the password file's account whose password logged it on
    # who it is as the server resolved it ("uid:N", or "user:" and the password file's
    # account, the username map applied): what durable
    # opens and replays are owned by; empty for a guest or anonymous (`session.resolved_owner`)
    owner: str = ""
    # multichannel (smb.channels): the connections it is reachable on, each with its signing
    # key, and what a connection binding to it must have negotiated alike
    channels: dict = field(default_factory=dict)    # Connection -> channels.Channel
    client: object = None         # the channels.Client whose tables hold it
    dialect: int = 0
    cipher: int = 0
    signing_algorithm: int = 0
