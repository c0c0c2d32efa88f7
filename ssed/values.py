"""The config's value parsers: the text of one key to its value, or ValueError with a
reason a person can act on (config.py adds the file, the line and the key's name).

Pure: they read no file and no clock. `KEYS` in configkeys.py names the parser of each key.
"""
import datetime
import difflib
import ipaddress
import math
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .sse import bad_event_type


def match(pattern, expected, convert):
    def parse(text):
        if not re.fullmatch(pattern, text):
            raise ValueError(f"expected {expected}, got {text!r}")
        return convert(text)
    return parse


def optional(text):
    return text or None  # empty means unset


def path(text):
    if "\n" in text:
        raise ValueError("a path is one line (is the next line indented by mistake?)")
    return text or None


def number(low, strict):
    """A plain decimal number (no exponent, no `_`, ASCII digits) above or from `low`."""
    def parse(text):
        ok = re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text)
        value = float(text) if ok else math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise ValueError(f"expected a number {'>' if strict else '>='} {low}, got {text!r}")
        return value
    return parse


def integer(low):
    def parse(text):
        if not re.fullmatch(r"[0-9]+", text) or int(text) < low:
            raise ValueError(f"expected an integer >= {low}, got {text!r}")
        return int(text)
    return parse


_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}
boolean = match(r"(?i)true|false|yes|no|on|off|1|0", "true or false (or yes/no, on/off, 1/0)",
                lambda text: _BOOLS[text.lower()])
octal = match(r"(0o)?[0-7]{1,4}", "an octal file mode such as 0660",
              lambda text: int(text.removeprefix("0o"), 8))
group = match(r"([A-Za-z0-9_][A-Za-z0-9_.-]*\$?)?", "a group name or number", optional)
class_name = match(r"([^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*)?",
                   "module:Class, as in mypkg.chat:Chat", optional)


# A token travels in an Authorization header or a query string: visible ASCII only.
def secret(text):
    """A token; the error never quotes the value (it ends up in logs and --check output)."""
    if not re.fullmatch(r"[\x21-\x7e]*", text):
        bad = next(c for c in text if not "\x21" <= c <= "\x7e")
        raise ValueError("expected visible ASCII characters without spaces, got a value "
                         f"with {_character(bad)} in it (value not shown)")
    return optional(text)


def _character(c):
    return {" ": "a space", "\n": "a line break", "\t": "a tab"}.get(c, f"U+{ord(c):04X}")


auth = match(r"(jwt)?", "jwt (or empty: no JWT)", optional)
# A cookie name is an RFC 6265 token.
cookie = match(r"[!#$%&'*+.^_`|~0-9A-Za-z-]*", "a cookie name", optional)


NO_JOURNAL = False      # `journal = off`: no journal, even where `state_dir` would give one


def journal(text):
    """A journal file, or `off` (NO_JOURNAL) for none; a file named off is `./off`."""
    return NO_JOURNAL if text == "off" else path(text)


# The strftime directives that Python and glibc render. glibc prints any other as it is
# written, so a typo such as %Q would be published literally every tick: refuse it here.
# %f, %z and %Z are Python's own (no flags); the rest are glibc's, which takes a flag and a
# width, and the E and O modifiers on the conversions that have them.
_DIRECTIVE = re.compile(r"%(?:[fzZ%]" + (r"|:z" if sys.version_info >= (3, 12) else "")
                        + r"|[-_0^#]?[0-9]*(?:[aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyY]"
                          r"|E[cCxXyY]|O[deHImMSuUVwWy]))")


def time_format(text):
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


def event(text):
    reason = bad_event_type(text)  # the same rule the hub applies to published events
    if reason:
        raise ValueError(reason)
    return text or None


def messages(text):
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


class Listen(tuple):
    """The `listen` entries: (host, port) pairs, as ever, plus `schemes`, what each was
    written with: "http" (`http://host:port`: stays plain when the daemon serves TLS),
    "https", or "" (none: HTTPS if `tls_cert` is set). Equality takes the schemes in, so a
    reload sees a listener change scheme; a listener stays bound across that change, since
    the daemon keys its sockets by (host, port)."""

    def __new__(cls, pairs, schemes):
        self = super().__new__(cls, pairs)
        self.schemes = tuple(schemes)
        return self

    def __eq__(self, other):
        return tuple.__eq__(self, other) is True and self.schemes == getattr(
            other, "schemes", ("",) * len(self))

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__


def listen(text):
    items = [re.match(r"(?i)(https?://)?(.*)", item).groups() for item in text.split()]
    addresses = tuple(_address(item.rstrip("/")) for _, item in items)
    if not addresses:
        raise ValueError("expected one or more host:port")
    for i, (host, port) in enumerate(addresses):
        if port and (host, port) in addresses[:i]:  # two port 0s are two ephemeral ports
            raise ValueError(f"{host}:{port} is listed twice")
    return Listen(addresses, ((prefix or "")[:-3].lower() for prefix, _ in items))


def networks(text):
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in text.split())
    except ValueError as e:
        raise ValueError(f"expected IP addresses or CIDR networks: {e}") from None


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def origins(text):
    origins = tuple(item.lower() for item in text.split())  # browsers send them lowercased
    if "*" in origins and len(origins) > 1:
        raise ValueError("'*' must stand alone")
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError("expected an origin such as https://example.com (no path), "
                             f"got {origin!r}")
    return origins




