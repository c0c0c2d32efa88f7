"""Every config key (SPEC 3): one table, `KEYS`, with each key's scope, its parser (from
values.py), its default as written in the file, and its doc. config.py builds the
dataclasses' fields and parses with it; configdiff.py compares with it; `keys_markdown()`
is the README's table (`python3 -m ssed.config --keys`). Pure: no file, no clock."""
from dataclasses import dataclass
from typing import Callable

from . import values as V
from .sourcerules import source as _source


@dataclass(frozen=True)
class Key:
    """One config key. `default` is the text a user would write; `parse` turns text into the
    value or raises ValueError with a reason a person can act on."""
    name: str
    scope: str  # "ssed", "service", "both" (set in [ssed] as every service's default),
    #             "template", or "cluster"
    parse: Callable[[str], object]
    default: str
    doc: str


PATHS = ("control", "file", "state_dir", "journal", "tls_cert", "tls_key")  # resolved against the config file's directory

KEYS = (
    Key("listen", "ssed", V.listen, "127.0.0.1:8080", "space-separated `host:port` addresses to "
        "listen on; IPv6 in brackets (`[::1]:8080`); port 0 = any free port; with `tls_cert`, "
        "one written `http://host:port` stays plain HTTP"),
    Key("control", "ssed", V.path, "ssed.sock",
        "path of the UNIX control socket, relative to the config file's directory; empty = none"),
    Key("control_mode", "ssed", V.octal, "0660", "file mode of the control socket (octal)"),
    Key("control_group", "ssed", V.group, "", "group of the control socket; empty = unchanged"),
    Key("keepalive", "ssed", V.number(0.01, False), "15",
        "seconds of silence before a stream gets a `: keepalive` comment"),
    Key("retry", "ssed", V.integer(0), "3000",
        "milliseconds sent as `retry:` when a stream opens; 0 = not sent"),
    Key("history", "both", V.integer(0), "100", "events a service keeps for `Last-Event-ID` replay"),
    Key("max_clients", "ssed", V.integer(1), "10000", "streams open at once, all services together"),
    Key("max_clients_per_ip", "ssed", V.integer(1), "256", "streams open at once from one address"),
    Key("send_buffer", "ssed", V.integer(1024), "1048576",
        "bytes queued for one client before it is dropped as too slow"),
    Key("header_timeout", "ssed", V.number(0.01, False), "10",
        "seconds to receive a whole request head"),
    Key("send_timeout", "ssed", V.number(0.01, False), "60", "seconds a stream's queued bytes may "
        "make no progress before it is dropped (a dead or stuck reader)"),
    Key("max_body", "ssed", V.integer(0), "65536", "largest POST body, in bytes"),
    Key("shutdown_timeout", "ssed", V.number(0, False), "5", "seconds to flush streams on shutdown"),
    Key("state_dir", "ssed", V.path, "", "directory for the journals of every service that sets no "
        "`journal` of its own (durable history); empty = none"),
    Key("journal_sync", "ssed", V.match("always|everysec|no", "always | everysec | no", str),
        "everysec", "when journals are fsynced: before each answer, once a second, or as the "
        "kernel likes (every policy survives `kill -9`)"),
    Key("cors_origins", "both", V.origins, "",
        "space-separated origins allowed by CORS, or `*`; empty = no CORS headers"),
    Key("status_allow", "ssed", V.networks, "127.0.0.0/8 ::1",
        "space-separated addresses or CIDR networks that may read `/healthz` and `/metrics`"),
    Key("trusted_proxies", "ssed", V.networks, "", "space-separated addresses or CIDR "
        "networks of proxies whose `Forwarded` / `X-Forwarded-For` headers name the client; "
        "empty = none (no such header is believed)"),
    Key("proxy_protocol", "ssed", V.boolean, "false", "every connection on the listeners "
        "starts with a PROXY protocol v1 or v2 header (HAProxy `send-proxy`), which names the "
        "client; only the proxy must be able to reach them"),
    Key("index", "ssed", V.boolean, "true", "serve the HTML index of public services at `/`"),
    Key("reuse_port", "ssed", V.boolean, "false", "bind the listeners with `SO_REUSEPORT`, so "
        "that several nodes on one machine share a port (each with its own `control`); "
        "changes at restart"),
    Key("tls_cert", "ssed", V.path, "", "PEM certificate chain (relative to the config file); "
        "with `tls_key`, the listeners speak HTTPS; read at start and on reload"),
    Key("tls_key", "ssed", V.path, "", "PEM private key of `tls_cert` (relative to the "
        "config file); read at start and on reload"),
    Key("fdstore", "ssed", V.boolean, "false", "on SIGTERM, put every socket and stream in "
        "systemd's fd store for the next start (SPEC 13; also on when `$FDSTORE` is set, "
        "systemd >= 254)"),
    Key("jwt_key", "ssed", V.optional, "", "`ALG:FILE`, one or more: hs256/384/512 (a secret "
        "file) or rs256/384/512 (a PEM public key or JWK set), for `auth = jwt`"),
    Key("jwt_issuer", "ssed", V.optional, "", "if set, a token's `iss` must equal it"),
    Key("jwt_audience", "ssed", V.optional, "", "if set, a token's `aud` must be or hold it"),
    Key("jwt_cookie", "ssed", V.cookie, "", "if set, the token may also come in this cookie"),
    Key("jwt_leeway", "ssed", V.number(0, False), "30",
        "seconds of clock skew allowed on a token's `exp`, `nbf` and `iat`"),
    Key("source", "service", _source, "none",
        "what feeds the service: time, messages, quotes, command, file, or none (publishers only)"),
    Key("interval", "service", V.number(0.01, False), "1", "seconds between the source's ticks"),
    Key("format", "service", V.time_format, "iso",
        "time source: `iso` (local ISO 8601 with offset), `unix`, or a strftime pattern"),
    Key("event", "service", V.event, "", "event type of the source's events and of published "
        "events that name none; empty = none (`message`)"),
    Key("file", "service", V.path, "",
        "regular file read by the messages, quotes and file sources, relative to the config "
        "file; checked with the config (a `file` source's may not exist yet)"),
    Key("messages", "service", V.messages, "",
        "messages source: the messages, one per line (indent the continuation lines)"),
    Key("command", "service", V.optional, "",
        "shell command run each tick by the command and quotes sources"),
    Key("token", "service", V.secret, "", "if set, subscribers must present it"),
    Key("publish_token", "service", V.secret, "", "if set, `POST` with this bearer token publishes"),
    Key("auth", "service", V.auth, "", "`jwt`: subscribers must present a JWT whose claims "
        "cover the path (instead of `token`)"),
    Key("publish_auth", "service", V.auth, "", "`jwt`: `POST` takes a JWT whose claims cover "
        "the path (instead of `publish_token`)"),
    Key("session_event", "service", V.boolean, "false",
        "first send a new stream an `event: session` with its client id"),
    Key("json", "service", V.boolean, "false", "refuse published data that is not valid JSON"),
    Key("class", "service", V.class_name, "",
        "`module:Class`, a `Service` subclass to run; its section may hold keys of its own"),
    Key("journal", "service", V.journal, "", "file that keeps this service's history across "
        "restarts; default: `state_dir`/NAME.journal if `state_dir` is set; `off` = none, "
        "even with `state_dir` (a file named off: `./off`); on a template, the directory of "
        "its channels' journals (default `state_dir`)"),
    Key("cluster", "service", V.boolean, "true", "with `[cluster]`: share this service's "
        "events with the other nodes through Redis; false = this node's alone (and its "
        "`journal` applies)"),
    Key("idle", "template", V.number(0, False), "300", "seconds a template's channel lives on "
        "with no subscriber and no publish (then it and its history go)"),
    Key("max_channels", "template", V.integer(1), "10000",
        "channels a template may hold at once"),
    Key("redis", "cluster", V.redis_url, "", "required: `redis://[user:password@]host[:port]"
        "[/db]` (port 6379, db 0 by default; percent-encode `%` `@` `:` `/` in a password) or "
        "`unix:///path/redis.sock[?db=N]`; `rediss://` (TLS) is not supported"),
    Key("prefix", "cluster", V.prefix, "ssed", "key prefix (`{PREFIX}:events`...): nodes with "
        "the same `redis` and `prefix` are one cluster"),
    Key("node", "cluster", V.node, "", "this node's name; empty = the hostname, `:`, the port "
        "of the first listener"),
    Key("maxlen", "cluster", V.integer(1), "100000",
        "approximate length of the cluster's event stream"),
    Key("timeout", "cluster", V.number(0, True), "5",
        "seconds without an answer before Redis counts as down"),
    Key("lease", "cluster", V.number(0, True), "10",
        "seconds within which another node runs a source whose node died (Redis keeps a "
        "lease ¾ of it; every node asks every ¼)"),
)
BY_NAME = {key.name: key for key in KEYS}


_SCOPES = {"ssed": "[ssed]", "service": "service, template", "both": "[ssed] (default), "
           "service, template", "template": "template (`[/path/*]`)", "cluster": "[cluster]"}


def keys_markdown():
    """Every key as a markdown table: key, section, default, meaning."""
    rows = ["| key | section | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "(empty)"
        doc = key.doc.replace("|", "\\|")
        rows.append(f"| `{key.name}` | {_SCOPES[key.scope]} | {default} | {doc} |")
    return "\n".join(rows) + "\n"
