"""Why a stream ended or a connection was turned away: the one vocabulary. The names are
the metric labels too (`ssed_clients_dropped_total{reason}`,
`ssed_connections_refused_total{reason}`) and what `stats` counts under `dropped` and
`refused`, so they are said here once.
"""

# -- streams the daemon closes: counted as drops ---------------------------------------------
KICKED = "kicked"           # `kick`
BANNED = "banned"           # `ban` of its address (also a refusal, below)
REMOVED = "removed"         # its service went in a reload
SLOW = "slow"               # more than `send_buffer` bytes waiting
STALLED = "stalled"         # its queue made no progress for `send_timeout`
ERROR = "error"             # a socket error other than the peer leaving
BUG = "bug"                 # a bug while serving it (logged with its traceback)
EXPIRED = "expired"         # its JWT expired (the client comes back with a new one)

# -- streams that end by the client's doing or a clean stop: not drops ------------------------
EOF_ = "eof"                # the peer closed
RESET = "reset"             # the peer reset or went away mid-write
SHUTDOWN = "shutdown"       # the daemon stopped
LEFT = (EOF_, RESET, SHUTDOWN)

# -- HTTP connections that end without a stream (not counted) --------------------------------
DONE = "done"               # our reply was read (or its linger ran out)
IDLE = "idle"               # a kept-alive connection nobody used again

# -- connections refused ----------------------------------------------------------------------
SHUTTING_DOWN = "shutting_down"
MAX_CLIENTS = "max_clients"
MAX_CLIENTS_PER_IP = "max_clients_per_ip"
MAX_CHANNELS = "max_channels"   # a template at its max_channels (SPEC 10)
CLUSTER = "cluster_unavailable"     # a publish Redis did not take (SPEC 12)
OUT_OF_DESCRIPTORS = "out_of_descriptors"
HEADER_TIMEOUT = "header_timeout"    # (on an HTTPS listener: the handshake too)
PROXY_HEADER = "proxy_header"   # proxy_protocol on, and no valid PROXY header (SPEC 14)
TLS_HANDSHAKE = "tls_handshake"     # a TLS handshake that failed (plain HTTP, garbage, reset)
NOT_FOUND = "not_found"
METHOD = "method"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"     # a valid JWT that does not cover the path (or another client id)
STATUS_FORBIDDEN = "status_forbidden"
REFUSED_BY_SERVICE = "refused_by_service"


def http(status):
    """A request the parser refused: `http_400`, `http_413`, `http_431`..."""
    return f"http_{status}"
