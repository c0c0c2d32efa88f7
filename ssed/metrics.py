"""Prometheus text exposition (format 0.0.4) from the hub's counters. Pure."""

# name -> (type, help); the one table of metric names.
METRICS = {
    "ssed_clients": ("gauge", "Open streams per service."),
    "ssed_events_published_total": ("counter", "Events published per service."),
    "ssed_events_delivered_total": ("counter", "Event deliveries queued to streams per service."),
    "ssed_bytes_sent_total": ("counter", "Bytes written to HTTP streams."),
    "ssed_clients_dropped_total": ("counter", "Streams closed by the daemon, by reason."),
    "ssed_connections_refused_total": ("counter", "Connections refused, by reason."),
    "ssed_journal_failures_total": ("counter", "Publishes refused because the service's "
                                    "journal could not be written, per service."),
    "ssed_uptime_seconds": ("gauge", "Seconds since the daemon started."),
    "ssed_loop_stalls_total": ("counter", "Loop turns that took over a second (all clients "
                               "waited)."),
    "ssed_cluster_up": ("gauge", "1 while this node is connected to the cluster's Redis."),
    "ssed_cluster_lag_seconds": ("gauge", "How far this node's reading is behind the newest "
                                 "event in Redis."),
    "ssed_cluster_reconnects_total": ("counter", "Connections to Redis made again after one "
                                      "was lost."),
}

CLUSTER = ("ssed_cluster_up", "ssed_cluster_lag_seconds", "ssed_cluster_reconnects_total")


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples):
    """`samples`: {metric name: [(labels dict, value), ...]} -> the exposition text."""
    lines = []
    for name, (kind, help_text) in METRICS.items():
        if name in CLUSTER and name not in samples:
            continue    # (a node in no cluster has no such figures)
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples.get(name, ()):
            tags = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{tags}}} {value}" if tags else f"{name} {value}")
    return "\n".join(lines) + "\n"


def samples(hub):
    """The hub's figures as samples for `render`. A template's channels are summed under
    the template's path (`service="/user/*"`), so the number of series stays bounded."""
    services = [ch for ch in hub.channels.values() if ch.template is None]
    templates = list(hub.ondemand.by_prefix.values())

    def per(attr):
        return ([({"service": ch.path}, getattr(ch, attr)) for ch in services]
                + [({"service": t.path}, t.total(attr)) for t in templates])

    return {
        "ssed_clients": [({"service": ch.path}, len(ch.clients)) for ch in services]
                        + [({"service": t.path}, t.clients()) for t in templates],
        "ssed_events_published_total": per("published"),
        "ssed_events_delivered_total": per("delivered"),
        "ssed_bytes_sent_total": [({}, hub.stats["bytes_sent"])],
        "ssed_clients_dropped_total": [({"reason": r}, n) for r, n in sorted(hub.dropped.items())],
        "ssed_connections_refused_total": [({"reason": r}, n)
                                           for r, n in sorted(hub.refused.items())],
        "ssed_journal_failures_total": [  # (services and templates have a `config`)
            sample for sample, owner in zip(per("journal_failures"), services + templates)
            if owner.config.journal],
        "ssed_uptime_seconds": [({}, round(hub.now - hub.started, 3))],
        "ssed_loop_stalls_total": [({}, hub.stats["loop_stalls"])],
        **_cluster(hub.cluster),
    }


def _cluster(cluster):
    if cluster is None:
        return {}
    return {"ssed_cluster_up": [({}, int(cluster.up))],
            "ssed_cluster_lag_seconds": [({}, cluster.lag_ms() / 1000)],
            "ssed_cluster_reconnects_total": [({}, cluster.reconnects)]}
