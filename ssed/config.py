"""The config: INI text in, frozen `Config` and `ServiceConfig` out, or a `ConfigError` that
lists every problem as `FILE:LINE: message` (SPEC section 3).

One table, `KEYS`, names every key with its scope, its parser, its default (as written in the
file) and its doc; parsing, validation, defaults, `keys_markdown()` and `diff()` all read it.
`configparser` keeps no line numbers, so the reader below is our own.

Pure: only `load` reads a file and `default` reads the package's `default.ini`.
`python3 -m ssed.config --keys` prints the key table in markdown.
"""
import datetime
import difflib
import ipaddress
import math
import os
import re
import sys
import types
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Callable, Mapping

from .sse import bad_event_type

RESERVED = ("/healthz", "/metrics")


class ConfigError(Exception):
    """A config that does not validate; `.errors` holds one `FILE:LINE: message` per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Key:
    """One config key. `default` is the text a user would write; `parse` turns text into the
    value or raises ValueError with a reason a person can act on."""
    name: str
    scope: str  # "ssed", "service", or "both" (set in [ssed] as every service's default)
    parse: Callable[[str], object]
    default: str
    doc: str


@dataclass(frozen=True)
class ServiceConfig:
    """One service section. Equality ignores where it was written, so reload compares settings."""
    path: str
    line: int = field(compare=False)
    lines: Mapping[str, int] = field(compare=False)
    source: str = "none"
    interval: float = 1.0
    format: str = "iso"
    event: str | None = None
    file: str | None = None
    messages: tuple = ()
    command: str | None = None
    history: int = 100
    cors_origins: tuple = ()
    token: str | None = None
    publish_token: str | None = None
    session_event: bool = False
    json: bool = False
    cls: str | None = None
    journal: str | None = None
    options: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    """The whole file: the [ssed] settings and the services in file order."""
    file: str
    listen: tuple
    control: str | None
    control_mode: int
    control_group: str | None
    keepalive: float
    retry: int
    history: int
    max_clients: int
    max_clients_per_ip: int
    send_buffer: int
    header_timeout: float
    send_timeout: float
    max_body: int
    shutdown_timeout: float
    state_dir: str | None
    journal_sync: str
    cors_origins: tuple
    status_allow: tuple
    index: bool
    services: tuple


# --- value parsers: text -> value, or ValueError(a reason a person can act on) ---------------

def _match(pattern, expected, convert):
    def parse(text):
        if not re.fullmatch(pattern, text):
            raise ValueError(f"expected {expected}, got {text!r}")
        return convert(text)
    return parse


def _text(text):
    return text or None  # empty means unset


def _path(text):
    if "\n" in text:
        raise ValueError("a path is one line (is the next line indented by mistake?)")
    return text or None


def _number(low, strict):
    """A plain decimal number (no exponent, no `_`, ASCII digits) above or from `low`."""
    def parse(text):
        ok = re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text)
        value = float(text) if ok else math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise ValueError(f"expected a number {'>' if strict else '>='} {low}, got {text!r}")
        return value
    return parse


def _integer(low):
    def parse(text):
        if not re.fullmatch(r"[0-9]+", text) or int(text) < low:
            raise ValueError(f"expected an integer >= {low}, got {text!r}")
        return int(text)
    return parse


_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}
_bool = _match(r"(?i)true|false|yes|no|on|off|1|0", "true or false (or yes/no, on/off, 1/0)",
               lambda text: _BOOLS[text.lower()])
_octal = _match(r"(0o)?[0-7]{1,4}", "an octal file mode such as 0660",
                lambda text: int(text.removeprefix("0o"), 8))
_group = _match(r"([A-Za-z0-9_][A-Za-z0-9_.-]*\$?)?", "a group name or number", _text)
# A token travels in an Authorization header or a query string: visible ASCII only.
def _secret(text):
    """A token; the error never quotes the value (it ends up in logs and --check output)."""
    if not re.fullmatch(r"[\x21-\x7e]*", text):
        bad = next(c for c in text if not "\x21" <= c <= "\x7e")
        raise ValueError("expected visible ASCII characters without spaces, got a value "
                         f"with {_character(bad)} in it (value not shown)")
    return _text(text)


def _shown(line):
    """A line quoted in an error, less what follows a token key (`token: T`, `token T`)."""
    word = re.match(r"[\w-]*", line).group()
    return f"{line[:len(word)]} ... (value not shown)" if word in ("token", "publish_token") \
        else line


def _character(c):
    return {" ": "a space", "\n": "a line break", "\t": "a tab"}.get(c, f"U+{ord(c):04X}")
_class = _match(r"([^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*)?",
                "module:Class, as in mypkg.chat:Chat", _text)
# The strftime directives that Python and glibc render. glibc prints any other as it is
# written, so a typo such as %Q would be published literally every tick: refuse it here.
# %f, %z and %Z are Python's own (no flags); the rest are glibc's, which takes a flag and a
# width, and the E and O modifiers on the conversions that have them.
_DIRECTIVE = re.compile(r"%(?:[fzZ%]" + (r"|:z" if sys.version_info >= (3, 12) else "")
                        + r"|[-_0^#]?[0-9]*(?:[aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyY]"
                          r"|E[cCxXyY]|O[deHImMSuUVwWy]))")


def _format(text):
    if text in ("iso", "unix"):
        return text
    if "%" not in text:
        raise ValueError(f"expected iso, unix, or a strftime pattern with %, got {text!r}")
    at = text.find("%")
    while at >= 0:
        found = _DIRECTIVE.match(text, at)
        if found is None:
            raise ValueError(f"unknown strftime directive {text[at:at + 2]!r} in {text!r} "
                             "(see `man strftime`)")
        at = text.find("%", found.end())
    try:    # a fixed moment: this checks the pattern, not the clock
        datetime.datetime(2000, 1, 2, tzinfo=datetime.timezone.utc).strftime(text)
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"strftime cannot render {text!r}: {exc}") from None
    return text


def _event(text):
    reason = bad_event_type(text)  # the same rule the hub applies to published events
    if reason:
        raise ValueError(reason)
    return text or None


def _messages(text):
    return tuple(line.strip() for line in text.split("\n") if line.strip())


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _hostname(host):
    if not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise ValueError(host)


def _address(item):
    host, _, port = item.rpartition(":")
    if host[:1] == "[" and host[-1:] == "]":
        host, check = host[1:-1], ipaddress.IPv6Address
    else:  # an unbracketed IPv6 address fails here too: ':' is not in a host name
        check = ipaddress.IPv4Address if re.fullmatch(r"[0-9.]+", host) else _hostname
    try:
        check(host)
        if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise ValueError(port)
    except ValueError:
        raise ValueError("expected host:port with a port 0..65535 and IPv6 in brackets "
                         f"(as in [::1]:8080), got {item!r}") from None
    return host, int(port)


def _listen(text):
    addresses = tuple(_address(item) for item in text.split())
    if not addresses:
        raise ValueError("expected one or more host:port")
    for i, (host, port) in enumerate(addresses):
        if port and (host, port) in addresses[:i]:  # two port 0s are two ephemeral ports
            raise ValueError(f"{host}:{port} is listed twice")
    return addresses


def _networks(text):
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in text.split())
    except ValueError as e:
        raise ValueError(f"expected IP addresses or CIDR networks: {e}") from None


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def _origins(text):
    origins = tuple(item.lower() for item in text.split())  # browsers send them lowercased
    if "*" in origins and len(origins) > 1:
        raise ValueError("'*' must stand alone")
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError("expected an origin such as https://example.com (no path), "
                             f"got {origin!r}")
    return origins


# The keys each built-in source reads besides _COMMON; a section with `class` may set any.
_USES = {"none": (), "time": ("interval", "format"), "messages": ("interval", "file", "messages"),
         "quotes": ("interval", "command", "file"), "command": ("interval", "command"),
         "file": ("interval", "file")}
_NEEDS = {"messages": ("file", "messages"), "quotes": ("command", "file"),
          "command": ("command",), "file": ("file",)}
_COMMON = {"source", "event", "history", "cors_origins", "token", "publish_token", "journal",
           "session_event", "json", "class"}


def _source(text):
    if text not in _USES:
        raise ValueError(f"expected {' | '.join(_USES)}, got {text!r}"
                         + _did_you_mean(text, _USES))
    return text


def _did_you_mean(name, names):
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_PATHS = ("control", "file", "state_dir", "journal")  # resolved against the config file's directory

KEYS = (
    Key("listen", "ssed", _listen, "127.0.0.1:8080", "space-separated `host:port` addresses to "
        "listen on; IPv6 in brackets (`[::1]:8080`); port 0 = any free port"),
    Key("control", "ssed", _path, "ssed.sock",
        "path of the UNIX control socket, relative to the config file's directory; empty = none"),
    Key("control_mode", "ssed", _octal, "0660", "file mode of the control socket (octal)"),
    Key("control_group", "ssed", _group, "", "group of the control socket; empty = unchanged"),
    Key("keepalive", "ssed", _number(0.01, False), "15",
        "seconds of silence before a stream gets a `: keepalive` comment"),
    Key("retry", "ssed", _integer(0), "3000",
        "milliseconds sent as `retry:` when a stream opens; 0 = not sent"),
    Key("history", "both", _integer(0), "100", "events a service keeps for `Last-Event-ID` replay"),
    Key("max_clients", "ssed", _integer(1), "10000", "streams open at once, all services together"),
    Key("max_clients_per_ip", "ssed", _integer(1), "256", "streams open at once from one address"),
    Key("send_buffer", "ssed", _integer(1024), "1048576",
        "bytes queued for one client before it is dropped as too slow"),
    Key("header_timeout", "ssed", _number(0.01, False), "10",
        "seconds to receive a whole request head"),
    Key("send_timeout", "ssed", _number(0.01, False), "60", "seconds a stream's queued bytes may "
        "make no progress before it is dropped (a dead or stuck reader)"),
    Key("max_body", "ssed", _integer(0), "65536", "largest POST body, in bytes"),
    Key("shutdown_timeout", "ssed", _number(0, False), "5", "seconds to flush streams on shutdown"),
    Key("state_dir", "ssed", _path, "", "directory for the journals of every service that sets no "
        "`journal` of its own (durable history); empty = none"),
    Key("journal_sync", "ssed", _match("always|everysec|no", "always | everysec | no", str),
        "everysec", "when journals are fsynced: before each answer, once a second, or as the "
        "kernel likes (every policy survives `kill -9`)"),
    Key("cors_origins", "both", _origins, "",
        "space-separated origins allowed by CORS, or `*`; empty = no CORS headers"),
    Key("status_allow", "ssed", _networks, "127.0.0.0/8 ::1",
        "space-separated addresses or CIDR networks that may read `/healthz` and `/metrics`"),
    Key("index", "ssed", _bool, "true", "serve the HTML index of public services at `/`"),
    Key("source", "service", _source, "none",
        "what feeds the service: time, messages, quotes, command, file, or none (publishers only)"),
    Key("interval", "service", _number(0.01, False), "1", "seconds between the source's ticks"),
    Key("format", "service", _format, "iso",
        "time source: `iso` (local ISO 8601 with offset), `unix`, or a strftime pattern"),
    Key("event", "service", _event, "", "event type of the source's events and of published "
        "events that name none; empty = none (`message`)"),
    Key("file", "service", _path, "",
        "regular file read by the messages, quotes and file sources, relative to the config "
        "file; checked with the config (a `file` source's may not exist yet)"),
    Key("messages", "service", _messages, "",
        "messages source: the messages, one per line (indent the continuation lines)"),
    Key("command", "service", _text, "",
        "shell command run each tick by the command and quotes sources"),
    Key("token", "service", _secret, "", "if set, subscribers must present it"),
    Key("publish_token", "service", _secret, "", "if set, `POST` with this bearer token publishes"),
    Key("session_event", "service", _bool, "false",
        "first send a new stream an `event: session` with its client id"),
    Key("json", "service", _bool, "false", "refuse published data that is not valid JSON"),
    Key("journal", "service", _path, "", "file that keeps this service's history across "
        "restarts; default: `state_dir`/NAME.journal if `state_dir` is set"),
    Key("class", "service", _class, "",
        "`module:Class`, a `Service` subclass to run; its section may hold keys of its own"),
)
_BY_NAME = {key.name: key for key in KEYS}
_ATTR = {"class": "cls"}  # INI names that are Python keywords


# --- the reader: lines to sections ------------------------------------------------------------

# A comment starts a line or follows whitespace, so `a=b#c` keeps its `#` (URLs, colours).
_COMMENT = re.compile(r"(?:^|\s)[;#].*")


@dataclass
class _Section:
    name: str | None  # None for a broken header: its keys are skipped, not misfiled
    line: int
    entries: list  # [key, value, line]; the value grows with continuation lines


def _read(text, error):
    sections, current, last = [], None, None
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        if "\0" in raw:
            error(number, "NUL character")
            last = None
            continue
        line = _COMMENT.sub("", raw, count=1).strip()
        if not line:
            continue  # blank and comment lines do not end a multi-line value
        if raw[0].isspace():
            if last is None:
                error(number, "indented line, but no key before it to continue")
            else:
                last[1] += "\n" + line
            continue
        last = None
        key, equals, value = line.partition("=")
        if line.startswith("["):
            current = _Section(line[1:-1].strip() if line.endswith("]") else None, number, [])
            if current.name is None:
                error(number, f"section header without a closing ]: {line!r}")
            sections.append(current)
        elif not equals or not key.strip():
            error(number, f"expected [section] or key = value, got {_shown(line)!r}")
        elif current is None:
            error(number, f"key {key.strip()!r} before any [section]")
        else:
            last = [key.strip(), value.strip(), number]
            current.entries.append(last)
    return sections


# --- sections and keys to values ---------------------------------------------------------------

_PATH = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")


def _bad_path(path):
    """Why `path` cannot be a service path, or None."""
    if path in RESERVED:
        return f"path {path} clashes with the built-in {path} endpoint"
    end = _PATH.match(path).end()
    if end < len(path):
        reason = f"character {path[end]!r} is not allowed (RFC 3986 path characters only)"
    elif "//" in path:
        reason = "empty segment (//)"
    elif path != "/" and path.endswith("/"):
        reason = "trailing /"
    elif any(segment in (".", "..") for segment in path.split("/")):
        reason = "'.' and '..' segments are not allowed"
    else:
        return None
    return f"invalid service path {path!r}: {reason}"


def _sections(sections, error):
    """The [ssed] section (or None), the service sections, and the duplicate sections (read
    only for their errors), minus broken ones."""
    ssed, services, duplicates, first = None, [], [], {}
    for section in sections:
        name = section.name
        if name is None:
            continue
        if name in first:
            error(section.line, f"duplicate section [{name}] (first at line {first[name]})")
            duplicates.append(section)
        elif name == "ssed":
            ssed = section
        elif name.startswith("/"):
            reason = _bad_path(name)
            if reason:
                error(section.line, reason)
            services.append(section)
        else:
            error(section.line, f"unknown section [{name}]: "
                                "expected [ssed] or a service path starting with /")
        first.setdefault(name, section.line)
    return ssed, services, duplicates


def _value(key, text, base):
    value = key.parse(text)
    if key.name in _PATHS and value:
        value = os.path.abspath(os.path.join(base, value))
    return value


def _unknown(name):
    return f"unknown key {name!r}" + _did_you_mean(name, _BY_NAME)


def _plugin(section):
    """A section with a `class` runs a plugin, which may read keys that we do not know."""
    return any(name == "class" and text for name, text, _ in section.entries)


def _entries(section, scope, base, error):
    """{name: value} of the section's good keys, the unknown keys a plugin gets, {name: line}."""
    values, options, lines = {}, {}, {}
    plugin = scope == "service" and _plugin(section)
    for name, text, line in section.entries:
        key = _BY_NAME.get(name)
        if name in lines:
            error(line, f"duplicate key {name!r} (first set at line {lines[name]})")
            continue
        lines[name] = line
        if key is None and plugin:
            options[name] = text
        elif key is None:
            error(line, _unknown(name))
        elif key.scope not in (scope, "both"):
            where = "[ssed]" if key.scope == "ssed" else "a service section"
            error(line, f"key {name!r} belongs in {where}")
        else:
            try:
                values[name] = _value(key, text, base)
            except ValueError as e:
                error(line, f"{name}: {e}")
    return values, options, lines


