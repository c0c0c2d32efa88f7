"""`ssed`: argv and exit codes. Builds the config, the hub and the loop and wires them."""
import argparse
import gc
import os
import socket
import sys
import time

from . import __version__
from . import config as configmod
from . import auth, lookup, plugins, sources, tls
from .control import CommandError
from .hub import Hub
from .children import become_subreaper, kill_descendants
from .cluster import Cluster
from .redisconn import resolve
from .log import Logger, escape, under_journald
from .loop import Loop
from .stalls import Stalls
from .systemd import Notifier
from . import fdstore, receiving, takeover
from .handover import HandoverError
from .listening import StartupError, listen_tcp, describe, sockets


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="ssed", description="Server-Sent Events broadcast daemon")
    ap.add_argument("-c", "--config", metavar="FILE", help="the INI config (default: "
                    "$SSED_CONFIG, else the embedded default)")
    ap.add_argument("--check", action="store_true", help="validate the config and exit")
    ap.add_argument("--console", action="store_true", help="also read control commands on stdin")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return ap.parse_args(argv)


def read_config(path, loader=None):
    """The Config, with plugins imported and checked and the files the sources read checked,
    every error in one pass; ConfigError otherwise. `loader`: the daemon's Plugins, which
    keeps what changed on disk aside until `commit`."""
    loader = loader or plugins.Plugins()
    checks = (configmod.has_services, sources.check, loader.check, auth.check, tls.check)
    if not path:
        return configmod.default(checks)
    plugin_dir = os.path.dirname(os.path.abspath(path))
    if plugin_dir not in sys.path:
        sys.path.insert(0, plugin_dir)     # `class = mymod:Cls` next to the ini
    return configmod.load(path, checks)


MIN_TOKEN = 16      # bytes; a shorter token is a password a client can guess


def short_tokens(cfg):
    """A warning for each token too short to be secret: where it is set, never its value."""
    warnings = []
    for sc in cfg.services + cfg.templates:
        for key in ("token", "publish_token"):
            size = len((getattr(sc, key) or "").encode())
            if 0 < size < MIN_TOKEN:
                warnings.append(f"{cfg.file}:{sc.lines.get(key, sc.line)}: {sc.path}: {key} "
                                f"is only {size} bytes long; a token that short can be "
                                f"guessed: use {MIN_TOKEN} or more random characters")
    return warnings


class Daemon:
    """The running daemon's config and how to reload it."""

    def __init__(self, path, cfg, hub, log, notify, loader):
        self.path, self.cfg, self.hub, self.log, self.notify = path, cfg, hub, log, notify
        self.plugins = loader       # the Plugins that loaded cfg's modules: it knows their files
        self.loop = None
        self.listeners = {}
        self.activated = False
        self.control = (None, False)    # the control socket, and whether we unlink it
        self.successor = None           # who has our sockets now (SPEC 13)
        self.spare = None               # the pid of the new process, which lives on

    def attach(self, loop, listeners, activated):
        self.loop, self.listeners, self.activated = loop, listeners, activated

    def _rebind(self, new):
        """Bind the listen entries that are new, close the ones that went; all or nothing."""
        if self.activated or new.listen == self.cfg.listen:
            return []
        added = {}
        try:
            for entry in new.listen:
                if entry not in self.listeners:
                    added[entry] = listen_tcp(*entry, self.cfg.reuse_port)
        except StartupError as exc:
            for sock in added.values():
                sock.close()
            raise CommandError(str(exc)) from None
        kept = {e: s for e, s in self.listeners.items() if e in new.listen}
        gone = [s for e, s in self.listeners.items() if e not in new.listen]
        self.listeners = kept | added
        self.loop.acceptor.set_listeners(list(self.listeners.values()), gone)
        return [f"listening on {describe(s)}" for s in added.values()]

    def control_info(self):
        """(control socket, whether its path is ours to unlink, its path) for a handover."""
        return (*self.control, self.cfg.control)

    def let_go(self, successor, spare=None):
        """`successor` (the new process, or systemd's fd store) has the listeners and the
        control socket: our descriptors of them go (theirs stay open), the path stays at
        exit, and process `spare` (the new one) is not killed with our children."""
        acceptor = self.loop.acceptor
        acceptor.stop_listening()
        if acceptor.control_sock is not None:
            self.loop.unwatch(acceptor.control_sock)
            acceptor.control_sock.close()
            acceptor.control_sock = None
        self.successor, self.spare = successor, spare

    def reload(self):
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            return self._reload()
        finally:
            self.notify("READY=1", self.status())

    def _reread_pair(self, new):
        """The new pair's context (None without one): read again on every reload, since a
        renewal replaces the files under the same names; a bad pair refuses the reload and
        the old context goes on serving."""
        if not new.tls_cert:
            return None
        try:
            return tls.context(new.tls_cert, new.tls_key)
        except tls.PairError as exc:
            raise CommandError(f"{exc.key}: {exc}: the old certificate is kept") from None

    def https(self, cfg, context):
        """The listeners that speak HTTPS (those systemd passed too), given `context`."""
        if context is None:
            return []
        plain = tls.listeners_plain(cfg)
        return [s for e, s in self.listeners.items() if e not in plain]

    def status(self):
        return self.loop.status_line()

    def _reload(self):
        """Apply the config file again, or change nothing: every refusal (whether the reload
        came by signal or by command) is logged here with its reasons."""
        try:
            new = read_config(self.path, self.plugins)
            _keeps_a_service(self.cfg, new)
            changes = configmod.diff(self.cfg, new)
            new, at_restart = configmod.restart_only(self.cfg, new)
            context = self._reread_pair(new)
            changes += self._rebind(new)
        except configmod.ConfigError as exc:
            self.log("error", "reload refused, config unchanged:\n" + str(exc))
            raise CommandError(f"config not valid, nothing changed: {exc.errors[0]}"
                               + (f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1
                                  else ""), errors=exc.errors) from None
        except CommandError as exc:
            self.log("error", f"reload refused, config unchanged: {exc}")
            raise
        if context is not None or new.tls_cert != self.cfg.tls_cert:
            self.loop.acceptor.use_tls(context, self.https(new, context))
            changes.append(f"TLS certificate read from {new.tls_cert} for new connections"
                           if context is not None else "no TLS: the listeners speak plain HTTP")
        for name in self.plugins.commit():
            users = [sc.path for sc in new.services + new.templates
                     if sc.cls and sc.cls.split(":")[0] == name]
            changes.append(f"reloaded module {name} (restarts {', '.join(users)})")
        for key in ("control", "control_mode", "control_group"):
            if getattr(new, key) != getattr(self.cfg, key):
                changes.append(f"[ssed] {key} changes only on restart")
        self.hub.reload(new)
        self.cfg = new
        self.log("info", "reloaded: " + ("; ".join(changes) or "no changes"))
        for warning in at_restart:
            self.log("warning", warning)
        for warning in short_tokens(new):
            self.log("warning", warning)
        return changes


