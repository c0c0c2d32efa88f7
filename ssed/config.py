"""The config: INI text in, frozen `Config` and `ServiceConfig` out, or a `ConfigError` that
lists every problem as `FILE:LINE: message` (SPEC section 3).

One table, `KEYS` (configkeys.py), names every key with its scope, its parser, its default
(as written in the file) and its doc; the dataclasses' fields, parsing, validation, defaults,
`keys_markdown()` and `diff()` (configdiff.py) all read it. The lines come from ini.py's reader, the values
from values.py's parsers; what each built-in source reads, from its class in sources.py (the
rules about it in sourcerules.py). A section `[/prefix/*]` is a channel template (SPEC 10):
every service key but `source`, and the template keys `idle` and `max_channels`.

Pure: only `load` reads a file and `default` reads the package's `default.ini`.
`python3 -m ssed.config --keys` prints the key table in markdown.
"""
import os
import sys
import types
from dataclasses import field, make_dataclass
from importlib import resources
from typing import Mapping

from . import jwt
from . import values as V
from .ini import read_sections
from .sourcerules import check_source
from .configdiff import diff, restart_only  # noqa: F401 (the API)
from .configkeys import BY_NAME, KEYS, PATHS, keys_markdown  # noqa: F401 (KEYS: the API)
from .templates import is_template, journal_file  # noqa: F401 (journal_file: the API)

# The daemon's own endpoints (web.py serves them): no service may take their paths.
RESERVED = ("/healthz", "/metrics")


