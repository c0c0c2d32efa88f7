"""The keys that JWTs are checked against (SPEC section 11's `jwt_key`), read strictly: HMAC
secret files, RSA public keys as PEM (SubjectPublicKeyInfo or PKCS#1) or as a JWK set. And the
strict base64url and JSON that both the key files and the tokens are read with.

A key that is weak or not what its alg says is a config error at start, never a key that
verifies less than it seems: HMAC secrets of at least the hash's size (and not a PEM or a JWK
pasted in by mistake, which would make a public key the secret), moduli of at least 2048 bits,
odd e >= 3, DER with minimal lengths and integers and no trailing bytes, the rsaEncryption OID
with NULL parameters, private keys refused (they have no business on this server).
"""
import base64
import binascii
import json
import os
import re
from typing import NamedTuple

HASHES = {"256": "sha256", "384": "sha384", "512": "sha512"}
HASH_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
ALGS = tuple(f"{kind}{bits}" for kind in ("HS", "RS") for bits in HASHES)
MIN_RSA_BITS = 2048
MAX_FILE = 1 << 20
# AlgorithmIdentifier content for rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
RSA_ALGORITHM = bytes.fromhex("06092a864886f70d0101010500")
SEQUENCE, INTEGER, BIT_STRING = 0x30, 0x02, 0x03


class Key(NamedTuple):
    alg: str                        # "HS256" ... "RS512", as a token's header names it
    kid: str | None
    secret: bytes | None = None     # HS keys
    n: int | None = None            # RS keys
    e: int | None = None
    source: str = ""                # the file it came from

    @property
    def hash(self):
        return HASHES[self.alg[2:]]


class Keys(NamedTuple):
    keys: tuple

    def hs_first(self):
        """The first HMAC key, for minting; None if there is none."""
        return next((k for k in self.keys if k.alg.startswith("HS")), None)


# ---- base64url and JSON, strictly ------------------------------------------------------------

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """Unpadded base64url in its one canonical form (unused bits zero), else ValueError."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key")
        obj[key] = value
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")      # 1e400 reads as infinity: an exp never met
    return value


def strict_json(data):
    """UTF-8 JSON bytes to a value: duplicate keys, NaN, Infinity and numbers that overflow to
    infinity refused (ValueError)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deep") from None


# ---- jwt_key ---------------------------------------------------------------------------------

def load_keys(spec_text, base_dir):
    """The keys of a `jwt_key` value: `ALG:FILE` items, space-separated, relative files
    against `base_dir`. ValueError naming the item or file on anything wrong."""
    keys = []
    for item in spec_text.split():
        alg, colon, name = item.partition(":")
        if not colon or not name:
            raise ValueError(f"{item!r}: not ALG:FILE")
        if alg.upper() not in ALGS:
            raise ValueError(f"{item!r}: unknown algorithm {alg!r} (one of "
                             f"{', '.join(a.lower() for a in ALGS)})")
        path = os.path.join(base_dir, name)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE + 1)
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
        if len(data) > MAX_FILE:
            raise ValueError(f"{path}: over 1 MiB, not a key file")
        try:
            read = _secret if alg.upper().startswith("HS") else _rsa_keys
            keys.extend(read(alg.upper(), data, path))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return Keys(tuple(keys))


def _secret(alg, data, path):
    secret = data.removesuffix(b"\n")
    need = HASH_SIZES[HASHES[alg[2:]]]
    if len(secret) < need:
        raise ValueError(f"{alg.lower()} secret is {len(secret)} bytes, at least {need} needed")
    head = secret.lstrip()
    if head.startswith(b"-----BEGIN") or (head.startswith(b"{") and b'"kty"' in secret):
        raise ValueError(f"holds a PEM or JSON key, not an HMAC secret (a public key as "
                         f"secret would let anyone sign; for RSA say rs{alg[2:]}:FILE)")
    return [Key(alg, None, secret=secret, source=path)]


def _rsa_keys(alg, data, path):
    text = data.decode("ascii", "replace").strip()
    if text.startswith("{"):
        return _jwk_set(alg, data, path)
    n, e = _pem(text)
    return [_rsa_key(alg, None, n, e, path)]


def _rsa_key(alg, kid, n, e, path):
    if n.bit_length() < MIN_RSA_BITS:
        raise ValueError(f"RSA modulus is {n.bit_length()} bits, at least {MIN_RSA_BITS} needed")
    if e < 3 or e % 2 == 0 or e >= n:
        raise ValueError("RSA exponent e must be odd, at least 3 and less than the modulus")
    return Key(alg, kid, n=n, e=e, source=path)


