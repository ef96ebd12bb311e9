"""``smbring serve PATH``: share a directory."""
from __future__ import annotations

import asyncio
import logging
import os
import sys

from smbring.server.users import PasswordDB, default_path


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a directory over SMB2/3")
    p.add_argument("path", nargs="?", help="directory to share (or use --config)")
    p.add_argument("--config", help="smb.conf-style file: [global] and one section per share")
    p.add_argument("--share", default="share", help="share name (default: share)")
    p.add_argument("--listen", default="127.0.0.1:4445", help="HOST:PORT (default 127.0.0.1:4445)")
    p.add_argument("--read-only", action="store_true", help="refuse every write")
    p.add_argument("--guest", action="store_true", help="allow guest access to the share")
    p.add_argument("--passdb", help=f"password file (default {default_path()})")
    p.add_argument("--signing-required", action="store_true", help="require signed sessions")
    p.add_argument("--encrypt", action="store_true",
                   help="the share is reached over encrypted sessions only (smb encrypt = required)")
    p.add_argument("--vfs-objects", default="",
                   help="data VFS modules, top first: direct_writes, io_uring, threadpool, posix "
                        "(default: direct_writes over io_uring where available, else over threadpool)")
    p.add_argument("--read-path", default=None, choices=["auto", "copy", "mmap", "splice", "zc"],
                   help="how READ data reaches the socket (default auto)")
    p.add_argument("--no-io-uring", action="store_true",
                   help="serve without io_uring: plain asyncio sockets, file data through a thread "
                        "pool (as where io_uring is unavailable)")
    p.add_argument("--username-map", default=None,
                   help="Samba's username map file: SMB user names to Unix account names (as root)")
    p.add_argument("--guest-account", default=None,
                   help="the Unix account guests act as when the server runs as root (default nobody)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args) -> int:
    from smbring.server.server import Server
    from smbring.smb.limits import Limits
    from smbring.smb.state import Share

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from smbring.server.config import ConfigError, load

    listen, signing = args.listen, args.signing_required
    limits, ntlm_auth = Limits(), "ntlmv2-only"
    if args.config:
        try:
            cfg = load(args.config)
        except (OSError, ConfigError) as e:
            print(f"configuration: {e}", file=sys.stderr)
            return 2
        shares, signing = cfg.shares, signing or cfg.signing_required
        read_path = args.read_path or cfg.read_path
        listen = cfg.listen if cfg.listen and args.listen == "127.0.0.1:4445" else listen
        args.passdb = args.passdb or cfg.passdb
        limits, ntlm_auth = cfg.limits, cfg.ntlm_auth
    elif args.path:
        shares = {args.share: Share(name=args.share, path=os.path.abspath(args.path),
                                    read_only=args.read_only, guest_ok=args.guest,
                                    encrypt=args.encrypt,
                                    vfs_objects=args.vfs_objects.replace(",", " ").split())}
        read_path = args.read_path or "auto"
    else:
        print("give a directory to share, or --config FILE", file=sys.stderr)
        return 2
    for share in shares.values():
        if not os.path.isdir(share.path):
            print(f"share {share.name}: {share.path} is not a directory", file=sys.stderr)
            return 2
    passdb = PasswordDB(args.passdb).load()
    if not passdb.users and not any(share.guest_ok for share in shares.values()):
        print(f"no users in {passdb.path}: add one with `smbring user add NAME` "
              "(or serve with --guest)", file=sys.stderr)
        return 2
    host, _, port = listen.rpartition(":")
    guest = args.guest or any(share.guest_ok for share in shares.values())
    username_map = args.username_map or (cfg.username_map if args.config else None)
    guest_account = args.guest_account or (cfg.guest_account if args.config else None)
    server = Server(shares, passdb_path=passdb.path, allow_guest=guest,
                    signing_required=signing, read_path=read_path, use_uring=not args.no_io_uring,
                    limits=limits, ntlm_auth=ntlm_auth, username_map=username_map,
                    guest_account=guest_account or "nobody")
    problems = server.identities.check(shares, guest) if os.geteuid() == 0 else []
    for problem in problems:
        print(f"configuration: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        asyncio.run(server.serve(host or "127.0.0.1", int(port)))
    except KeyboardInterrupt:
        pass
    return 0