def _check_source(section, values, lines, error):
    """Keys the built-in source needs, and keys set that it would silently ignore."""
    source = values.get("source", "none")
    if "source" in lines and "source" not in values:
        # A bad source was reported with the one it is closest to: check the keys against
        # that one, so that their errors come in this pass too (no close one: no guess).
        text = next(text for name, text, _ in section.entries if name == "source")
        close = difflib.get_close_matches(text, list(_USES), n=1)
        if close:
            _unused_keys(close[0], values, lines, error)
        return
    _unused_keys(source, values, lines, error)
    given = [n for n in _NEEDS.get(source, ()) if values.get(n) not in (None, ())]
    where = lines.get("source", section.line)
    if source in _NEEDS and not given:
        error(where, f"source {source!r} needs " + " or ".join(map(repr, _NEEDS[source])))
    elif len(given) > 1:
        error(where, f"source {source!r} takes {given[0]!r} or {given[1]!r}, not both")


def _unused_keys(source, values, lines, error):
    for name, line in lines.items():
        key = _BY_NAME.get(name)
        if (key and key.scope != "ssed" and name not in _COMMON and name not in _USES[source]
                and values.get(name) not in (None, ())):
            error(line, f"key {name!r} is not used by source {source!r}")


def journal_file(service_path):
    """A service path as a file name in `state_dir`: `/chat` -> `chat.journal`."""
    name = service_path.strip("/").replace("%", "%25").replace("/", "%2F") or "%2F"
    return name + ".journal"


