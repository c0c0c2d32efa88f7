"""ssectl, the control tool (SPEC section 6): one JSON request line to the daemon's control
socket, one answer line back, shown as a table or, with --json, as it came. And `listen`,
which prints a stream's events as they arrive (the client itself is in `sseclient`), and
`token`, which mints a JWT with the config's hs key (SPEC section 11).

COMMANDS is the one table of control commands: each one's arguments, how its request is
built from them, and how its answer is shown to a person.

Exit status: 0 ok, 1 the daemon (or the HTTP server) said no, 2 usage, 3 cannot connect.
"""
import argparse
import functools
import json
import os
import socket
import sys
import time
from typing import Callable, NamedTuple

from . import __version__, sseclient
from . import ctlshow as show

OK, REFUSED, USAGE, NO_CONNECTION = 0, 1, 2, 3
SYSTEM_SOCKET = "/run/ssed/control.sock"
TIMEOUT = 30.0              # seconds to connect and to get the answer


class Exit(Exception):
    """End ssectl with `code`, after printing `message` (if any) as `ssectl: message`."""

    def __init__(self, code, message=""):
        super().__init__(message)
        self.code = code


# ---- requests -----------------------------------------------------------------------------

def _read_stdin():
    """The data to publish from standard input: UTF-8, less one final newline."""
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise Exit(USAGE, f"standard input is not UTF-8: {e.reason} at byte {e.start}") from None
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            return text[:-len(end)]
    return text


def _build_publish(a):
    data = _read_stdin() if a.data in (None, "-") else a.data
    return {"cmd": "publish", "service": a.service, "data": data, "event": a.event,
            "client": a.client}


def _positive(text):
    """argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


class Command(NamedTuple):
    help: str
    args: tuple                          # (names, argparse keyword arguments) pairs
    build: Callable[[argparse.Namespace], dict]
    show: Callable[[dict], str]


SERVICE = (("service",), {"metavar": "SERVICE", "help": "a service path, e.g. /chat"})
ADDR = (("addr",), {"metavar": "ADDR", "help": "an IP address or CIDR range"})

COMMANDS = {
    "publish": Command(
        "send an event to a service's streams",
        (SERVICE, (("data",), {"nargs": "?", "metavar": "DATA",
                               "help": "the data; '-' or absent: standard input less one final newline"}),
         (("-e", "--event"), {"help": "the event type (default: the service's)"}),
         (("--client",), {"metavar": "ID", "help": "send to this client id only"})),
        _build_publish, show.show_publish),
    "list": Command("list the services", (), lambda a: {"cmd": "list"}, show.show_list),
    "stats": Command("show the daemon's counters", (), lambda a: {"cmd": "stats"}, show.show_stats),
    "cluster": Command("show this node's view of the cluster", (),
                       lambda a: {"cmd": "cluster"}, show.show_cluster),
    "reload": Command("read the config again", (), lambda a: {"cmd": "reload"}, show.show_reload),
    "upgrade": Command("start the code and config now on disk, every stream kept (SPEC 13)",
                       (), lambda a: {"cmd": "upgrade"}, show.show_upgrade),
    "bans": Command("list the banned addresses", (), lambda a: {"cmd": "bans"}, show.show_bans),
    "channels": Command("list a template's channels", (
        (("template",), {"metavar": "TEMPLATE", "help": "a template path, e.g. /user/*"}),),
        lambda a: {"cmd": "channels", "template": a.template}, show.show_channels),
    "clients": Command("list a service's clients", (SERVICE,),
                       lambda a: {"cmd": "clients", "service": a.service}, show.show_clients),
    "kick": Command("close a client's streams", (SERVICE, (("client",), {"metavar": "CLIENT"})),
                    lambda a: {"cmd": "kick", "service": a.service, "client": a.client},
                    show.show_closed),
    "ban": Command("refuse an address (403) and close its streams",
                   (ADDR, (("seconds",), {"nargs": "?", "type": _positive, "default": 3600,
                                          "metavar": "SECONDS", "help": "default 3600"})),
                   lambda a: {"cmd": "ban", "ip": a.addr, "seconds": a.seconds}, show.show_closed),
    "unban": Command("lift a ban", (ADDR,), lambda a: {"cmd": "unban", "ip": a.addr},
                     show.show_closed),
    "admin": Command("pass arguments to a service's admin hook",
                     (SERVICE, (("args",), {"nargs": argparse.REMAINDER, "metavar": "ARGS"})),
                     lambda a: {"cmd": "admin", "service": a.service, "args": a.args},
                     show.show_admin),
    "help": Command("the daemon's text-form commands and quoting",
                    (), lambda a: {"cmd": "help"}, show.show_help),
}


# ---- the control socket -------------------------------------------------------------------

def socket_path(args, env):
    """-s, else the control of -c, else $SSED_SOCKET, else the system socket if it exists,
    else ./ssed.sock."""
    if args.socket:
        return args.socket
    if args.config:
        return _config_socket(args.config)
    if env.get("SSED_SOCKET"):
        return env["SSED_SOCKET"]
    if os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return "./ssed.sock"


def _config_socket(path):
    """The control socket that the config at `path` names. Only [ssed]'s `control` is read,
    tolerantly: judging the rest of the file is the daemon's job (a broken config is what
    `ssectl -c FILE reload` is for), so nothing else in it stops ssectl from asking. A
    relative path and the default resolve against the file's directory, as the daemon's do."""
    from . import config
    control = _config_value(path, "control")
    if control is None:
        control = next(k.default for k in config.KEYS if k.name == "control")
    if not control:
        raise Exit(USAGE, f"{path}: no control socket configured (control is empty)")
    return os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(path)), control))


def _config_value(path, name):
    """[ssed]'s `name` in the config at `path` (None if not given), read as the daemon's line
    reader reads it, so that comments read the same."""
    from . import ini
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace").removeprefix("\ufeff")
    except OSError as e:
        raise Exit(USAGE, f"{path}: cannot read: {e.strerror or e}") from None
    sections = ini.read_sections(text, lambda line, why: None)
    ssed = next((s for s in sections if s.name == "ssed"), None)
    given = [value for key, value, _ in (ssed.entries if ssed else ()) if key == name]
    return given[0] if given else None


def ask(path, request, timeout=TIMEOUT):
    """Send one request line to the control socket at `path`; the answer line, as text."""
    line = _request_line(request)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise Exit(NO_CONNECTION, f"cannot connect to {path}: {e.strerror or e}") from None
        try:
            sock.sendall(line)
            answer = _read_line(sock)
        except OSError as e:
            raise Exit(NO_CONNECTION, f"no answer from {path}: {e.strerror or e}") from None
    if not answer:
        raise Exit(NO_CONNECTION, f"no answer from {path}: connection closed")
    return answer.decode("utf-8", "replace").rstrip("\r\n")


def _request_line(request):
    """The request as one JSON line; arguments that are not valid UTF-8 (undecodable bytes
    in argv) are a usage error here rather than a surprise in the daemon."""
    try:
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Exit(USAGE, "arguments must be valid UTF-8") from None
    return json.dumps(request, separators=(",", ":")).encode() + b"\n"


def _read_line(sock):
    """Bytes up to and with the first LF (or all until EOF); empty if closed at once."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf[:buf.find(b"\n") + 1] if b"\n" in buf else buf)


