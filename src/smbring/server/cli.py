"""``smbring serve PATH``: share a directory; ``smbring testparm FILE``: check an smb.conf."""
from __future__ import annotations

import asyncio
import logging
import os
import sys

from smbring.server.users import PasswordDB, default_path


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a directory over SMB2/3",
                       description="Flags override the configuration file: PATH adds the share "
                                   "--share; --listen, --passdb, --read-path, --signing-required "
                                   "replace [global]'s settings; --read-only, --encrypt, --guest "
                                   "and --vfs-objects apply to every share.")
    p.add_argument("path", nargs="?", help="directory to share (or use --config)")
    p.add_argument("--config", help="smb.conf: [global] and one section per share (docs/ADMIN.md)")
    p.add_argument("--share", default="share", help="share name for PATH (default: share)")
    p.add_argument("--listen", default=None,
                   help="HOST:PORT (default: the file's, else 127.0.0.1:4445)")
    p.add_argument("--read-only", action="store_true", help="refuse every write")
    p.add_argument("--guest", action="store_true",
                   help="allow guest access (guest ok, and map to guest = bad user)")
    p.add_argument("--passdb", help=f"password file (default {default_path()})")
    p.add_argument("--signing-required", action="store_true", help="require signed sessions")
    p.add_argument("--encrypt", action="store_true",
                   help="shares are reached over encrypted sessions only (smb encrypt = required)")
    p.add_argument("--vfs-objects", default="",
                   help="data VFS modules, top first: direct_writes, io_uring, threadpool, posix "
                        "(default: direct_writes over io_uring where available, else over threadpool)")
    p.add_argument("--read-path", default=None, choices=["auto", "copy", "mmap", "splice", "zc"],
                   help="how READ data reaches the socket (default auto)")
    p.add_argument("--no-io-uring", action="store_true",
                   help="serve without io_uring: plain asyncio sockets, file data through a thread "
                        "pool (as where io_uring is unavailable)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)
    t = sub.add_parser("testparm", help="check an smb.conf and print what smbring makes of it")
    t.add_argument("file")
    t.set_defaults(func=testparm)


def configuration(args):
    """The configuration to serve: the file's, with the command line's flags over it."""
    from smbring.server.config import Config, load, override
    from smbring.smb.policy import Policy

    cfg = load(args.config) if args.config else Config(policy=Policy(map_to_guest="never"))
    return override(cfg, path=args.path, share=args.share, listen=args.listen, passdb=args.passdb,
                    read_path=args.read_path, signing_required=args.signing_required,
                    read_only=args.read_only, guest=args.guest, encrypt=args.encrypt,
                    vfs_objects=args.vfs_objects)


def testparm(args) -> int:
    """Like Samba's `testparm -s FILE`: the effective settings on stdout, notices on stderr;
    exit status 1 when the server would not start."""
    from smbring.server.config import ConfigError, load, testparm_text

    logging.basicConfig(level="ERROR")
    try:
        cfg = load(args.file)
    except OSError as e:
        print(f"{args.file}: {e.strerror}", file=sys.stderr)
        return 1
    except ConfigError as e:        # (it names the file and line)
        print(e, file=sys.stderr)
        return 1
    for notice in cfg.notices:
        print(notice, file=sys.stderr)
    print(testparm_text(cfg))
    return 0


def run(args) -> int:
    from smbring.server.accounts import UnixAccounts
    from smbring.server.config import ConfigError
    from smbring.server.server import Server

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.config and not args.path:
        print("give a directory to share, or --config FILE", file=sys.stderr)
        return 2
    try:
        cfg = configuration(args)
    except (OSError, ConfigError) as e:
        print(f"configuration: {e}", file=sys.stderr)
        return 2
    if args.path and not os.path.isdir(args.path):
        print(f"share {args.share}: {args.path} is not a directory", file=sys.stderr)
        return 2
    shares = cfg.shares
    passdb = PasswordDB(cfg.passdb).load()
    if not passdb.users and not any(share.guest_ok for share in shares.values()):
        print(f"no users in {passdb.path}: add one with `smbring user add NAME` "
              "(or serve with --guest)", file=sys.stderr)
        return 2
    cfg.policy.accounts = UnixAccounts()
    guest = any(share.guest_ok for share in shares.values())
    server = Server(shares, passdb_path=passdb.path, allow_guest=guest,
                    signing_required=cfg.signing_required, read_path=cfg.read_path,
                    use_uring=not args.no_io_uring, limits=cfg.limits, ntlm_auth=cfg.ntlm_auth,
                    policy=cfg.policy, hosts_allow=cfg.hosts_allow, hosts_deny=cfg.hosts_deny)
    (host, port), *more = cfg.listen
    try:
        asyncio.run(server.serve(host, port, *more))
    except KeyboardInterrupt:
        pass
    return 0
