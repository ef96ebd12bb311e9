"""``smbring serve PATH`` / ``smbring serve --config smb.conf``: share directories;
``smbring testparm FILE``: check an smb.conf.

Mistakes an operator can make (a bad --listen, a port in use or needing privilege, a share
path that is not a directory, a configuration that does not parse) end with one line saying
what and what to do, exit status 2, never a traceback.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field

from smbring.server.users import PasswordDB, default_path

DEFAULT_LISTEN = "127.0.0.1:4445"


def _busy_poll_us(value: str) -> int:
    # (read as smb.conf's `busy poll` is read)
    import argparse
    from smbring.server.smbconf_options import ConfigError, busy_poll_us
    try:
        return busy_poll_us(value, "busy poll")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub) -> None:
    from smbring.server.control import default_path as default_control
    p = sub.add_parser("serve", help="serve a directory over SMB2/3",
                       description="Flags override the configuration file: PATH adds the share "
                                   "--share; --listen, --passdb, --read-path, --busy-poll, --signing-required "
                                   "replace [global]'s settings; --read-only, --encrypt, --guest "
                                   "and --vfs-objects apply to every share.")
    p.add_argument("path", nargs="?", help="directory to share (or use --config)")
    p.add_argument("--config", help="smb.conf: [global] and one section per share (docs/ADMIN.md; "
                                    "SIGHUP reloads it)")
    p.add_argument("--share", default="share", help="share name for PATH (default: share)")
    p.add_argument("--listen", default=None,
                   help=f"HOST:PORT or [IPv6]:PORT (default {DEFAULT_LISTEN}; ignored when systemd "
                        "passes the listening socket)")
    p.add_argument("--read-only", action="store_true", help="refuse every write")
    p.add_argument("--guest", action="store_true",
                   help="allow guest access (guest ok, and map to guest = bad user)")
    p.add_argument("--passdb", help=f"password file, Samba's smbpasswd format (default {default_path()})")
    p.add_argument("--signing-required", action="store_true", help="require signed sessions")
    p.add_argument("--encrypt", action="store_true",
                   help="the share is reached over encrypted sessions only (smb encrypt = required)")
    p.add_argument("--vfs-objects", default="",
                   help="data VFS modules, top first: direct_writes, io_uring, threadpool, posix "
                        "(default: direct_writes over io_uring where available, else over threadpool)")
    p.add_argument("--read-path", default=None, choices=["auto", "copy", "mmap", "splice", "zc"],
                   help="how READ data reaches the socket (default auto)")
    p.add_argument("--busy-poll", type=_busy_poll_us, default=None, metavar="MICROSECONDS",
                   help="after an answer, keep looking for the client's next request this long "
                        "before sleeping: lower latency at one request in flight, more CPU "
                        "(busy poll; default 0, off; at most 10000)")
    p.add_argument("--no-io-uring", action="store_true",
                   help="serve without io_uring: plain asyncio sockets, file data through a thread "
                        "pool (as where io_uring is unavailable)")
    p.add_argument("--event-loop", default=None, choices=["asyncio", "ring", "uvloop"],
                   help="uvloop: libuv's loop (the default, where uvloop is installed); asyncio: "
                        "the standard loop (the default elsewhere); ring: a loop that waits in "
                        "io_uring (docs/EVENTS.md); the environment variable SMBRING_EVENT_LOOP "
                        "sets the default")
    p.add_argument("--username-map", default=None,
                   help="Samba's username map file: client names to account names, mapped before the "
                        "password is checked, as Samba does (as root, also the Unix account a session "
                        "acts as; default: the file's `username map`)")
    p.add_argument("--guest-account", default=None,
                   help="the Unix account guests act as when the server runs as root "
                        "(default: the file's `guest account`, else nobody)")
    p.add_argument("--log-level", default=None,
                   help="debug, info, warning, error, or Samba's number (default: `log level`, else info)")
    p.add_argument("--control-socket", default=None,
                   help=f"where `smbring status` asks (default: `control socket`, else {default_control()}; "
                        "'none': no control socket)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (needs prometheus-client)")
    p.add_argument("--workers", default=None, metavar="N",
                   help="serve with N worker processes under a supervisor, or `auto`: one per "
                        "CPU the server may run on (default: `smbring "
                        "workers`, else 1: one process). With more than one, each client's "
                        "connections (by ClientGuid) are handed to one worker, so multichannel "
                        "and durable handles work as with one (docs/SCALE.md)")
    p.add_argument("--shutdown-timeout", type=float, default=None, metavar="SECONDS",
                   help="on SIGTERM, how long connections may finish their work (default 10)")
    p.set_defaults(func=run)
    t = sub.add_parser("testparm", help="check an smb.conf and print what smbring makes of it")
    t.add_argument("file")
    t.set_defaults(func=testparm)


class SettingsError(ValueError):
    pass


@dataclass
class Settings:
    """What the command line and the configuration file ask for (read again on SIGHUP)."""

    shares: dict
    listen: list                 # (host, port) to bind, the first at least
    passdb: str
    signing_required: bool
    read_path: str
    limits: object
    ntlm_auth: str
    options: dict = field(default_factory=dict)    # [global] as read
    guest: bool = False          # guest logons (--guest, or any share with guest ok)
    server_info: object = None   # what share listing says of the server (smb.rpc.services)
    policy: object = None        # [global]'s security settings (smb.policy)
    username_map: str | None = None   # SMB user name -> Unix account (as root)
    guest_account: str = "nobody"     # the account guests act as (as root)
    hosts_allow: tuple = ()
    hosts_deny: tuple = ()
    kerberos: object = None           # server.kerberos.KerberosSettings; None: not offered
    busy_poll: int = 0                # microseconds (server.busy_poll)


def configuration(args):
    """The configuration to serve: the file's, with the command line's flags over it."""
    from smbring.server.config import Config, load, override
    from smbring.smb.policy import Policy

    cfg = load(args.config) if args.config else Config(policy=Policy(map_to_guest="never"))
    return override(cfg, path=args.path, share=args.share, listen=args.listen, passdb=args.passdb,
                    read_path=args.read_path, signing_required=args.signing_required,
                    read_only=args.read_only, guest=args.guest, encrypt=args.encrypt,
                    vfs_objects=args.vfs_objects, busy_poll=args.busy_poll)


def load_settings(args) -> Settings:
    from smbring.server import service
    from smbring.server.accounts import UnixAccounts
    from smbring.server.config import ConfigError, default_netbios_name
    from smbring.server.unix_names import UnixNames
    from smbring.smb.rpc.services import ServerInfo

    if not args.config and not args.path:
        raise SettingsError("give a directory to share, or --config FILE")
    if args.path and not os.path.isdir(args.path):
        raise SettingsError(f"share {args.share}: {args.path} is not a directory")
    if args.listen:
        service.parse_listen(args.listen)       # a ListenError with a hint, before anything else
    try:
        cfg = configuration(args)
    except (OSError, ConfigError) as e:
        raise SettingsError(f"configuration {args.config}: {' '.join(str(e).split())}") from None
    cfg.policy.accounts = UnixAccounts()
    cfg.policy.unix_names = UnixNames()
    return Settings(cfg.shares, cfg.listen, cfg.passdb or default_path(), cfg.signing_required,
                    cfg.read_path, cfg.limits, cfg.ntlm_auth, cfg.options,
                    guest=any(share.guest_ok for share in cfg.shares.values()),
                    server_info=cfg.server_info or ServerInfo(name=default_netbios_name()),
                    policy=cfg.policy, hosts_allow=cfg.hosts_allow, hosts_deny=cfg.hosts_deny,
                    username_map=args.username_map or cfg.username_map,
                    guest_account=args.guest_account or cfg.guest_account or "nobody",
                    kerberos=cfg.kerberos, busy_poll=cfg.busy_poll)


def testparm(args) -> int:
    """Like Samba's `testparm -s FILE`: the effective settings on stdout, notices on stderr;
    exit status 1 when the server would not start."""
    import logging

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


def service_options(args, settings: Settings):
    """The control socket, metrics and shutdown timeout: the command line, else [global]."""
    from smbring.server.control import default_path as default_control
    from smbring.server.service import Extras, parse_listen
    options = settings.options
    control = args.control_socket or options.get("control socket") or default_control()
    metrics = args.metrics or options.get("metrics port")
    if metrics and ":" not in metrics:
        metrics = f"127.0.0.1:{metrics}"        # `metrics port = 9445`: on loopback
    timeout = args.shutdown_timeout
    if timeout is None and "shutdown timeout" in options:
        try:
            timeout = float(options["shutdown timeout"])
        except ValueError:
            raise SettingsError(f"shutdown timeout: expected seconds, not {options['shutdown timeout']!r}") from None
    if timeout is not None and timeout < 0:
        raise SettingsError("shutdown timeout: must be 0 or more seconds")
    return Extras(control_socket=None if control.lower() == "none" else control,
                  metrics=parse_listen(metrics) if metrics else None,
                  shutdown_timeout=10.0 if timeout is None else timeout)


MAX_WORKERS = 256


def worker_count(args, options: dict) -> int:
    """--workers, else [global]'s `smbring workers`, else 1; `auto`: the CPUs the process may
    run on (its affinity: a container's or a `taskset`'s limit, not the machine's count)."""
    value = args.workers if getattr(args, "workers", None) is not None else options.get("smbring workers", "1")
    text = str(value).strip()
    if text.lower() == "auto":
        return min(len(os.sched_getaffinity(0)), MAX_WORKERS)
    try:
        count = int(text)
    except ValueError:
        raise SettingsError(f"smbring workers: expected a number of processes or auto, not {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise SettingsError(f"smbring workers: from 1 to {MAX_WORKERS}, not {count}")
    return count


def run(args) -> int:
    from smbring.server import logs, service, systemd
    try:
        event_loop_factory(args)        # (checked before anything starts; used in serve_process)
    except ValueError as e:
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args)
        logs.configure(logs.settings(settings.options, args.log_level))
        extras = service_options(args, settings)
        args.workers_in_force = worker_count(args, settings.options)
        listeners = systemd.listen_fds()
        if not listeners:
            listeners = [service.bind(host, port) for host, port in settings.listen]
        if extras.metrics is not None:      # (an address in use stops the server here)
            try:
                extras.metrics_listener = service.bind(*extras.metrics)
            except service.ListenError as e:
                raise service.ListenError(f"metrics: {e}") from None
    except (SettingsError, logs.LogError, service.ListenError) as e:
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2
    except OSError as e:         # a log file or an inherited descriptor that cannot be used
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2
    passdb = PasswordDB(settings.passdb).load()
    if not passdb.users and not settings.guest and settings.kerberos is None:
        print(f"smbring serve: no user in {passdb.path} can log on: add one with "
              f"`smbring user add NAME --passdb {passdb.path}` (or serve with --guest)", file=sys.stderr)
        return 2
    if args.workers_in_force > 1:
        return supervise(args, settings, listeners, extras)
    return serve_process(args, settings, listeners, extras)


def supervise(args, settings: Settings, listeners, extras) -> int:
    """--workers N, N > 1: the supervisor (server.workers) forks N processes that each run
    serve_process() with their part of the shared state in the store."""
    import dataclasses
    import logging

    from smbring.server import workers
    from smbring.server.accounts import Accounts
    log = logging.getLogger("smbring.server")
    count = args.workers_in_force
    problems = (Accounts(settings.username_map, settings.guest_account).check(settings.shares, settings.guest)
                if os.geteuid() == 0 else [])
    for problem in problems:
        print(f"smbring serve: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:        # (each worker acquires its own credentials; the reason is said once, here)
        kerberos_acceptor(settings, extras.control_socket, lambda user: user)
    except SettingsError as e:
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2
    if extras.metrics is not None:
        if not extras.control_socket:      # the supervisor gathers the workers' metrics there
            print("smbring serve: metrics with more than one worker need the control socket "
                  "(`control socket = none` turns it off)", file=sys.stderr)
            return 2
        log.info("metrics on http://%s:%d/metrics (all workers)", *extras.metrics)
    try:
        store, _lock = workers.store_directory(extras.control_socket)     # (held until exit)
    except OSError as e:
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2

    def serve_worker(setup, worker_sockets) -> int:
        control = workers.worker_control_path(extras.control_socket, setup.worker)
        worker_extras = dataclasses.replace(extras, metrics=None, metrics_listener=None, control_socket=control,
                                            metrics_collected=extras.metrics is not None)
        return serve_process(args, settings, worker_sockets, worker_extras, setup)

    def reopen_log() -> None:     # the log settings of the file as it is now
        from smbring.server import logs
        options = configuration(args).options if args.config else {}
        logs.configure(logs.settings(options, args.log_level))

    return workers.Supervisor(count, listeners, serve_worker, store_directory=store,
                              control_path=extras.control_socket,
                              shutdown_timeout=extras.shutdown_timeout, reopen_log=reopen_log,
                              metrics_listener=extras.metrics_listener).run()


def serve_process(args, settings: Settings, listeners, extras, worker=None) -> int:
    """One server process: the whole server, or one worker of several (`worker`: its
    server.workers.WorkerSetup)."""
    from smbring.server import logs, service
    from smbring.server.server import Server
    server = Server(settings.shares, passdb_path=PasswordDB(settings.passdb).path, allow_guest=settings.guest,
                    signing_required=settings.signing_required, read_path=settings.read_path,
                    use_uring=not args.no_io_uring, limits=settings.limits, ntlm_auth=settings.ntlm_auth,
                    server_info=settings.server_info, policy=settings.policy,
                    hosts_allow=settings.hosts_allow, hosts_deny=settings.hosts_deny,
                    username_map=settings.username_map, guest_account=settings.guest_account,
                    worker=worker, busy_poll=settings.busy_poll)
    logs.act_as_server(server.server_moment)    # a record written while acting as a user
    problems = server.identities.check(settings.shares, settings.guest) if os.geteuid() == 0 else []
    for problem in problems:
        print(f"smbring serve: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        server.kerberos = kerberos_acceptor(settings, extras.control_socket, server.kerberos_account,
                                            server.as_server)
    except SettingsError as e:      # told to offer Kerberos, and cannot: it does not start
        print(f"smbring serve: {e}", file=sys.stderr)
        return 2
    if server.kerberos is not None:
        import logging
        logging.getLogger("smbring.server").info("%s", server.kerberos.describe())

    def reload() -> str:
        # as the server: the event loop's thread may still act as the last session's account
        # (see vfs.identity), which may not read the configuration or open the log
        with server.creds.as_server() if server.creds else contextlib.nullcontext():
            return reload_as_server()

    def reload_as_server() -> str:
        if not args.config:
            logs.configure(logs.settings({}, args.log_level), server.server_moment)  # reopens the log
            return "nothing to read (no --config); the log reopened"
        from smbring.server.accounts import Accounts
        from smbring.server.config import restart_only_changes
        new = load_settings(args)
        problems = (Accounts(new.username_map, new.guest_account).check(new.shares, new.guest)
                    if os.geteuid() == 0 else [])
        if problems:        # (the reload fails; the configuration in force stays)
            raise SettingsError("; ".join(problems))
        # (a Kerberos that cannot be offered fails the reload too, before anything changed)
        kerberos = kerberos_acceptor(new, extras.control_socket, server.kerberos_account,
                                     server.as_server)
        logs.configure(logs.settings(new.options, args.log_level), server.server_moment)
        # the options a reload cannot apply, compared with those in force since the start
        for name in restart_only_changes(settings.options, new.options):
            server_log(f"{name} takes effect at restart (now {new.options.get(name, '(not set)')!r} "
                       f"in the file; {settings.options.get(name, '(not set)')!r} stays in force)")
        before = server.shares
        server.reconfigure(new.shares, passdb_path=new.passdb, allow_guest=new.guest,
                           signing_required=new.signing_required, read_path=new.read_path,
                           limits=new.limits, ntlm_auth=new.ntlm_auth, server_info=new.server_info,
                           policy=new.policy, hosts_allow=new.hosts_allow, hosts_deny=new.hosts_deny,
                           username_map=new.username_map, guest_account=new.guest_account,
                           kerberos=kerberos, busy_poll=new.busy_poll)
        return describe_change(before, new.shares)

    try:
        # each process makes its own loop (a worker's ring cannot cross the fork)
        with asyncio.Runner(loop_factory=event_loop_factory(args)) as runner:
            return runner.run(service.run(server, listeners, extras, reload))
    except KeyboardInterrupt:       # a second ^C while stopping
        return 130


def kerberos_acceptor(settings: Settings, control_socket: str | None, account, as_server=None):
    """The server's Kerberos acceptor (server.kerberos.Kerberos) where the configuration asks
    for Kerberos, its replay cache in the server's run directory (the control socket's);
    None where it does not. SettingsError with the reason where it cannot be offered.
    `as_server`: the context that makes the event loop's thread the server's (root's)."""
    if settings.kerberos is None:
        return None
    from smbring.server.control import ControlError, _prepare_directory
    from smbring.server.control import default_path as default_control
    from smbring.server.kerberos import Kerberos, KerberosError
    run = os.path.dirname(os.path.abspath(control_socket or default_control()))
    try:
        _prepare_directory(run)
        return Kerberos(settings.kerberos, run, account, as_server)
    except (KerberosError, ControlError, OSError) as e:
        raise SettingsError(f"Kerberos: {e}") from None


def event_loop_factory(args):
    """The loop factory `--event-loop` (or SMBRING_EVENT_LOOP) asks for; by default uvloop's,
    else (uvloop not installed) asyncio's. ValueError when the choice is unknown or cannot
    work here."""
    chosen = args.event_loop or os.environ.get("SMBRING_EVENT_LOOP")
    name = chosen or "uvloop"
    if name == "uvloop":
        # libuv's loop: its turn is C, not asyncio's Python, which a request that waits for
        # its own wake-up (one in flight) pays in full; the ring, where used, signals it
        # through an eventfd and submits in one call_soon per turn (uring.aio)
        try:
            import uvloop
        except ImportError:
            if chosen:
                raise ValueError("--event-loop uvloop: uvloop is not installed "
                                 "(pip install uvloop)") from None
            name = "asyncio"
        else:
            return uvloop.new_event_loop
    if name == "asyncio":
        if args.no_io_uring:
            return None
        # asyncio's selector loop, whose io_uring submits in the poll the loop makes anyway
        # instead of in one more turn of the loop
        try:
            from smbring.uring.aio import FlushingEventLoop
        except ImportError:      # no io_uring engine built: nothing to flush
            return None
        return FlushingEventLoop
    if name != "ring":
        raise ValueError(f"SMBRING_EVENT_LOOP={name!r}: the event loop is asyncio, ring or uvloop")
    if args.no_io_uring:
        if args.event_loop is None:
            return None      # the variable is a default, and --no-io-uring says otherwise
        raise ValueError("--event-loop ring waits in io_uring: it cannot go with --no-io-uring")
    from smbring import uring
    if not uring.available():
        raise ValueError(f"--event-loop ring: io_uring is unavailable ({uring.unavailable_reason()})")
    from smbring.uring.loop import RingEventLoop
    return RingEventLoop


def server_log(message: str) -> None:
    import logging
    logging.getLogger("smbring.server").warning("%s", message)


def describe_change(before: dict, after: dict) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    parts = [f"{what} {', '.join(names)}" for what, names in
             (("added", added), ("changed", changed), ("removed", removed)) if names]
    return f"shares {', '.join(sorted(after))}" + (f" ({'; '.join(parts)})" if parts else " (unchanged)")
