"""The sockets a daemon starts with: its listeners and its control socket, bound from the
config, handed over by systemd (socket activation), or taken back from systemd's fd store
(SPEC 13); and StartupError, what stops a start (one clear line, exit 1)."""
import os
import socket
import stat

from . import fdstore
from .handover import HandoverError
from .systemd import ActivationError, listen_fds, stored_fds


class StartupError(Exception):
    """Something that stops the daemon from starting: one clear line, exit 1."""


def bind_listeners(cfg):
    socks = []
    try:
        for host, port in cfg.listen:
            socks.append(listen_tcp(host, port, cfg.reuse_port))
    except StartupError:
        for s in socks:
            s.close()
        raise
    return socks


def listen_tcp(host, port, reuse_port=False):
    try:
        family, type_, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, type_, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:      # several nodes share the port; the kernel spreads the connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def bind_control(cfg):
    path = cfg.control
    if not path:
        return None
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise StartupError(f"control socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise StartupError(f"control socket {path}: another daemon is listening on it")
        except OSError:
            os.unlink(path)     # a stale socket from a daemon that is gone
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~cfg.control_mode)    # no window where it is more open
    try:
        sock.bind(path)
        os.chmod(path, cfg.control_mode)
        if cfg.control_group:
            os.chown(path, -1, _group_id(cfg.control_group))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        os.unlink(path) if os.path.exists(path) else None
        raise StartupError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    return sock


def _group_id(name):
    import grp
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise OSError(f"no group {name!r}") from None


def describe(sock):
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sockets(cfg, log, notify):
    """Listeners by listen entry, the control socket, whether systemd handed the listeners
    over, whether the control socket is ours to unlink at exit, and what a previous run
    left in systemd's fd store (a receiving.Received, or None; SPEC 13)."""
    try:
        passed = listen_fds(os.environ, os.getpid())
        stored = stored_fds(os.environ, os.getpid())
        received = fdstore.take(stored, notify, log) if stored else None
    except (ActivationError, HandoverError) as exc:
        raise StartupError(str(exc)) from None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)      # not for our children
    kept = received.listeners() if received is not None else {}
    control, owned = received.control() if received is not None else (None, False)
    if control is not None and not fdstore.at_path(control, cfg.control):
        control.close()                 # its path is gone: bound anew (SPEC 13)
        control = None
    if not passed:
        listeners = kept or dict(zip(cfg.listen, bind_listeners(cfg)))
        if control is None:
            control, owned = bind_control(cfg), True
        return listeners, control, False, owned and control is not None, received
    for sock in kept.values():
        sock.close()                    # the socket unit's listeners come first
    passed_control = next((sock for name, sock in passed
                           if name == "control" or sock.family == socket.AF_UNIX), None)
    listeners = {("systemd", i): sock for i, (_, sock) in enumerate(passed)
                 if sock is not passed_control}
    log("info", f"socket activation: {len(listeners)} listeners"
        + (", the control socket" if passed_control else "") + " from systemd")
    if passed_control is not None:
        if control is not None:
            control.close()
        return listeners, passed_control, True, False, received
    if control is None:
        control, owned = bind_control(cfg), True
    return listeners, control, True, owned and control is not None, received
