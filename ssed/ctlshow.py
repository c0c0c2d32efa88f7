"""How ssectl shows the daemon's answers to a person: tables and lines (`--json` prints
them as they came)."""
import json
import textwrap
from datetime import datetime


def when(timestamp):
    """A unix timestamp as local ISO 8601 time, to the second."""
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return cell(timestamp)
    return datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def cell(value):
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def table(headers, rows):
    rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                     for r in [headers, *rows])


def show_publish(a):
    return f"id={a.get('id')} delivered={a.get('delivered')}" + no_such_client(a)


def show_list(a):
    services = a.get("services", [])
    # A CHANNELS column only when there are templates (SPEC 10), the table as it was else.
    extra = ["CHANNELS"] if any("channels" in s for s in services) else []
    return table(["PATH", "SOURCE", "CLIENTS", "LAST_ID", *extra],
                  [[s.get("path"), s.get("source"), s.get("clients"), s.get("last_id"),
                    *[s.get("channels")] * len(extra)] for s in services])


def show_channels(a):
    return table(["PATH", "CLIENTS", "LAST_ID", "IDLE"],
                  [[c.get("path"), c.get("clients"), c.get("last_id"), c.get("idle")]
                   for c in a.get("channels", [])])


def show_clients(a):
    return table(["ID", "ADDRESS", "SINCE", "BYTES_SENT", "BYTES_QUEUED"],
                  [[c.get("id"), c.get("address"), when(c.get("since")), c.get("bytes_sent"),
                    c.get("bytes_queued")] for c in a.get("clients", [])])


def show_closed(a):
    return " ".join(f"{k}={a[k]}" for k in ("closed", "removed") if k in a) + no_such_client(a)


def no_such_client(a):
    """The daemon's note that the client id had no stream there (it may be reconnecting)."""
    return " (no such client now)" if a.get("no_such_client") is True else ""


def show_bans(a):
    return table(["IP", "UNTIL"], [[b.get("ip"), when(b.get("until"))] for b in a.get("bans", [])])


def show_stats(a):
    width = max((len(k) for k in a if k != "ok"), default=0)
    return "\n".join(f"{k.ljust(width)} {cell(v)}" for k, v in a.items() if k != "ok")


def show_cluster(a):
    head = (f"node {a.get('node')}: Redis {'up' if a.get('up') else 'DOWN'}"
            + (f" at {a['redis']}" if a.get("redis") else "") + ", last id "
            + f"{cell(a.get('last_id'))}, lag {a.get('lag_ms')} ms")
    nodes = table(["NODE", "SEEN", "CLIENTS"], [[n.get("node"), when(n.get("seen")),
                                                  n.get("clients")] for n in a.get("nodes", [])])
    leases = table(["PATH", "LEASE HOLDER"], [[x.get("path"), x.get("node")]
                                              for x in a.get("leases", [])])
    return "\n\n".join([head, nodes, leases])


def show_reload(a):
    return "\n".join(cell(c) for c in a.get("changes") or []) or "no changes"


def show_upgrade(a):
    return (f"upgraded: pid {a.get('pid')} took over {a.get('streams')} streams in "
            f"{a.get('ms')} ms")


def show_admin(a):
    result = a.get("result")
    return "" if result is None else cell(result)


def show_help(a):
    """The daemon's text-form commands, one a line, then its quoting rules, wrapped."""
    commands = "".join(f"\n  {cell(c)}" for c in a.get("commands") or [])
    quoting = a.get("quoting")
    rules = "\n" + textwrap.fill(f"Quoting: {quoting}", 88) if quoting else ""
    return ("Control commands, as the socket and ssed --console take them (ssectl's own: "
            "ssectl --help):" + commands + rules)