def _service(section, inherited, base, error):
    values, options, lines = _entries(section, "service", base, error)
    if not _plugin(section):
        _check_source(section, values, lines, error)
    settings = {k.name: inherited[k.name] for k in KEYS if k.scope != "ssed"} | values
    if settings["journal"] is None and inherited.get("state_dir"):
        settings["journal"] = os.path.join(inherited["state_dir"], journal_file(section.name))
    return ServiceConfig(path=section.name, line=section.line,
                         lines=types.MappingProxyType(lines),
                         options=types.MappingProxyType(options),
                         **{_ATTR.get(n, n): v for n, v in settings.items()})


def _build(text, filename, base, errors):
    def error(line, message):
        errors.append((line, message))

    ssed, services, duplicates = _sections(_read(text, error), error)
    top = {key.name: _value(key, key.default, base) for key in KEYS}
    if ssed:
        top |= _entries(ssed, "ssed", base, error)[0]
    built = tuple(_service(section, top, base, error) for section in services)
    for section in duplicates:     # their own errors too, so that one pass finds them all
        if section.name == "ssed":
            _entries(section, "ssed", base, error)
        elif section.name.startswith("/"):
            _service(section, top, base, error)
    journals = {}
    for sc in built:
        if sc.journal in journals:
            error(sc.lines.get("journal", sc.line),
                  f"journal {sc.journal} is already the journal of {journals[sc.journal]}")
        elif sc.journal:
            journals[sc.journal] = sc.path
    return Config(file=filename, services=built,
                  **{k.name: top[k.name] for k in KEYS if k.scope != "service"})