# ---- PEM and DER -------------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)\r?\n?"
                  r"-----END \1-----")
_PRIVATE = "holds a private key: give the public key (openssl pkey -in KEY -pubout)"
_LABELS = {"PRIVATE KEY": _PRIVATE, "RSA PRIVATE KEY": _PRIVATE,
           "ENCRYPTED PRIVATE KEY": _PRIVATE,
           "CERTIFICATE": "holds a certificate: give its public key "
                          "(openssl x509 -in CERT -pubkey -noout)"}


def _pem(text):
    """(n, e) of the one PEM block that is the whole of `text`."""
    match = _PEM.fullmatch(text)
    if not match:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END "
                         "PUBLIC KEY-----) nor a JWK set")
    label, body = match.groups()
    if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise ValueError(_LABELS.get(label, f"PEM {label!r} is not PUBLIC KEY nor RSA PUBLIC KEY"))
    body = "".join(body.split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("PEM body is not base64") from None
    if base64.b64encode(der).decode("ascii") != body:
        raise ValueError("PEM body is not canonical base64")
    return spki(der) if label == "PUBLIC KEY" else rsa_public_key(der)


def _tlv(data, pos, tag):
    """The content of the DER element with `tag` at `pos`, and the position after it."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError(f"DER: expected tag {tag:#04x} at byte {pos}")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7f
        if not 1 <= count <= 4 or pos + count > len(data) or data[pos] == 0:
            raise ValueError(f"DER: bad length at byte {pos - 1}")
        length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
        if length < 0x80:
            raise ValueError(f"DER: length not in its shortest form at byte {pos - count - 1}")
    if pos + length > len(data):
        raise ValueError("DER: element runs past the end")
    return data[pos:pos + length], pos + length


def _whole(data, tag):
    content, end = _tlv(data, 0, tag)
    if end != len(data):
        raise ValueError("DER: trailing bytes")
    return content


def _integer(data, pos):
    content, end = _tlv(data, pos, INTEGER)
    if not content or content[0] & 0x80:
        raise ValueError("DER: INTEGER empty or negative")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise ValueError("DER: INTEGER not in its shortest form")
    return int.from_bytes(content, "big"), end


def rsa_public_key(der):
    """(n, e) of a PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }."""
    body = _whole(der, SEQUENCE)
    n, pos = _integer(body, 0)
    e, pos = _integer(body, pos)
    if pos != len(body):
        raise ValueError("DER: trailing bytes in RSAPublicKey")
    return n, e


def spki(der):
    """(n, e) of a SubjectPublicKeyInfo holding an rsaEncryption key."""
    body = _whole(der, SEQUENCE)
    algorithm, pos = _tlv(body, 0, SEQUENCE)
    if algorithm != RSA_ALGORITHM:
        raise ValueError("not an RSA public key (rsaEncryption with NULL parameters)")
    bits, pos = _tlv(body, pos, BIT_STRING)
    if pos != len(body):
        raise ValueError("DER: trailing bytes in SubjectPublicKeyInfo")
    if not bits or bits[0] != 0:
        raise ValueError("DER: BIT STRING with unused bits")
    return rsa_public_key(bits[1:])


# ---- JWK sets ------------------------------------------------------------------------------------

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def _jwk_set(alg, data, path):
    """The RSA signing keys of a JWK set for `alg`. Keys of another kty, use or alg are
    passed over (an identity provider's set mixes them); one that is for us must be sound."""
    try:
        jwks = strict_json(data)
    except ValueError as e:
        raise ValueError(f"JWK set is not JSON: {e}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError('not a JWK set ({"keys": [...]})')
    keys = []
    for i, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, dict):
            raise ValueError(f"JWK set: key {i} is not an object")
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            raise ValueError(f"JWK set: key {i} is a private key: give the public set")
        if (jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig"
                or jwk.get("alg", alg) != alg):
            continue
        kid = jwk.get("kid")
        try:
            if kid is not None and not isinstance(kid, str):
                raise ValueError("kid is not a string")
            n, e = (int.from_bytes(_member(jwk, m), "big") for m in ("n", "e"))
            keys.append(_rsa_key(alg, kid, n, e, path))
        except ValueError as e:
            raise ValueError(f"JWK set: key {i}: {e}") from None
    if not keys:
        raise ValueError(f"JWK set has no RSA key for {alg} (kty RSA, use sig, alg {alg})")
    return keys


def _member(jwk, name):
    try:
        return b64url_decode(jwk.get(name))
    except ValueError:
        raise ValueError(f"{name} is not base64url") from None