_PATH = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")


def bad_service_path(path, reserved):
    """Why `path` cannot be a service path (`reserved`: paths the daemon serves), or None."""
    if path in reserved:
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



def did_you_mean(name, names):
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- [cluster] (SPEC 12) -----------------------------------------------------------------------

@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: `host` and `port` for TCP, else `path` (a UNIX socket; host None);
    `db` to SELECT; `user`/`password` for AUTH (None: not sent). `str()` is the address
    without the password, fit for a log line; repr() leaves the password out too."""
    host: str | None
    port: int | None
    path: str | None = None
    db: int = 0
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self):
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        if self.path is not None:
            return f"unix://{user}{self.path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{user}{host}:{self.port}/{self.db}"


_REDIS_FORMS = "redis://[user:password@]host[:port][/db] or unix:///path/redis.sock[?db=N]"
_MAX_DB = 2 ** 31 - 1       # Redis's `databases` is an int
_MAX_SUN_PATH = 107         # bytes of a UNIX socket path (sun_path holds 108 with its NUL)


def redis_url(text):
    """`[cluster] redis`: a RedisAddress, None if empty. No error quotes what came before an
    `@`: that is where a password is written."""
    if not text:
        return None
    if re.search(r"\s", text):
        raise ValueError("expected one URL without spaces, " + _shown(text))
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"expected {_REDIS_FORMS}, {_shown(text)}")
    if scheme == "rediss":
        raise ValueError("rediss:// (Redis over TLS) is not supported: reach Redis on a "
                         "private network or its UNIX socket, or through a TLS tunnel "
                         "(stunnel, spiped) with redis:// to its local end")
    if scheme not in ("redis", "unix"):
        raise ValueError(f"unknown scheme {scheme!r}: expected {_REDIS_FORMS}")
    # The last `@` ends the user info: a password may hold `@`, `/`, `?` or `#` as written.
    userinfo, at, rest = rest.rpartition("@")
    user, password = _userinfo(userinfo) if at else (None, None)
    address = _unix(rest) if scheme == "unix" else _tcp(rest)
    return RedisAddress(**address, user=user, password=password)


def _shown(text):
    return "got a value with an '@' (not shown: it may hold a password)" if "@" in text \
        else f"got {text!r}"


def _userinfo(userinfo):
    if ":" not in userinfo:
        raise ValueError("user info without ':' before '@' (not shown): write "
                         "redis://:PASSWORD@host, or redis://USER:PASSWORD@host")
    user, _, password = userinfo.partition(":")
    return _decoded(user, "user") or None, _decoded(password, "password") or None


def _decoded(text, what):
    """Percent-decoded; a `%` not followed by two hex digits is refused (never quoted)."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise ValueError(f"the {what} has a '%' not followed by two hex digits (value not "
                         "shown): write a literal % as %25")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the {what} is not UTF-8 once percent-decoded (value not "
                         "shown)") from None


def _tcp(rest):
    if re.search(r"[?#]", rest):
        raise ValueError(f"no query or fragment in a redis:// URL (the db goes in the path: "
                         f"redis://host:6379/1), got {rest!r}")
    hostport, _, db = rest.partition("/")
    m = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]{1,5}))?", hostport)
    if not m or not m.group(1):
        raise ValueError("expected host[:port] after redis:// (IPv6 in brackets, as in "
                         f"redis://[::1]:6379), got {hostport!r}")
    host, port = m.group(1), int(m.group(2) or 6379)
    try:
        if host.startswith("["):
            host = host[1:-1]
            ipaddress.IPv6Address(host)
        elif re.fullmatch(r"[0-9.]+", host):
            ipaddress.IPv4Address(host)
        else:
            _hostname(host)
    except ValueError:
        raise ValueError(f"bad host {host!r} in the redis URL") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port 1..65535 in the redis URL, got {m.group(2)}")
    return {"host": host, "port": port, "db": _db(db)}


def _unix(rest):
    path, _, query = rest.partition("?")
    if not path.startswith("/"):
        raise ValueError("expected an absolute socket path, as in "
                         f"unix:///run/redis/redis.sock, got {path!r}")
    path = _decoded(path, "socket path")
    if "\0" in path or len(path.encode()) > _MAX_SUN_PATH:
        raise ValueError(f"a UNIX socket path holds at most {_MAX_SUN_PATH} bytes and no NUL")
    db = None
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name != "db" or db is not None:
            raise ValueError(f"unknown or repeated parameter {name!r} in the unix:// URL "
                             "(only ?db=N)")
        db = value or "(empty)"
    return {"host": None, "port": None, "path": path, "db": _db(db or "")}


def _db(text):
    if not text:
        return 0
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > _MAX_DB:
        raise ValueError(f"expected a db number 0..{_MAX_DB} in the redis URL, got {text!r}")
    return int(text)


# Key prefixes go into every Redis key inside a hash tag `{PREFIX}`: no braces, no spaces.
prefix = match(r"[A-Za-z0-9_.:-]{1,64}", "1-64 of A-Z a-z 0-9 _ . : -", str)
node = match(r"[\x21-\x7e]{0,255}", "a name of visible ASCII characters without spaces "
             "(at most 255)", optional)