def _keeps_a_service(old, new):
    """A reload that would remove every service is refused: it is far more likely a file
    caught half written (or the wrong file) than a wish to drop every stream and history."""
    kept = ({sc.path for sc in new.services + new.templates}
            & {sc.path for sc in old.services + old.templates})
    if (old.services or old.templates) and not kept:
        raise CommandError(
            "it would remove every service (" + ", ".join(sc.path for sc in
                                                          old.services + old.templates)
            + "); to replace them all, add the new services and reload, then remove the old "
              "ones and reload again (or restart)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = args.config or os.environ.get("SSED_CONFIG") or None
    loader = plugins.Plugins()
    try:
        cfg = read_config(path, loader)
    except configmod.ConfigError as exc:
        print(str(exc), file=sys.stderr if not args.check else sys.stdout)
        return 1
    if args.check:
        print("ok")
        return 0
    try:
        stderr_stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        stderr_stat = None
    log = Logger(sys.stderr, args.log_level, time.time, under_journald(os.environ, stderr_stat))
    for warning in short_tokens(cfg):
        log("warning", warning)
    try:
        return serve(path, cfg, log, args.console, loader)
    except StartupError as exc:
        print(f"ssed: {escape(str(exc))}", file=sys.stderr)     # one line, whatever it holds
        return 1


def make_cluster(settings, hub, log, listeners, handed=None):
    """This node of the cluster (SPEC 12): Redis's address resolved now, since the loop
    never blocks on a name; the node named after the host and its first listener's port.
    `handed`: the record the previous process handed over (an upgrade, the fd store), whose
    address serves if the name does not resolve now (the lookups go on: lookup.py)."""
    try:
        target = resolve(settings.redis)
    except OSError as exc:
        why = f"cannot resolve {settings.redis.host}: {exc.strerror or exc}"
        target = _handed_target(settings, handed)
        if target is None:
            raise StartupError(f"[cluster] redis: {why}") from None
        log("warning", f"cluster: {why}; connecting to {lookup.shown(target)}, where the "
            "previous process did")
    node = settings.node
    if not node:
        port = next((s.getsockname()[1] for s in listeners.values()
                     if s.family != socket.AF_UNIX), 0)
        node = f"{socket.gethostname()}:{port}"
    cluster = Cluster(settings, node, hub, log)
    cluster.target = target
    log("info", f"cluster: node {node}, Redis at {describe_redis(settings.redis)}, "
        f"prefix {settings.prefix}")
    return cluster


def _handed_target(settings, handed):
    """The (family, sockaddr) the previous process connected to for this same `redis`."""
    saved = (handed or {}).get("redis")
    if not isinstance(saved, dict) or saved.get("address") != str(settings.redis):
        return None
    sockaddr = saved.get("sockaddr")
    try:
        family = socket.AddressFamily(saved["family"])
        return family, sockaddr if type(sockaddr) is str else tuple(sockaddr)
    except (KeyError, TypeError, ValueError):
        return None


def describe_redis(address):
    return address.path if address.path is not None else f"{address.host}:{address.port}"


def serve(path, cfg, log, console, loader):
    notify = Notifier(os.environ)
    handing, (listeners, control_sock, activated, own_control, received) = _opened(
        cfg, log, notify)
    # What a command leaves running in a session of its own comes back to us when its shell
    # exits, to be reaped, and killed when we stop (below).
    if not become_subreaper():
        log("info", "not the subreaper of the commands' processes (Linux only): a job a "
            "command starts in a session of its own may outlive ssed")
    daemon, loop = _assemble(path, cfg, log, notify, loader, console,
                             (listeners, control_sock, activated),
                             received.document if received is not None else None)
    https = _serve_tls(cfg, daemon, loop)
    daemon.control = (control_sock, own_control)
    first, received, made = _first_part(handing, received, loop)
    if received is not None:
        takeover.before_start(received.document, loop.hub)
    loop.hub.start()
    loop.start()
    _announce(log, cfg, listeners, https, control_sock)
    if received is not None:
        try:
            takeover.finish(received, handing, loop, log, notify, first, made)
        except (HandoverError, OSError, KeyError, TypeError, ValueError) as exc:
            raise StartupError(f"handover: {exc}") from None
        received = first = made = None  # (its blob maps the record: tens of MB at 10,000 streams)
    log("info", f"ready: {len(loop.hub.channels)} services")
    notify("READY=1", daemon.status())
    _freeze_startup_objects(collect=handing is None)
    try:
        loop.run()
    finally:
        loop.close()
        _after(daemon, cfg, log)
    log("info", "stopped" if daemon.successor is None
        else f"handed over to {daemon.successor}")
    return 0


def _opened(cfg, log, notify):
    """(the upgrade's handing, or None; the sockets to serve: see listening.sockets)."""
    try:
        handing = receiving.inherited(os.environ)
        if handing is not None:
            # An upgrade (SPEC 13): our config is read; the old process hands us its sockets.
            gc.disable()    # until it serves: a restore makes ~10 objects a stream (-15 % freeze)
            received = receiving.ready_then_receive(handing)
    except HandoverError as exc:
        raise StartupError(str(exc)) from None
    if handing is None:
        return None, sockets(cfg, log, notify)
    listeners, (control_sock, own_control) = received.listeners(), received.control()
    activated = any(entry[0] == "systemd" for entry in listeners)
    return handing, (listeners, control_sock, activated, own_control, received)


def _first_part(handing, received, loop):
    """(the first part, the rest part, the streams made from the first) of an upgrade in two
    parts: the streams are made while the old process still serves; then the rest comes,
    frozen (SPEC 13). Otherwise (None, `received`, ())."""
    if handing is None or received.document.get("part") != "first":
        return None, received, ()
    try:
        rest, made = takeover.prepare(received, handing, loop)
    except (HandoverError, KeyError, TypeError, ValueError) as exc:
        raise StartupError(f"handover: {exc}") from None
    return received, rest, made


def _assemble(path, cfg, log, notify, loader, console, opened, document):
    """The hub (and its cluster), the Daemon and the Loop, wired to one another. `opened`:
    the listeners, the control socket, whether systemd handed the listeners over;
    `document`: what a previous process handed over, if any."""
    listeners, control_sock, activated = opened
    stalls = Stalls(log)
    hub = Hub(cfg, log, now=time.time(), timed=stalls.timed)
    if cfg.cluster is not None:
        hub.cluster = make_cluster(cfg.cluster, hub, log, listeners, document)
    daemon = Daemon(path, cfg, hub, log, notify, loader)
    loop = Loop(hub, list(listeners.values()), control_sock, log, daemon.reload, notify,
                console=sys.stdin if console else None, stalls=stalls)
    daemon.attach(loop, listeners, activated)
    loop.handovers.daemon = daemon
    loop.handovers.store = fdstore.Store(daemon, notify, log)
    return daemon, loop


def _serve_tls(cfg, daemon, loop):
    """The HTTPS listeners (SPEC 14), with the certificate pair loaded."""
    try:
        context = tls.context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
    except tls.PairError as exc:
        raise StartupError(f"{exc.key}: {exc}") from None
    https = daemon.https(cfg, context)
    loop.acceptor.use_tls(context, https)
    return https


def _announce(log, cfg, listeners, https, control_sock):
    for sock in listeners.values():
        log("info", f"listening on {describe(sock)}")
    if https:
        log("info", f"HTTPS on {', '.join(map(describe, https))} (certificate {cfg.tls_cert})")
    if control_sock is not None:
        log("info", f"control socket {control_sock.getsockname()}")


def _freeze_startup_objects(collect):
    """What start-up made (modules, config) lives as long as the daemon: keep the cyclic
    collector from walking it again on every full collection. (After an upgrade, streams
    wait for our first turn: no full collection first, only the freeze.)"""
    if collect:
        gc.collect()
    gc.freeze()
    gc.enable()


def _after(daemon, cfg, log):
    """At exit: the control socket unlinked (unless another process has it now), and the
    processes commands left behind killed (not the new process of an upgrade)."""
    sock, owned = daemon.control
    if owned and daemon.successor is None:
        try:
            os.unlink(cfg.control)
        except OSError:
            pass
    killed = kill_descendants(spare=daemon.spare)
    if killed:
        log("info", f"killed {killed} process(es) that commands had left running")
