"""JSON Web Tokens for per-user authorization (SPEC section 11): token text, the configured
keys and `now` in; the claims out, or a JwtError that carries its 401/403 and the exact
`WWW-Authenticate` value. Pure: no socket, no clock; files are read only by `load_keys`.

The rules a reviewer looks for, and where they live:
- the algorithm comes from the configured key, never from the token: a token is checked only
  against keys whose alg equals its `alg` string, so `none` and HS/RS confusion find no key
  (`_candidates`); `kid` picks among configured keys only; `jku`, `jwk`, `x5u`, `x5c`, `crit`
  (and `cty`, `b64`, which we do not process) are refused (`_header`);
- RSA is encode-then-compare (RFC 8017 8.2.2 step 3-4): the whole expected EMSA-PKCS1-v1_5
  block is built and compared with `hmac.compare_digest`; the decrypted block is never parsed,
  which is what python-rsa (CVE-2016-1494) and node-forge got forged through (`_rsa_ok`);
- strict input: 8 KiB, three canonical base64url segments, UTF-8 JSON objects without duplicate
  keys, NaN or Infinity, the payload read only once the signature holds; keys (jwtkeys.py):
  >= 2048-bit moduli, odd e >= 3, HMAC secrets >= the hash size, DER read by a small strict
  reader (minimal lengths and integers, no trailing bytes);
- a JwtError's reason is fixed text: it never holds the token or anything decoded from it.
"""
import hashlib
import hmac
import json
import re
from typing import NamedTuple

from .jwtkeys import Key, Keys, b64url_decode, b64url_encode, load_keys, strict_json

MAX_TOKEN = 8192
# The DER of DigestInfo up to the hash value, per hash: RFC 8017 section 9.2, note 1.
DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
REFUSED_HEADERS = ("jku", "jwk", "x5u", "x5c", "crit", "cty", "b64")
# `typ` is optional; when present it must name a JWT (RFC 7519 5.1) or an OAuth access token
# (RFC 9068), case-insensitively, so that other JWT kinds (logout, DPoP proofs) are not taken.
TYPES = ("jwt", "application/jwt", "at+jwt", "application/at+jwt")
CACHE_SIZE = 10_000


class Claims(NamedTuple):
    sub: str
    exp: float
    subscribe: tuple
    publish: tuple


class JwtError(Exception):
    """A refusal: `status` 401 or 403, `error` None (no token), "invalid_token" or
    "insufficient_scope" (RFC 6750 section 3.1), `reason` fixed text for the log."""

    def __init__(self, status, error, reason):
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason

    def www_authenticate(self):
        if self.error is None:
            return 'Bearer realm="ssed"'
        return f'Bearer realm="ssed", error="{self.error}"'


def missing():
    return JwtError(401, None, "no token")


def _invalid(reason):
    return JwtError(401, "invalid_token", reason)


def insufficient(reason):
    return JwtError(403, "insufficient_scope", reason)


# ---- verification ------------------------------------------------------------------------------

def verify(token, keys, now, leeway=30, issuer=None, audience=None):
    """The Claims of a valid `token`, else JwtError (401 invalid_token)."""
    if not token:
        raise missing()
    header, payload, signing_input, signature = _decode(token)
    if not any(_signature_ok(key, signing_input, signature) for key in _candidates(keys, header)):
        raise _invalid("bad signature")
    return _claims(_object(payload), now, leeway, issuer, audience)