class ConfigError(Exception):
    """A config that does not validate; `.errors` holds one `FILE:LINE: message` per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


_ATTR = {"class": "cls"}  # INI names that are Python keywords


def _key_fields(scopes, defaults):
    """A dataclass field per key of `scopes` (`class` is `cls`: Python's keyword), holding the
    key's parsed default if `defaults`."""
    return [(_ATTR.get(k.name, k.name), object,
             field(default=k.parse(k.default)) if defaults else field())
            for k in KEYS if k.scope in scopes]


def _frozen(name, doc, fields_):
    return make_dataclass(name, fields_, frozen=True,
                          namespace={"__doc__": doc, "__module__": __name__})


ServiceConfig = _frozen("ServiceConfig", "One service or template section. Equality ignores "
                        "where it was written, so reload compares settings.", [
    ("path", str), ("line", int, field(compare=False)), ("lines", Mapping, field(compare=False)),
    *_key_fields(("service", "both", "template"), defaults=True),
    ("options", Mapping, field(default_factory=lambda: types.MappingProxyType({})))])
ClusterConfig = _frozen("ClusterConfig", "The [cluster] section (SPEC 12). Changes apply at "
                        "restart only.", [("line", int, field(compare=False)),
                                          ("lines", Mapping, field(compare=False)),
                                          *_key_fields(("cluster",), defaults=True)])
Config = _frozen("Config", "The whole file: the [ssed] settings, the services in file order, "
                 "the [cluster] (None without one).", [
    ("file", str), *_key_fields(("ssed", "both"), defaults=False), ("services", tuple),
    ("templates", tuple, field(default=())), ("cluster", object, field(default=None)),
    ("lines", Mapping, field(default_factory=lambda: types.MappingProxyType({}),
                             compare=False))])


# --- sections and keys to values ---------------------------------------------------------------

def _sections(sections, error):
    """{"ssed": section, "cluster": section} of those there are, the service sections, and
    the duplicate sections (read only for their errors), minus broken ones."""
    top, services, duplicates, first = {}, [], [], {}
    for section in sections:
        name = section.name
        if name is None:
            continue
        if name in first:
            error(section.line, f"duplicate section [{name}] (first at line {first[name]})")
            duplicates.append(section)
        elif name in ("ssed", "cluster"):
            top[name] = section
        elif name.startswith("/"):
            # A template's prefix (`/user` of `[/user/*]`) must itself be a good path.
            reason = V.bad_service_path(name[:-2] or "/" if is_template(name) else name,
                                        RESERVED)
            if not reason and is_template(name) and "*" in name[:-1]:
                reason = f"invalid template path {name!r}: one '*', as its last segment"
            if reason:
                error(section.line, reason)
            services.append(section)
        else:
            error(section.line, f"unknown section [{name}]: "
                                "expected [ssed], [cluster] or a service path starting with /")
        first.setdefault(name, section.line)
    return top, services, duplicates


def _value(key, text, base):
    value = key.parse(text)
    if key.name in PATHS and value:
        value = os.path.abspath(os.path.join(base, value))
    elif key.name == "jwt_key" and value:
        value = jwt.load_keys(value, base)     # read now, so --check finds a bad key
    return value


def _unknown(name):
    return f"unknown key {name!r}" + V.did_you_mean(name, BY_NAME)


def _plugin(section):
    """A section with a `class` runs a plugin, which may read keys that we do not know."""
    return any(name == "class" and text for name, text, _ in section.entries)


def _scope_error(key, scope):
    """Why `key` may not be set in a section of `scope` ("ssed", "service", "template",
    "cluster"), or None: a template takes every service key but `source`, and two of its
    own."""
    if key.scope == scope or (key.scope == "both" and scope != "cluster") or (
            scope == "template" and key.scope == "service"):
        if scope == "template" and key.name == "source":
            return "a template takes no 'source': its channels are fed by publishers"
        return None
    return "key {!r} belongs in {}".format(key.name, {
        "ssed": "[ssed]", "service": "a service section", "cluster": "[cluster]",
        "both": "[ssed] or a service section",
        "template": "a template section ([/path/*])"}[key.scope])


def _entries(section, scope, base, error):
    """{name: value} of the section's good keys, the unknown keys a plugin gets, {name: line}."""
    values, options, lines = {}, {}, {}
    plugin = scope not in ("ssed", "cluster") and _plugin(section)
    for name, text, line in section.entries:
        key = BY_NAME.get(name)
        if name in lines:
            error(line, f"duplicate key {name!r} (first set at line {lines[name]})")
            continue
        lines[name] = line
        if plugin and (key is None or key.scope == "cluster"):
            options[name] = text        # (a plugin's `timeout` was its own before [cluster])
        elif key is None:
            error(line, _unknown(name))
        elif _scope_error(key, scope):
            error(line, _scope_error(key, scope))
        else:
            try:
                values[name] = _value(key, text, base)
            except ValueError as e:
                error(line, f"{name}: {e}")
    return values, options, lines


def _service(section, inherited, base, error, clustered=False):
    template = is_template(section.name)
    values, options, lines = _entries(section, "template" if template else "service", base,
                                      error)
    if not _plugin(section) and not template:
        check_source(section, values, lines, error)
    settings = {k.name: inherited[k.name] for k in KEYS
                if k.scope in ("service", "both", "template")} | values
    if clustered and settings["cluster"]:
        # Redis keeps a clustered service's history (SPEC 12): no journal of its own.
        if values.get("journal"):
            error(lines["journal"], "journal: a clustered service keeps its history in Redis; "
                                    "set cluster = false to journal it on this node")
        settings["journal"] = None
    elif settings["journal"] is None and inherited.get("state_dir"):
        # A template's channels each get a journal of their own in that directory.
        settings["journal"] = inherited["state_dir"] if template else os.path.join(
            inherited["state_dir"], journal_file(section.name))
    elif settings["journal"] is V.NO_JOURNAL:
        settings["journal"] = None
    return ServiceConfig(path=section.name, line=section.line,
                         lines=types.MappingProxyType(lines),
                         options=types.MappingProxyType(options),
                         **{_ATTR.get(n, n): v for n, v in settings.items()})


def _cluster(section, base, error):
    """The [cluster] section's ClusterConfig (SPEC 12), or None without one."""
    if section is None:
        return None
    values, _, lines = _entries(section, "cluster", base, error)
    if "redis" not in lines:
        error(section.line, "[cluster] without redis: add redis = redis://HOST[:PORT][/DB] "
                            "(or unix:///PATH/redis.sock)")
    elif "redis" in values and values["redis"] is None:
        error(lines["redis"], "redis: empty: expected redis://HOST[:PORT][/DB] "
                              "(or unix:///PATH/redis.sock)")
    defaults = {k.name: k.parse(k.default) for k in KEYS if k.scope == "cluster"}
    return ClusterConfig(line=section.line, lines=types.MappingProxyType(lines),
                         **(defaults | values))


def _build(text, filename, base, errors):
    def error(line, message):
        errors.append((line, message))

    sections, services, duplicates = _sections(read_sections(text, error), error)
    top = {key.name: _value(key, key.default, base) for key in KEYS}
    lines = {}      # the [ssed] keys' lines, for the checks that read the files they name
    if "ssed" in sections:
        values, _, lines = _entries(sections["ssed"], "ssed", base, error)
        top |= values
    cluster = _cluster(sections.get("cluster"), base, error)
    if cluster is not None and top["reuse_port"] and not cluster.node:
        # hostname:port, the default, is the same for every node sharing the port: their
        # leases and heartbeats would be one node's.
        error(sections["cluster"].line, "[cluster] with reuse_port = true needs node = NAME, "
                                        "a name of its own for each node sharing the port")
    built = [_service(section, top, base, error, cluster is not None) for section in services]
    templates = tuple(sc for sc in built if is_template(sc.path))
    built = tuple(sc for sc in built if not is_template(sc.path))
    for section in duplicates:     # their own errors too, so that one pass finds them all
        if section.name in ("ssed", "cluster"):
            _entries(section, section.name, base, error)
        elif section.name.startswith("/"):
            _service(section, top, base, error)
    journals = {}
    for sc in built:
        if sc.journal in journals:
            error(sc.lines.get("journal", sc.line),
                  f"journal {sc.journal} is already the journal of {journals[sc.journal]}")
        elif sc.journal:
            journals[sc.journal] = sc.path
    return Config(file=filename, services=built, templates=templates, cluster=cluster,
                  lines=types.MappingProxyType(lines), **{k.name: top[k.name] for k in KEYS if k.scope in ("ssed", "both")})


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
    if config.services or config.templates:
        return []
    return [(1, "no service sections (such as [/time]): nothing to serve; is the file "
                "empty or only half written?")]


if __name__ == "__main__":
    if sys.argv[1:] != ["--keys"]:
        print("usage: python3 -m ssed.config --keys", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(keys_markdown())