def run_command(args, env):
    command = COMMANDS[args.command]
    request = command.build(args)
    path = socket_path(args, env)
    text = ask(path, request)
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Exit(REFUSED, f"not a JSON answer from {path}: {text[:200]}")
    if args.json:
        print(text)
    if not answer.get("ok"):
        raise Exit(REFUSED, _refusal(answer))
    if not args.json:
        shown = command.show(answer)
        if shown:
            print(shown)
    return OK


def _refusal(answer):
    """The daemon's error; when a refused reload has several FILE:LINE errors, every one of
    them follows on a line of its own (the error itself names only the first)."""
    text = str(answer.get("error", "the daemon refused"))
    errors = answer.get("errors")
    if isinstance(errors, list) and len(errors) > 1:
        text += "".join("\n  " + _shown(str(e)) for e in errors)
    stderr = answer.get("stderr")
    if isinstance(stderr, str) and stderr.strip():     # a failed upgrade: the new process's
        text += "\n" + stderr.rstrip("\n")               # last words
    return text


# ---- listen ---------------------------------------------------------------------------------

def _shown(text):
    """Text on one line: newlines as \\n, other control characters escaped."""
    return "".join("\\n" if ch == "\n" else ch if ch.isprintable() or ch == "\t"
                   else ascii(ch)[1:-1] for ch in text)


def _print_event(event, as_json):
    if as_json:
        print(json.dumps({"id": event.id, "event": event.type, "data": event.data}), flush=True)
    else:
        print(f"id={_shown(event.id) or '-'} event={_shown(event.type)} data={_shown(event.data)}",
              flush=True)


def run_listen(args):
    on_event = functools.partial(_print_event, as_json=args.json)
    try:
        sseclient.listen(args.url, on_event, args.last_event_id or "", args.count, _retrying)
    except ValueError as e:
        raise Exit(USAGE, str(e)) from None
    except sseclient.HttpRefused as e:
        raise Exit(REFUSED, str(e)) from None
    except OSError as e:
        raise Exit(NO_CONNECTION, f"cannot connect to {args.url}: {e.strerror or e}") from None
    return OK