def _decode(token):
    """The header object, the payload's bytes (read only once the signature holds, so that
    unauthenticated input meets no more than the header's JSON), the signing input and the
    signature, of a token that is well formed; JwtError otherwise."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise _invalid("not base64url") from None
    if not isinstance(token, str):
        raise _invalid("not base64url")
    if len(token) > MAX_TOKEN:
        raise _invalid("token over 8 KiB")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid("not three segments")
    try:
        raw = [b64url_decode(p) for p in parts]
    except ValueError:
        raise _invalid("not base64url") from None
    header = _header(_object(raw[0]))
    return header, raw[1], f"{parts[0]}.{parts[1]}".encode("ascii"), raw[2]


def _object(data):
    try:
        value = strict_json(data)
    except ValueError:      # UnicodeDecodeError and json's errors are ValueErrors
        raise _invalid("not JSON") from None
    if not isinstance(value, dict):
        raise _invalid("header or payload not a JSON object")
    return value


def _header(header):
    if any(name in header for name in REFUSED_HEADERS):
        raise _invalid("refused header parameter (jku, jwk, x5u, x5c, crit, cty or b64)")
    typ = header.get("typ")
    if "typ" in header and (not isinstance(typ, str) or typ.lower() not in TYPES):
        raise _invalid("typ is not JWT")
    if not isinstance(header.get("alg"), str):
        raise _invalid("no alg")
    if "kid" in header and not isinstance(header["kid"], str):
        raise _invalid("kid not a string")
    return header


def _candidates(keys, header):
    """The configured keys this token may be checked against: those of exactly its alg (so
    `none`, `None` and an alg of another family find none), narrowed by its kid. A kid picks
    the keys that carry it; keys without a kid (secret files, PEMs) answer to any kid."""
    alg = header["alg"]
    same_alg = [k for k in keys.keys if k.alg == alg]
    if not same_alg:
        raise _invalid("alg is not a configured key's")
    if "kid" not in header:
        return same_alg
    chosen = ([k for k in same_alg if k.kid == header["kid"]]
              or [k for k in same_alg if k.kid is None])
    if not chosen:
        raise _invalid("unknown kid")
    return chosen


def _signature_ok(key, signing_input, signature):
    if key.secret is not None:
        mac = hmac.new(key.secret, signing_input, key.hash).digest()
        return hmac.compare_digest(mac, signature)
    return _rsa_ok(key, signing_input, signature)


def _rsa_ok(key, signing_input, signature):
    """RSASSA-PKCS1-v1_5 verification by encode-then-compare (RFC 8017 8.2.2)."""
    k = (key.n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    return hmac.compare_digest(pow(s, key.e, key.n).to_bytes(k, "big"),
                               emsa_pkcs1_v15(key.hash, signing_input, k))


def emsa_pkcs1_v15(hash_name, message, k):
    """The k-byte block 00 01 FF..FF 00 DigestInfo(hash(message)) (RFC 8017 9.2)."""
    t = DIGEST_INFO[hash_name] + hashlib.new(hash_name, message).digest()
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def _number(value):
    """A NumericDate we can compute with: not a bool, within +-2**53 (a huge integer would be
    a deadline no clock or float could hold)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and -2 ** 53 < value < 2 ** 53)


def _claims(payload, now, leeway, issuer, audience):
    exp = payload.get("exp")
    if not _number(exp):
        raise _invalid("no numeric exp")
    if exp + leeway <= now:
        raise _invalid("expired")
    for name in ("nbf", "iat"):
        if name in payload:
            if not _number(payload[name]):
                raise _invalid(f"{name} not a number")
            if payload[name] - leeway > now:
                raise _invalid(f"{name} in the future")
    if issuer and payload.get("iss") != issuer:
        raise _invalid("wrong iss")
    if audience and not _audience_ok(payload.get("aud"), audience):
        raise _invalid("wrong aud")
    sub = payload.get("sub")
    if not valid_sub(sub):
        raise _invalid("no valid sub")
    ssed = payload.get("ssed", {})
    if not isinstance(ssed, dict):
        raise _invalid("ssed claim not an object")
    return Claims(sub, exp, _selector_list(ssed, "subscribe"), _selector_list(ssed, "publish"))


def _audience_ok(aud, audience):
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud)


# Control characters, lone surrogates (unencodable) and the Unicode line/paragraph separators.
_BAD_SUB = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def valid_sub(sub):
    """`sub` as a client id: a string of 1-256 characters without control characters."""
    return isinstance(sub, str) and 1 <= len(sub) <= 256 and not _BAD_SUB.search(sub)


# ---- selectors ---------------------------------------------------------------------------------

