"""The bytes of our HTTP responses: status lines, headers, whole replies and error replies.
Pure, like http1.py, whose parser's errors render themselves with `error_reply`."""

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def response_head(status, headers=()):
    """A status line and headers; `headers` is a sequence of (name, value)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def reply(status, body, content_type="text/plain; charset=utf-8", headers=(), keep=None):
    """A whole response. It closes the connection unless `keep` is the version of a request
    that asked to keep it open (see `keeps_alive`)."""
    if isinstance(body, str):
        body = body.encode()
    connection = (() if keep == (1, 1) else (("Connection", "keep-alive"),) if keep
                  else (("Connection", "close"),))
    head = response_head(status, (("Content-Type", content_type),
                                  ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store"),
                                  *headers, *connection))
    return head + body


def keeps_alive(request):
    """The request's version if it lets the connection stay open after the answer, else
    None (RFC 9112 9.3: 1.1 persists unless `close`; 1.0 only with `keep-alive`)."""
    tokens = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    if request.version == (1, 1):
        return None if "close" in tokens else (1, 1)
    return (1, 0) if "keep-alive" in tokens else None


def error_reply(status, text, headers=()):
    return reply(status, f"{status} {REASONS.get(status, 'Error')}: {text}\n", headers=headers)