def _retrying(why, delay):
    print(f"ssectl: {why}; reconnecting in {delay:g} s", file=sys.stderr, flush=True)


# ---- token ----------------------------------------------------------------------------------

def run_token(args, env):
    """Mint an HS token with the first hs key of the config's jwt_key; print it alone."""
    from . import jwt
    path = args.config or env.get("SSED_CONFIG")
    if not path:
        raise Exit(USAGE, "token: which config? give -c FILE or set SSED_CONFIG")
    if not jwt.valid_sub(args.sub):
        raise Exit(USAGE, "token: --sub must be 1-256 characters without control characters")
    for selector in args.subscribe + args.publish:
        if not jwt.valid_selector(selector):
            raise Exit(USAGE, f"token: {selector!r} is not a selector (an exact path, a path "
                              f"ending in /*, or *)")
    key = _mint_key(path, _config_value(path, "jwt_key") or "")
    iat = int(time.time())
    claims = {"sub": args.sub, "iat": iat, "exp": iat + args.ttl,
              "ssed": {"subscribe": args.subscribe, "publish": args.publish}}
    print(jwt.mint(key, claims))
    return OK


def _mint_key(path, spec):
    """The first hs key of `spec`; the others are not read (a public key file may be out of
    this user's reach, and is not needed to mint)."""
    from . import jwt
    item = next((i for i in spec.split() if i.lower().startswith("hs")), None)
    if item is None:
        raise Exit(USAGE, f"{path}: no hs256, hs384 or hs512 key in jwt_key to mint with")
    base = os.path.dirname(os.path.abspath(path))
    try:
        key = jwt.load_keys(item, base).hs_first()
    except ValueError as e:
        raise Exit(USAGE, f"{path}: jwt_key: {e}") from None
    return key


# ---- argv ---------------------------------------------------------------------------------

LISTEN_HELP = """\
print a stream's events as they arrive, one line each:
  id=ID event=TYPE data=DATA     (newlines in DATA shown as \\n; no id: id=-)
or with --json one object per line: {"id": ..., "event": ..., "data": ...}.
Reconnects after the server's retry (default 3 s) with Last-Event-ID, as a browser does.
--count N ends after N events; the `session` event a stream opens with (its client id, sent
again on every reconnect) is printed but not counted."""


def parser():
    p = argparse.ArgumentParser(prog="ssectl", description="Control a running ssed daemon.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", help="the control socket")
    where.add_argument("-c", "--config", help="use the control socket of this config file")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    quiet_json = {"action": "store_true", "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    for name, command in COMMANDS.items():
        cp = sub.add_parser(name, help=command.help, description=command.help)
        for names, kwargs in command.args:
            cp.add_argument(*names, **kwargs)
        if name != "admin":
            cp.add_argument("--json", **quiet_json)
    lp = sub.add_parser("listen", help="print a stream's events as they arrive",
                        description=LISTEN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    lp.add_argument("url", metavar="URL", help="http://host:port/service")
    lp.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    lp.add_argument("--count", type=_positive, metavar="N",
                    help="exit after N events (session events not counted)")
    lp.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="one JSON object per event")
    tp = sub.add_parser("token", help="mint a JWT with the first hs key of the config's jwt_key",
                        description="Mint an HS-signed JWT (SPEC section 11) with the first "
                        "hs256/384/512 key of jwt_key in the config of -c or $SSED_CONFIG, and "
                        "print it alone on one line. For tests and scripts.")
    tp.add_argument("--sub", required=True, metavar="ID", help="the client id (sub claim)")
    tp.add_argument("--subscribe", action="append", default=[], metavar="SEL",
                    help="a path, PATH/* or * it may subscribe to (repeatable)")
    tp.add_argument("--publish", action="append", default=[], metavar="SEL",
                    help="a path, PATH/* or * it may publish to (repeatable)")
    tp.add_argument("--ttl", type=_positive, default=3600, metavar="SECONDS",
                    help="seconds until it expires (default 3600)")
    return p


def parse(argv):
    """argparse, except that publish's DATA may also come after its options
    (`publish /chat -e msg hello`), which argparse alone would refuse."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    if (extra and getattr(args, "command", None) == "publish" and args.data is None
            and len(extra) == 1 and not extra[0].startswith("-")):
        args.data, extra = extra[0], []
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None, env=None):
    args = parse(argv)
    env = os.environ if env is None else env
    try:
        if args.command == "listen":
            return run_listen(args)
        if args.command == "token":
            return run_token(args, env)
        return run_command(args, env)
    except Exit as e:
        if str(e):
            print(f"ssectl: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


if __name__ == "__main__":
    sys.exit(main())
