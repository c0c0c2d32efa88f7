"""Native TLS (SPEC 14), the files' side: the server's `SSLContext` from the `tls_cert` /
`tls_key` pair, and `check`, the config check that reads the pair so that `--check` and a
reload find a bad one, naming the file. (The connections' side: tlsconns.py.)

Reads the two files and nothing else; no socket, no clock.
"""
import ssl

ALPN = ["http/1.1"]


class PairError(ValueError):
    """A pair that cannot serve: `key` is the config key whose file is at fault."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


def context(cert, key):
    """A server context for the pair: TLS 1.2 and 1.3 only, ALPN `http/1.1`, the ciphers of
    Python's default context (PROTOCOL_TLS_SERVER's own: ECDHE with AES-GCM or ChaCha20, no
    SHA-1, security level 2), no renegotiation (a client could make us do handshake work on a
    live stream), no client certificates. PairError names the file at fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(ALPN)
    _readable("tls_cert", cert)
    _readable("tls_key", key)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise _pair_error(exc, cert, key) from None
    except OSError as exc:
        raise PairError("tls_cert", f"{cert}: cannot read: {exc.strerror or exc}") from None
    return ctx


def _readable(name, path):
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise PairError(name, f"{path}: cannot read: {exc.strerror or exc}") from None


def _pair_error(exc, cert, key):
    """Which file an SSLError of load_cert_chain is about, in words. OpenSSL reads the
    chain first, then the key, then compares them."""
    reason = exc.reason or ""
    if reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):     # (another key type)
        return PairError("tls_key", f"{key}: this private key does not belong to the "
                                    f"certificate in {cert}")
    if "KEY" in reason or reason in ("BAD_DECRYPT", "BAD_PASSWORD_READ"):
        return PairError("tls_key", f"{key}: not a usable PEM private key ({_why(exc)}); "
                                    "an encrypted key is not supported")
    if _loads_as_cert(cert):
        # The chain loaded: the key is what OpenSSL could not use (PEM lib, no start line).
        return PairError("tls_key", f"{key}: not a usable PEM private key ({_why(exc)})")
    return PairError("tls_cert", f"{cert}: not a usable PEM certificate chain ({_why(exc)})")


def _loads_as_cert(cert):
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=cert)
        return True
    except (ssl.SSLError, OSError, ValueError):
        return False


def _why(exc):
    # OpenSSL's "PEM lib" (no reason) means no PEM block of the expected kind was found.
    return exc.reason.lower().replace("_", " ") if exc.reason else "no PEM block of that kind"


def check(config):
    """(line, message) errors for config.load's checks: the pair must be whole and load; an
    `https://` listener needs it."""
    lines = config.lines
    cert, key = config.tls_cert, config.tls_key
    if bool(cert) != bool(key):
        there, missing = ("tls_cert", "tls_key") if cert else ("tls_key", "tls_cert")
        return [(lines.get(there, 1), f"{there} is set without {missing}: HTTPS needs both "
                                      "(or neither, for plain HTTP)")]
    if not cert:
        if "https" in getattr(config.listen, "schemes", ()):
            return [(lines.get("listen", 1), "listen: an https:// listener needs tls_cert and "
                                             "tls_key")]
        return []
    try:
        context(cert, key)
    except PairError as exc:
        return [(lines.get(exc.key, 1), f"{exc.key}: {exc}")]
    return []


def listeners_plain(config):
    """The (host, port) entries of `listen` that stay plain HTTP while the others speak
    HTTPS (written `http://`); all of them without a certificate."""
    listen = config.listen
    if not config.tls_cert:
        return set(listen)
    return {pair for pair, scheme in zip(listen, getattr(listen, "schemes", ()))
            if scheme == "http"}