def _finish(text, filename, base_dir, errors, checks):
    base = os.path.abspath(os.path.dirname(filename) if base_dir is None else base_dir)
    config = _build(text.removeprefix("\ufeff"), filename, base, errors)
    for check in checks:
        errors.extend(check(config))
    if errors:
        errors.sort(key=lambda error: error[0])  # stable: same-line errors keep their order
        raise ConfigError(f"{filename}:{line}: {message}" for line, message in errors)
    return config


# --- the public functions ----------------------------------------------------------------------

def parse(text, filename, base_dir=None, checks=()):
    """The Config in `text`, or ConfigError with every problem. Relative `control` and `file`
    paths resolve against `base_dir`, by default the directory of `filename`. Each of `checks`
    is called with the Config as read (good values, defaults where a value was bad) and
    returns more (line, message) errors, sorted in with the rest: the caller's checks that
    need more than the text (files, plugin imports) come in the same pass."""
    return _finish(text, os.fspath(filename), base_dir, [], checks)


def load(path, checks=()):
    """Read and parse the config file at `path` (`checks` as for `parse`)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    errors = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Report each bad line, then read on so the other errors come in the same pass.
        text = data.decode("utf-8", "replace")
        for number, raw in enumerate(data.split(b"\n"), 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                errors.append((number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x})"))
    return _finish(text, path, None, errors, checks)


def default(checks=()):
    """The config used when none is given: the package's default.ini, paths relative to the
    current directory."""
    text = resources.files("ssed").joinpath("default.ini").read_text(encoding="utf-8")
    return parse(text, "<default>", base_dir=os.getcwd(), checks=checks)


def has_services(config):
    """A check for `parse`/`load`: a daemon's config must define a service. A file with none
    is empty or cut short (a reload reading a half-written file), not something to serve."""
    if config.services:
        return []
    return [(1, "no service sections (such as [/time]): nothing to serve; is the file "
                "empty or only half written?")]


def diff(old, new):
    """What a reload from `old` to `new` changes, one line per section, [ssed] first."""
    changes = []
    top = [f.name for f in fields(Config)
           if f.name not in ("file", "services") and getattr(old, f.name) != getattr(new, f.name)]
    if top:
        changes.append("changed [ssed]: " + ", ".join(top))
    before = {s.path: s for s in old.services}
    after = {s.path for s in new.services}
    changes += [f"removed {path}" for path in before if path not in after]
    for service in new.services:
        if service.path not in before:
            changes.append(f"added {service.path}")
        elif service != before[service.path]:
            names = _changed(before[service.path], service)
            changes.append(f"changed {service.path}: " + ", ".join(names))
    return changes


def _changed(old, new):
    names = []
    for f in fields(ServiceConfig):
        if f.compare and f.name == "options":
            names += sorted(k for k in old.options.keys() | new.options.keys()
                            if old.options.get(k) != new.options.get(k))
        elif f.compare and getattr(old, f.name) != getattr(new, f.name):
            names.append("class" if f.name == "cls" else f.name)
    return names


_SCOPES = {"ssed": "[ssed]", "service": "service", "both": "[ssed] (default), service"}


def keys_markdown():
    """Every key as a markdown table: key, section, default, meaning."""
    rows = ["| key | section | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "(empty)"
        doc = key.doc.replace("|", "\\|")
        rows.append(f"| `{key.name}` | {_SCOPES[key.scope]} | {default} | {doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--keys"]:
        print("usage: python3 -m ssed.config --keys", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(keys_markdown())