# A path: segments of section 10's characters, none empty, `.` or `..`; at most 256 bytes.
_SEGMENT = r"[A-Za-z0-9._~:@!$'()+,;=-]+"
_PATH = re.compile(f"(/{_SEGMENT})+")
_DOTS = re.compile(r"/\.\.?(?=/|\Z)")


def valid_selector(selector):
    """`*`, an exact path, or a path followed by `/*` (everything below it); also `/*`."""
    if not isinstance(selector, str) or len(selector) > 256:
        return False
    if selector in ("*", "/*"):
        return True
    path = selector[:-2] if selector.endswith("/*") else selector
    return bool(_PATH.fullmatch(path)) and not _DOTS.search(path)


def _selector_list(ssed, name):
    selectors = ssed.get(name, [])
    if not isinstance(selectors, list) or not all(valid_selector(s) for s in selectors):
        raise _invalid(f"malformed ssed.{name}")
    return tuple(selectors)


def covers(selectors, path):
    """Whether a selector matches `path`: equal to it, `*`, or `/x/*` with `path` strictly
    below `/x/`. A path with an empty, `.` or `..` segment is covered by `*` alone, so that no
    prefix can be climbed out of, whatever the caller normalised."""
    clean = path.startswith("/") and "//" not in path and not _DOTS.search(path)
    for selector in selectors:
        if selector == "*" or (clean and selector == path):
            return True
        if clean and selector.endswith("/*") and len(path) > len(selector) - 1 \
                and path.startswith(selector[:-1]):
            return True
    return False


def covers_all(selectors, paths):
    return all(covers(selectors, p) for p in paths)


def authorize(claims, action, paths):
    """Raise 403 insufficient_scope unless `claims` cover every path for `action`
    ("subscribe" or "publish")."""
    if not covers_all(getattr(claims, action), paths):
        raise insufficient(f"token does not cover the path for {action}")


# ---- the cache ---------------------------------------------------------------------------------

class Verifier:
    """verify() with the configuration bound and a bounded cache of valid tokens, keyed by the
    SHA-256 of the token and kept until exp (plus leeway), least recently used evicted first,
    so a reconnect storm does not redo the work. Failures are not cached: they cost no more
    than a cache miss of a bad token would save (an RS256 check is one small pow), caching
    them would let anyone with junk tokens evict the valid entries, and some failures (nbf,
    iat) are only for now."""

    def __init__(self, keys, issuer=None, audience=None, leeway=30, size=CACHE_SIZE):
        self.keys, self.issuer, self.audience, self.leeway = keys, issuer, audience, leeway
        self.size = size
        self._cache = {}        # sha256(token) -> Claims, in order of use (dicts keep order)

    def verify(self, token, now):
        if not token:
            raise missing()
        if not isinstance(token, str):
            raise _invalid("not base64url")
        if len(token) > MAX_TOKEN:
            raise _invalid("token over 8 KiB")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        claims = self._cache.pop(digest, None)
        if claims is None:
            claims = verify(token, self.keys, now, self.leeway, self.issuer, self.audience)
        elif claims.exp + self.leeway <= now:
            raise _invalid("expired")
        self._cache[digest] = claims
        if len(self._cache) > self.size:
            del self._cache[next(iter(self._cache))]
        return claims


# ---- minting -----------------------------------------------------------------------------------

def mint(key, claims):
    """A token signed with HMAC key `key` (for `ssectl token` and the tests)."""
    if key.secret is None:
        raise ValueError("only an hs key can mint")
    header = {"alg": key.alg, "typ": "JWT", **({"kid": key.kid} if key.kid else {})}
    segments = [b64url_encode(json.dumps(part, separators=(",", ":")).encode("utf-8"))
                for part in (header, claims)]
    signing_input = ".".join(segments).encode("ascii")
    return ".".join(segments) + "." + b64url_encode(
        hmac.new(key.secret, signing_input, key.hash).digest())


__all__ = ["load_keys", "Key", "Keys", "verify", "Verifier", "mint", "covers", "covers_all",
           "authorize", "Claims", "JwtError", "missing", "insufficient", "valid_selector",
           "valid_sub", "b64url_decode", "b64url_encode", "strict_json"]
