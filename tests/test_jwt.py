"""The JWT core (ssed/jwt.py, ssed/jwtkeys.py) fed bytes: RFC 7515's vectors, keys and
signatures made by the openssl CLI, a negative corpus that must be refused whole (0 false
accepts, each for its own reason), the key files' refusals, the cache, and `ssectl token`.

The RSA forgeries are signed with RFC 7515 A.2's private exponent (printed in the RFC), so the
corpus needs no openssl; the e=3 forgeries need no private key at all (that is the attack).
Without openssl the interop tests skip, except under CI=true where they fail (.ci/run installs it).
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssed import jwt
from ssed.jwtkeys import Key, Keys, b64url_decode, b64url_encode

REPO = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000

# ---- RFC 7515 Appendix A ---------------------------------------------------------------------

RFC_PAYLOAD = ("eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19y"
               "b290Ijp0cnVlfQ")
A1_TOKEN = ("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." + RFC_PAYLOAD +
            ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
A1_K = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
A2_TOKEN = (
    "eyJhbGciOiJSUzI1NiJ9." + RFC_PAYLOAD +
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp"
    "5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb"
    "1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOY"
    "EUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw")
A2_N = ("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1P"
        "t0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
        "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_"
        "I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ")
A2_D = ("Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVo"
        "l2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn4"
        "39X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8"
        "bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ")
N = int.from_bytes(b64url_decode(A2_N), "big")
D = int.from_bytes(b64url_decode(A2_D), "big")
K = 256                                         # the A.2 modulus in bytes
RFC_EXP = 1300819380                            # the RFC's exp: verify with a `now` before it


# ---- DER and PEM, written here independently of the reader under test ------------------------

def der(tag, content):
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def der_int(value):
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def pkcs1(n, e):
    return der(0x30, der_int(n) + der_int(e))


def spki(n, e, algorithm=bytes.fromhex("06092a864886f70d0101010500"), inner=None):
    inner = pkcs1(n, e) if inner is None else inner
    return der(0x30, der(0x30, algorithm) + der(0x03, b"\x00" + inner))


def pem(label, data):
    body = base64.b64encode(data).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode()


# ---- tokens, made here -------------------------------------------------------------------------

SECRET = b"s3cret-of-at-least-thirty-two-bytes!!"
HS = Key("HS256", None, secret=SECRET)
RS = Key("RS256", "2010-12-29", n=N, e=65537)
KEYS = Keys((HS, RS))
GOOD = {"sub": "alice", "exp": NOW + 600, "iat": NOW,
        "ssed": {"subscribe": ["/user/alice", "/room/*"], "publish": ["/room/42"]}}
SPKI_PEM = pem("PUBLIC KEY", spki(N, 65537))


def seg(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return b64url_encode(raw)


def hs_token(header, payload, secret=SECRET, hash_name="sha256"):
    signing_input = f"{seg(header)}.{seg(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hash_name).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def digest_info(hash_name, digest):
    oids = {"sha256": "608648016503040201", "sha384": "608648016503040202",
            "sha512": "608648016503040203", "sha1": "2b0e03021a"}
    oid = der(0x06, bytes.fromhex(oids[hash_name]))
    return der(0x30, der(0x30, oid + b"\x05\x00") + der(0x04, digest))


def block(signing_input, hash_name="sha256", prefix=b"\x00\x01", fill=b"\xff", tail=b"",
          info=None):
    """An EMSA-PKCS1-v1_5-like block of K bytes; the arguments bend it out of shape."""
    t = info if info is not None else digest_info(
        hash_name, hashlib.new(hash_name, signing_input).digest())
    t += tail
    return prefix + fill * (K - len(prefix) - 1 - len(t)) + b"\x00" + t


def rs_sign(block_bytes, d=D):
    return pow(int.from_bytes(block_bytes, "big"), d, N).to_bytes(K, "big")


def rs_token(header, payload, make_block=block, signature=None):
    signing_input = f"{seg(header)}.{seg(payload)}"
    if signature is None:
        signature = rs_sign(make_block(signing_input.encode()))
    return f"{signing_input}.{b64url_encode(signature)}"


def icbrt(x):
    """The integer cube root of x, rounded up."""
    lo, hi = 0, 1 << (x.bit_length() // 3 + 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if mid ** 3 < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def e3_forgery(signing_input, ffs=1):
    """Bleichenbacher 2006: for e=3, the cube root of 00 01 FF.. 00 DigestInfo HASH followed
    by garbage, chosen so the cube keeps every byte before the garbage. Needs no private key."""
    head = b"\x00\x01" + b"\xff" * ffs + b"\x00" + digest_info(
        "sha256", hashlib.sha256(signing_input).digest())
    garbage_bits = (K - len(head)) * 8
    s = icbrt(int.from_bytes(head, "big") << garbage_bits)
    assert (s ** 3 >> garbage_bits) == int.from_bytes(head, "big")     # the forgery holds
    return s.to_bytes(K, "big")


def parsing_verifier(token, n, e):
    """How python-rsa 3.3 and node-forge got it wrong: decrypt, skip the padding, take the
    hash at the end of the DigestInfo. Only here to show the forgeries are real attacks."""
    h, p, s = token.split(".")
    em = pow(int.from_bytes(b64url_decode(s), "big"), e, n).to_bytes(K, "big")
    if em[:2] != b"\x00\x01":
        return False
    rest = em[2:].lstrip(b"\xff")[1:]
    expected = hashlib.sha256(f"{h}.{p}".encode()).digest()
    info = digest_info("sha256", expected)
    return rest[:len(info)] == info


# ---- RFC 7515 ------------------------------------------------------------------------------------

def test_rfc7515_a1_hs256(tmp_path):
    (tmp_path / "k").write_bytes(b64url_decode(A1_K) + b"\n")     # one final newline is not key
    keys = jwt.load_keys("hs256:k", str(tmp_path))
    assert keys.hs_first().secret == b64url_decode(A1_K)
    # The signature holds (the claims check comes after it); the RFC's claims have no sub.
    with pytest.raises(jwt.JwtError, match="^no valid sub$"):
        jwt.verify(A1_TOKEN, keys, RFC_EXP - 100)
    with pytest.raises(jwt.JwtError, match="^expired$"):
        jwt.verify(A1_TOKEN, keys, RFC_EXP + 31)
    with pytest.raises(jwt.JwtError, match="^bad signature$"):
        jwt.verify(A1_TOKEN[:-1] + "A", keys, RFC_EXP - 100)
    h, p, s = A1_TOKEN.split(".")
    assert hmac.new(b64url_decode(A1_K), f"{h}.{p}".encode(), "sha256").digest() == \
        b64url_decode(s)


def test_rfc7515_a2_rs256(tmp_path):
    h, p, s = A2_TOKEN.split(".")
    assert rs_sign(block(f"{h}.{p}".encode())) == b64url_decode(s)   # our test signer is right
    (tmp_path / "a2.pem").write_bytes(SPKI_PEM)
    (tmp_path / "a2-pkcs1.pem").write_bytes(pem("RSA PUBLIC KEY", pkcs1(N, 65537)))
    (tmp_path / "a2.jwks").write_text(json.dumps(
        {"keys": [{"kty": "RSA", "n": A2_N, "e": "AQAB", "kid": "2010-12-29", "alg": "RS256"}]}))
    for item in ("rs256:a2.pem", "rs256:a2-pkcs1.pem", "rs256:a2.jwks"):
        keys = jwt.load_keys(item, str(tmp_path))
        assert (keys.keys[0].n, keys.keys[0].e) == (N, 65537)
        with pytest.raises(jwt.JwtError, match="^no valid sub$"):
            jwt.verify(A2_TOKEN, keys, RFC_EXP - 100)
        bad = bytearray(b64url_decode(s))
        bad[-1] ^= 1
        with pytest.raises(jwt.JwtError, match="^bad signature$"):
            jwt.verify(f"{h}.{p}.{b64url_encode(bytes(bad))}", keys, RFC_EXP - 100)
    # With a sub, the same key signs and verifies a whole token.
    claims = jwt.verify(rs_token({"alg": "RS256"}, GOOD), keys, NOW)
    assert claims == jwt.Claims("alice", NOW + 600, ("/user/alice", "/room/*"), ("/room/42",))


# ---- accepted -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", ["256", "384", "512"])
def test_mint_and_verify_each_hs(bits):
    key = Key(f"HS{bits}", None, secret=os.urandom(64))
    token = jwt.mint(key, GOOD)
    assert json.loads(b64url_decode(token.split(".")[0])) == {"alg": f"HS{bits}", "typ": "JWT"}
    assert jwt.verify(token, Keys((key,)), NOW).sub == "alice"
    with pytest.raises(ValueError):
        jwt.mint(RS, GOOD)


def test_accepted_variants():
    both = KEYS
    ok = [
        (hs_token({"alg": "HS256"}, GOOD), {}),
        (hs_token({"alg": "HS256", "typ": "jwt"}, GOOD), {}),
        (hs_token({"alg": "HS256", "typ": "at+jwt"}, GOOD), {}),
        (hs_token({"alg": "HS256", "kid": "any"}, GOOD), {}),      # a kid-less key answers any kid
        (rs_token({"alg": "RS256", "kid": "2010-12-29"}, GOOD), {}),
        (rs_token({"alg": "RS256"}, GOOD), {}),
        (hs_token({"alg": "HS256"}, {**GOOD, "exp": NOW - 29}), {}),          # within leeway
        (hs_token({"alg": "HS256"}, {**GOOD, "nbf": NOW + 29, "iat": NOW + 29}), {}),
        (hs_token({"alg": "HS256"}, {**GOOD, "exp": NOW + 0.5}), {}),
        (hs_token({"alg": "HS256"}, {**GOOD, "iss": "app", "aud": "ssed"}),
         {"issuer": "app", "audience": "ssed"}),
        (hs_token({"alg": "HS256"}, {**GOOD, "aud": ["x", "ssed"]}), {"audience": "ssed"}),
        (hs_token({"alg": "HS256"}, {**GOOD, "sub": "alice@example.com"}), {}),
        (hs_token({"alg": "HS256"}, {**GOOD, "sub": "Zoë ✓ " + "x" * 250}), {}),
        (hs_token({"alg": "HS256"}, {"sub": "a", "exp": NOW + 1}), {}),          # no ssed claim
    ]
    for token, options in ok:
        assert jwt.verify(token, both, NOW, **options).sub
    claims = jwt.verify(hs_token({"alg": "HS256"}, {"sub": "a", "exp": NOW + 1}), both, NOW)
    assert (claims.subscribe, claims.publish) == ((), ())


def test_without_kid_each_key_of_the_alg_is_tried_and_a_kid_picks_one():
    other = Key("HS256", None, secret=b"another-secret-of-32-bytes-or-more!")
    keys = Keys((HS, other))
    assert jwt.verify(hs_token({"alg": "HS256"}, GOOD, secret=other.secret), keys, NOW)
    a = Key("HS256", "a", secret=b"a" * 32)
    b = Key("HS256", "b", secret=b"b" * 32)
    keys = Keys((a, b))
    assert jwt.verify(hs_token({"alg": "HS256", "kid": "b"}, GOOD, secret=b.secret), keys, NOW)
    for kid, secret in (("a", b.secret), ("b", a.secret), ("c", a.secret)):
        with pytest.raises(jwt.JwtError):
            jwt.verify(hs_token({"alg": "HS256", "kid": kid}, GOOD, secret=secret), keys, NOW)


# ---- the negative corpus -------------------------------------------------------------------------

def _corpus():
    """(name, token, reason, keys, options): every one must be refused, for that reason."""
    h = {"alg": "HS256"}
    r = {"alg": "RS256"}
    si = f"{seg(r)}.{seg(GOOD)}".encode()
    good_rs_sig = rs_sign(block(si))
    s = int.from_bytes(good_rs_sig, "big")
    e3 = Keys((Key("RS256", None, n=N, e=3),))
    rs_only = Keys((RS,))
    hs_only = Keys((HS,))
    pad = "x" * 6200
    bad = "bad signature"
    malformed = "not base64url"
    c = [
        # the algorithm is the key's, never the token's
        ("alg none", f"{seg({'alg': 'none'})}.{seg(GOOD)}.", "alg is not a configured key's"),
        ("alg None", f"{seg({'alg': 'None'})}.{seg(GOOD)}.", "alg is not a configured key's"),
        ("alg NONE", f"{seg({'alg': 'NONE'})}.{seg(GOOD)}.", "alg is not a configured key's"),
        ("alg nOnE + HS sig", hs_token({"alg": "nOnE"}, GOOD), "alg is not a configured key's"),
        ("alg hs256 lowercase", hs_token({"alg": "hs256"}, GOOD), "alg is not a configured key's"),
        ("alg 'HS256 '", hs_token({"alg": "HS256 "}, GOOD), "alg is not a configured key's"),
        ("alg HS384 unconfigured", hs_token({"alg": "HS384"}, GOOD, hash_name="sha384"),
         "alg is not a configured key's"),
        ("no alg", hs_token({"typ": "JWT"}, GOOD), "no alg"),
        ("alg list", hs_token({"alg": ["HS256"]}, GOOD), "no alg"),
        ("alg null", hs_token({"alg": None}, GOOD), "no alg"),
        ("key confusion: HS256 with the PEM as secret", hs_token(h, GOOD, secret=SPKI_PEM), bad),
        ("key confusion, RS-only config", hs_token(h, GOOD, secret=SPKI_PEM),
         "alg is not a configured key's", rs_only),
        ("key confusion: modulus bytes as secret", hs_token(h, GOOD, secret=b64url_decode(A2_N)),
         bad),
        ("RS header, HMAC signature", hs_token(r, GOOD), bad),
        ("HS header, RSA signature", rs_token(h, GOOD), bad),
        ("RS token, HS-only config", rs_token(r, GOOD), "alg is not a configured key's", hs_only),
        # PKCS#1 v1.5 blocks bent out of shape, each signed with the real private key
        ("DigestInfo SHA-1 OID", rs_token(r, GOOD, lambda m: block(
            m, info=digest_info("sha1", hashlib.sha256(m).digest()))), bad),
        ("DigestInfo SHA-512 in RS256", rs_token(r, GOOD, lambda m: block(m, "sha512")), bad),
        ("DigestInfo without NULL", rs_token(r, GOOD, lambda m: block(m, info=der(0x30, der(
            0x30, der(0x06, bytes.fromhex("608648016503040201"))) + der(
            0x04, hashlib.sha256(m).digest())))), bad),
        ("DigestInfo long-form length (BER)", rs_token(r, GOOD, lambda m: block(
            m, info=b"\x30\x81\x31" + digest_info("sha256", hashlib.sha256(m).digest())[2:])),
         bad),
        ("trailing garbage after the hash", rs_token(r, GOOD, lambda m: block(
            m, tail=b"\xde\xad\xbe\xef")), bad),
        ("short padding + garbage", rs_token(r, GOOD, lambda m: (lambda b: b[:10] + b"\x00" + b[
            10:].replace(b"\xff", b"\x41"))(block(m))[:K]), bad),
        ("padding FE", rs_token(r, GOOD, lambda m: block(m, fill=b"\xfe")), bad),
        ("block type 02", rs_token(r, GOOD, lambda m: block(m, prefix=b"\x00\x02")), bad),
        ("block type 00", rs_token(r, GOOD, lambda m: block(m, prefix=b"\x00\x00")), bad),
        ("leading 01", rs_token(r, GOOD, lambda m: block(m, prefix=b"\x01\x01")), bad),
        ("hash of another message", rs_token(r, GOOD, lambda m: block(m + b"x")), bad),
        ("other token's signature", rs_token(r, {**GOOD, "sub": "bob"}, signature=good_rs_sig),
         bad),
        ("s = n", rs_token(r, GOOD, signature=N.to_bytes(K, "big")), bad),
        ("s + n (same residue)", rs_token(r, GOOD, signature=(s + N).to_bytes(K, "big"))
         if s + N < 256 ** K else rs_token(r, GOOD, signature=b"\xff" * K), bad),
        ("s = 2^2048 - 1", rs_token(r, GOOD, signature=b"\xff" * K), bad),
        ("signature one byte short", rs_token(r, GOOD, signature=good_rs_sig[1:]), bad),
        ("signature with a leading 00", rs_token(r, GOOD, signature=b"\x00" + good_rs_sig), bad),
        ("signature with a trailing 00", rs_token(r, GOOD, signature=good_rs_sig + b"\x00"), bad),
        ("empty signature", rs_token(r, GOOD, signature=b""), bad),
        ("signature 0", rs_token(r, GOOD, signature=bytes(K)), bad),
        ("signature 1", rs_token(r, GOOD, signature=(1).to_bytes(K, "big")), bad),
        ("e=3 forgery, garbage after hash", rs_token(r, GOOD, signature=e3_forgery(si)), bad, e3),
        ("e=3 forgery, 8 FFs", rs_token(r, GOOD, signature=e3_forgery(si, 8)), bad, e3),
        ("e=3 forgery, against e=65537", rs_token(r, GOOD, signature=e3_forgery(si)), bad),
        ("e=3 plain cube root", rs_token(r, GOOD, signature=icbrt(int.from_bytes(
            block(si), "big")).to_bytes(K, "big")), bad, e3),
        # header parameters that would bring keys or semantics in
        *[(f"{p} header", hs_token({**h, p: v}, GOOD),
           "refused header parameter (jku, jwk, x5u, x5c, crit, cty or b64)")
          for p, v in (("jku", "https://evil/jwks"), ("jwk", {"kty": "oct", "k": "AAAA"}),
                       ("x5u", "https://evil/c"), ("x5c", ["MIIB"]), ("crit", ["exp"]),
                       ("cty", "JWT"), ("b64", False))],
        ("typ dpop+jwt", hs_token({**h, "typ": "dpop+jwt"}, GOOD), "typ is not JWT"),
        ("typ number", hs_token({**h, "typ": 1}, GOOD), "typ is not JWT"),
        ("typ null", hs_token({**h, "typ": None}, GOOD), "typ is not JWT"),
        ("payload not JSON, unsigned", f"{seg(h)}.{seg(b'{')}.{seg(b'x' * 32)}", bad),
        ("unknown kid", rs_token({**r, "kid": "other"}, GOOD), "unknown kid", rs_only),
        ("kid not a string", hs_token({**h, "kid": 7}, GOOD), "kid not a string"),
        # claims
        ("expired", hs_token(h, {**GOOD, "exp": NOW - 31}), "expired"),
        ("expired at the leeway's edge", hs_token(h, {**GOOD, "exp": NOW - 30}), "expired"),
        ("nbf in the future", hs_token(h, {**GOOD, "nbf": NOW + 31}), "nbf in the future"),
        ("iat in the future", hs_token(h, {**GOOD, "iat": NOW + 31}), "iat in the future"),
        ("nbf a string", hs_token(h, {**GOOD, "nbf": "0"}), "nbf not a number"),
        ("no exp", hs_token(h, {k: v for k, v in GOOD.items() if k != "exp"}), "no numeric exp"),
        ("exp a string", hs_token(h, {**GOOD, "exp": str(NOW + 600)}), "no numeric exp"),
        ("exp true", hs_token(h, {**GOOD, "exp": True}), "no numeric exp"),
        ("exp null", hs_token(h, {**GOOD, "exp": None}), "no numeric exp"),
        ("exp NaN", hs_token(h, b'{"sub":"a","exp":NaN}'), "not JSON"),
        ("exp Infinity", hs_token(h, b'{"sub":"a","exp":Infinity}'), "not JSON"),
        ("exp 1e400 (infinity)", hs_token(h, b'{"sub":"a","exp":1e400}'), "not JSON"),
        ("exp 2**53", hs_token(h, {**GOOD, "exp": 2 ** 53}), "no numeric exp"),
        ("exp 10**400", hs_token(h, b'{"sub":"a","exp":1' + b"0" * 400 + b'}'), "no numeric exp"),
        ("iat -1e300", hs_token(h, {**GOOD, "iat": -1e300}), "iat not a number"),
        ("wrong iss", hs_token(h, {**GOOD, "iss": "evil"}), "wrong iss", KEYS, {"issuer": "app"}),
        ("no iss", hs_token(h, GOOD), "wrong iss", KEYS, {"issuer": "app"}),
        ("wrong aud", hs_token(h, {**GOOD, "aud": "other"}), "wrong aud", KEYS,
         {"audience": "ssed"}),
        ("aud list without it", hs_token(h, {**GOOD, "aud": ["a", "b"]}), "wrong aud", KEYS,
         {"audience": "ssed"}),
        ("aud list with a number", hs_token(h, {**GOOD, "aud": ["ssed", 1]}), "wrong aud", KEYS,
         {"audience": "ssed"}),
        ("no aud", hs_token(h, GOOD), "wrong aud", KEYS, {"audience": "ssed"}),
        ("no sub", hs_token(h, {k: v for k, v in GOOD.items() if k != "sub"}), "no valid sub"),
        ("sub empty", hs_token(h, {**GOOD, "sub": ""}), "no valid sub"),
        ("sub 257 characters", hs_token(h, {**GOOD, "sub": "a" * 257}), "no valid sub"),
        ("sub with LF", hs_token(h, {**GOOD, "sub": "alice\nid: 1"}), "no valid sub"),
        ("sub with NUL", hs_token(h, {**GOOD, "sub": "alice\x00"}), "no valid sub"),
        ("sub with DEL", hs_token(h, {**GOOD, "sub": "alice\x7f"}), "no valid sub"),
        ("sub with U+2028", hs_token(h, {**GOOD, "sub": "a\u2028b"}), "no valid sub"),
        ("sub a lone surrogate", hs_token(h, b'{"sub":"\\ud800","exp":1900000000}'),
         "no valid sub"),
        ("sub a number", hs_token(h, {**GOOD, "sub": 42}), "no valid sub"),
        ("ssed a list", hs_token(h, {**GOOD, "ssed": ["/x"]}), "ssed claim not an object"),
        ("subscribe a string", hs_token(h, {**GOOD, "ssed": {"subscribe": "/user/alice"}}),
         "malformed ssed.subscribe"),
        *[(f"selector {sel!r}", hs_token(h, {**GOOD, "ssed": {"subscribe": [sel]}}),
           "malformed ssed.subscribe")
          for sel in ("/user/*/x", "user/alice", "/user/../admin", "/user//x", 42, "**", "",
                      "/user/al ice", "/user/%2e%2e", "/user/*x", "/" + "a" * 256, "/user/.",
                      None, "/user/alice/")],
        ("publish selector '/room/**'", hs_token(h, {**GOOD, "ssed": {"publish": ["/room/**"]}}),
         "malformed ssed.publish"),
        # structure
        ("over 8 KiB, validly signed", hs_token(h, {**GOOD, "pad": pad}), "token over 8 KiB"),
        ("two segments", seg(h) + "." + seg(GOOD), "not three segments"),
        ("four segments", hs_token(h, GOOD) + ".x", "not three segments"),
        ("one segment", "abc", "not three segments"),
        ("dots only", "..", "not JSON"),
        ("padding =", (lambda t: t.replace(".", "=.", 1))(hs_token(h, GOOD)), malformed),
        ("standard base64 '+'", (lambda t: t[:-1] + "+")(hs_token(h, GOOD)), malformed),
        ("a space", (lambda t: t[:5] + " " + t[5:])(hs_token(h, GOOD)), malformed),
        ("a newline at the end", hs_token(h, GOOD) + "\n", malformed),
        ("segment of 4k+1 characters", f"{seg(h)}.{seg(GOOD) + 'A' * ((1 - len(seg(GOOD))) % 4)}"
         f".{seg(b'x')}", malformed),
        ("non-canonical base64, signed", _noncanonical({**h, "x": 12}), malformed),
        ("non-ASCII", hs_token(h, GOOD) + "é", malformed),
        ("header not JSON", f"{seg(b'{alg')}.{seg(GOOD)}.{seg(b'x')}", "not JSON"),
        ("header not UTF-8", hs_token(b'{"alg":"HS256","x":"\xff"}', GOOD), "not JSON"),
        ("payload not JSON", hs_token(h, b'{"sub":"a",'), "not JSON"),
        ("header a list", hs_token(["HS256"], GOOD), "header or payload not a JSON object"),
        ("payload a string", hs_token(h, "alice"), "header or payload not a JSON object"),
        ("payload null", hs_token(h, None), "header or payload not a JSON object"),
        ("nested 3000 deep", hs_token(h, b"[" * 3000 + b"]" * 3000), "not JSON"),
        ("duplicate sub", hs_token(h, b'{"sub":"alice","exp":1900000000,"sub":"bob"}'),
         "not JSON"),
        ("duplicate alg", hs_token(b'{"alg":"none","alg":"HS256"}', GOOD), "not JSON"),
        ("empty token", "", "no token"),
    ]
    return [entry + (KEYS, {})[len(entry) - 3:] for entry in c]


def _noncanonical(header):
    """A token whose header segment decodes like the canonical one but is spelt otherwise
    (the unused low bits set), and whose HMAC is right for that spelling."""
    h = seg(header)
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(h) % 4 != 0
    spelt = h[:-1] + last[last.index(h[-1]) + 1]
    assert base64.urlsafe_b64decode(spelt + "=" * (-len(spelt) % 4)) == \
        base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))
    signing_input = f"{spelt}.{seg(GOOD)}"
    mac = hmac.new(SECRET, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64url_encode(mac)}"


CORPUS = _corpus()


def test_the_corpus_is_big_and_each_entry_distinct():
    assert len(CORPUS) >= 50
    assert len({entry[1] for entry in CORPUS}) >= len(CORPUS) - 3   # one token, other keys/options
    assert len({entry[0] for entry in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("name,token,reason,keys,options", CORPUS, ids=[c[0] for c in CORPUS])
def test_negative_corpus_is_refused(name, token, reason, keys, options):
    with pytest.raises(jwt.JwtError) as refused:
        jwt.verify(token, keys, NOW, **options)
    e = refused.value
    assert e.reason == reason
    assert (e.status, e.error) == ((401, None) if reason == "no token" else (401, "invalid_token"))
    # The reason is fixed text: no piece of the token (8 characters or more) in it.
    shown = f"{e} {e.reason!r} {e.www_authenticate()}"
    assert not any(token[i:i + 8] in shown for i in range(max(0, len(token) - 7)))
    # Through the cached verifier as well (a refusal is never cached into an acceptance).
    verifier = jwt.Verifier(keys, options.get("issuer"), options.get("audience"))
    for _ in range(2):
        with pytest.raises(jwt.JwtError):
            verifier.verify(token, NOW)


def test_forgeries_are_real_attacks_on_a_parsing_verifier():
    """The e=3 forgeries pass a verifier that parses the block; ours builds it whole."""
    r = {"alg": "RS256"}
    si = f"{seg(r)}.{seg(GOOD)}".encode()
    for ffs in (1, 8):
        token = rs_token(r, GOOD, signature=e3_forgery(si, ffs))
        assert parsing_verifier(token, N, 3)
        with pytest.raises(jwt.JwtError, match="^bad signature$"):
            jwt.verify(token, Keys((Key("RS256", None, n=N, e=3),)), NOW)
    # The parsing verifier does take a genuine signature (so its True above means something).
    assert parsing_verifier(rs_token(r, GOOD), N, 65537)


def test_emsa_block_is_rfc8017():
    m = b"abc"
    for name in ("sha256", "sha384", "sha512"):
        assert jwt.emsa_pkcs1_v15(name, m, K) == block(m, name)


# ---- selectors and errors ---------------------------------------------------------------------

COVERS = [
    (["/user/alice"], "/user/alice", True),
    (["/user/alice"], "/user/alice/x", False),
    (["/user/alice"], "/user/alicex", False),
    (["/user/*"], "/user/alice", True),
    (["/user/*"], "/user/alice/inbox", True),
    (["/user/*"], "/user/", False),
    (["/user/*"], "/user", False),
    (["/user/*"], "/userx/alice", False),
    (["/user/*"], "/user/../admin", False),
    (["/user/*"], "/user/./x", False),
    (["/user/*"], "/user//x", False),
    (["/user/alice"], "/user/./alice", False),
    (["/*"], "/anything/at/all", True),
    (["*"], "/anything", True),
    ([], "/user/alice", False),
    (["/room/42", "/user/*"], "/room/42", True),
]


@pytest.mark.parametrize("selectors,path,expected", COVERS)
def test_covers(selectors, path, expected):
    assert jwt.covers(selectors, path) is expected


def test_covers_all_and_authorize():
    claims = jwt.verify(hs_token({"alg": "HS256"}, GOOD), KEYS, NOW)
    assert jwt.covers_all(claims.subscribe, ["/user/alice", "/room/1"])
    assert not jwt.covers_all(claims.subscribe, ["/user/alice", "/user/bob"])
    jwt.authorize(claims, "subscribe", ["/user/alice", "/room/7"])
    jwt.authorize(claims, "publish", ["/room/42"])
    with pytest.raises(jwt.JwtError) as refused:
        jwt.authorize(claims, "publish", ["/room/7"])
    assert (refused.value.status, refused.value.error) == (403, "insufficient_scope")


def test_www_authenticate_values():
    assert jwt.missing().www_authenticate() == 'Bearer realm="ssed"'
    assert (jwt.missing().status, jwt.missing().error) == (401, None)
    with pytest.raises(jwt.JwtError) as refused:
        jwt.verify("a.b.c", KEYS, NOW)
    assert refused.value.www_authenticate() == 'Bearer realm="ssed", error="invalid_token"'
    assert jwt.insufficient("x").www_authenticate() == \
        'Bearer realm="ssed", error="insufficient_scope"'


# ---- the cache ----------------------------------------------------------------------------------

def test_verifier_caches_valid_tokens_until_exp(monkeypatch):
    calls = []
    real = jwt.verify
    monkeypatch.setattr(jwt, "verify", lambda *a, **k: calls.append(1) or real(*a, **k))
    v = jwt.Verifier(KEYS, leeway=30, size=2)
    t1, t2, t3 = (hs_token({"alg": "HS256"}, {**GOOD, "sub": s}) for s in ("a", "b", "c"))
    assert v.verify(t1, NOW).sub == "a" and v.verify(t1, NOW).sub == "a"
    assert len(calls) == 1                                          # the second was a hit
    v.verify(t2, NOW)
    v.verify(t1, NOW)                                               # t1 now the most recent
    v.verify(t3, NOW)                                               # evicts t2, not t1
    assert len(calls) == 3
    v.verify(t1, NOW)
    assert len(calls) == 3
    v.verify(t2, NOW)
    assert len(calls) == 4
    with pytest.raises(jwt.JwtError, match="^expired$"):            # a hit past exp + leeway
        v.verify(t1, NOW + 630)
    assert len(calls) == 4
    with pytest.raises(jwt.JwtError, match="^expired$"):            # and it was dropped
        v.verify(t1, NOW + 630)
    assert len(calls) == 5
    bad = t1[:-2] + ("AA" if not t1.endswith("AA") else "BA")
    for _ in range(2):
        with pytest.raises(jwt.JwtError):
            v.verify(bad, NOW)
    assert len(calls) == 7                                          # failures are not cached
    with pytest.raises(jwt.JwtError) as refused:
        v.verify(None, NOW)
    assert refused.value.error is None


# ---- key files ----------------------------------------------------------------------------------

def test_load_keys_accepts(tmp_path):
    (tmp_path / "hs").write_bytes(b"k" * 32 + b"\n")
    (tmp_path / "hs512").write_bytes(b"k" * 64)
    (tmp_path / "pub.pem").write_bytes(SPKI_PEM.replace(b"\n", b"\r\n"))
    (tmp_path / "e3.pem").write_bytes(pem("PUBLIC KEY", spki(N, 3)))
    (tmp_path / "set.jwks").write_text(json.dumps({"keys": [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},                 # not ours: passed over
        {"kty": "RSA", "use": "enc", "n": "AA", "e": "AQAB"},
        {"kty": "RSA", "alg": "RS512", "n": "AA", "e": "AQAB"},
        {"kty": "RSA", "n": A2_N, "e": "AQAB", "kid": "k1"},
        {"kty": "RSA", "n": A2_N, "e": "AQAB", "kid": "k2", "alg": "RS256", "use": "sig"}]}))
    keys = jwt.load_keys(f" rs256:{tmp_path}/pub.pem  hs256:hs\ths512:hs512 rs256:e3.pem "
                         "rs256:set.jwks ", str(tmp_path))
    assert [(k.alg, k.kid) for k in keys.keys] == [
        ("RS256", None), ("HS256", None), ("HS512", None), ("RS256", None), ("RS256", "k1"),
        ("RS256", "k2")]
    assert keys.hs_first().secret == b"k" * 32
    assert keys.keys[3].e == 3
    assert jwt.load_keys("", str(tmp_path)).keys == ()
    assert jwt.load_keys("rs256:pub.pem", str(tmp_path)).hs_first() is None


def _refusals(tmp_path):
    small_n = (1 << 1023) | 1
    good = spki(N, 65537)
    return [
        ("hs256", b"k" * 31, "hs256 secret is 31 bytes, at least 32 needed"),
        ("hs256", b"k" * 31 + b"\n", "hs256 secret is 31 bytes"),
        ("hs384", b"k" * 47, "hs384 secret is 47 bytes, at least 48 needed"),
        ("hs512", b"", "hs512 secret is 0 bytes, at least 64 needed"),
        ("hs256", b"k" * (1 << 20) + b"\n", "over 1 MiB, not a key file"),
        ("hs256", SPKI_PEM, "holds a PEM or JSON key, not an HMAC secret"),
        ("hs256", json.dumps({"keys": [{"kty": "RSA", "n": A2_N}]}).encode(), "not an HMAC"),
        ("rs256", pem("PUBLIC KEY", spki(small_n, 65537)), "modulus is 1024 bits"),
        ("rs256", pem("RSA PUBLIC KEY", pkcs1(small_n, 65537)), "modulus is 1024 bits"),
        ("rs256", pem("PUBLIC KEY", spki(N, 65536)), "exponent e must be odd"),
        ("rs256", pem("PUBLIC KEY", spki(N, 1)), "exponent e must be odd"),
        ("rs256", b"not a key", "not a PEM public key"),
        ("rs256", SPKI_PEM.replace(b"-----END PUBLIC KEY-----", b""), "not a PEM public key"),
        ("rs256", SPKI_PEM.replace(b"END PUBLIC", b"END RSA PUBLIC"), "not a PEM public key"),
        ("rs256", SPKI_PEM + SPKI_PEM, "not a PEM public key"),
        ("rs256", b"junk\n" + SPKI_PEM, "not a PEM public key"),
        ("rs256", SPKI_PEM.replace(b"M", b"*", 1), "not a PEM public key"),
        ("rs256", pem("PUBLIC KEY", good)[:-40] + b"=\n-----END PUBLIC KEY-----\n",
         "PEM body is not"),
        ("rs256", pem("PRIVATE KEY", good), "holds a private key"),
        ("rs256", pem("RSA PRIVATE KEY", good), "holds a private key"),
        ("rs256", pem("CERTIFICATE", good), "holds a certificate"),
        ("rs256", pem("EC PUBLIC KEY", good), "is not PUBLIC KEY nor RSA PUBLIC KEY"),
        ("rs256", pem("PUBLIC KEY", good + b"\x00"), "DER: trailing bytes"),
        ("rs256", pem("PUBLIC KEY", spki(N, 65537, inner=pkcs1(N, 65537) + b"\x00")),
         "DER: trailing bytes"),
        ("rs256", pem("PUBLIC KEY", der(0x30, der(0x30, bytes.fromhex(
            "06092a864886f70d0101010500")) + der(0x03, b"\x00" + pkcs1(N, 65537))) + b"\x05\x00"),
         "DER: trailing bytes"),
        ("rs256", pem("PUBLIC KEY", spki(N, 65537, algorithm=bytes.fromhex(
            "06092a864886f70d01010a"))), "not an RSA public key"),           # RSA-PSS
        ("rs256", pem("PUBLIC KEY", spki(N, 65537, algorithm=bytes.fromhex(
            "06092a864886f70d010101"))), "not an RSA public key"),           # no NULL
        ("rs256", pem("PUBLIC KEY", der(0x30, der(0x30, bytes.fromhex(
            "06092a864886f70d0101010500")) + der(0x03, b"\x01" + pkcs1(N, 65537)))),
         "unused bits"),
        ("rs256", pem("RSA PUBLIC KEY", b"\x30\x83\x00\x01\x0a" + pkcs1(N, 65537)[4:]),
         "DER: bad length"),
        ("rs256", pem("RSA PUBLIC KEY", b"\x30\x81\x05" + der_int(3) + der_int(3)),
         "length not in its shortest form"),
        ("rs256", pem("RSA PUBLIC KEY", der(0x30, der(0x02, b"\x00\x01") + der_int(65537))),
         "INTEGER not in its shortest form"),
        ("rs256", pem("RSA PUBLIC KEY", der(0x30, der(0x02, b"\x80" + bytes(255)) +
                                            der_int(65537))), "INTEGER empty or negative"),
        ("rs256", pem("RSA PUBLIC KEY", pkcs1(N, 65537)[:-1]), "runs past the end"),
        ("rs256", json.dumps({"keys": [{"kty": "RSA", "n": A2_N, "e": "AQAB", "d": A2_D}]})
         .encode(), "is a private key"),
        ("rs256", json.dumps({"keys": [{"kty": "EC"}]}).encode(), "JWK set has no RSA key"),
        ("rs256", json.dumps({"keys": [{"kty": "RSA", "n": A2_N + "=", "e": "AQAB"}]})
         .encode(), "n is not base64url"),
        ("rs256", json.dumps({"keys": [{"kty": "RSA", "n": A2_N}]}).encode(),
         "e is not base64url"),
        ("rs256", json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}).encode(),
         "modulus is 17 bits"),
        ("rs256", json.dumps({"keys": [{"kty": "RSA", "n": A2_N, "e": "AQAB", "kid": 1}]})
         .encode(), "kid is not a string"),
        ("rs256", b'{"keys": [], "keys": []}', "JWK set is not JSON: duplicate key"),
        ("rs256", b'{"kty": "RSA"}', "not a JWK set"),
    ]


def test_load_keys_refusals(tmp_path):
    cases = _refusals(tmp_path)
    assert len(cases) >= 35
    for i, (alg, data, message) in enumerate(cases):
        path = tmp_path / f"key{i}"
        path.write_bytes(data)
        with pytest.raises(ValueError) as refused:
            jwt.load_keys(f"{alg}:key{i}", str(tmp_path))
        assert str(refused.value).startswith(f"{path}: "), (i, str(refused.value))
        assert message in str(refused.value), (i, str(refused.value))


def test_load_keys_refuses_items(tmp_path):
    (tmp_path / "k").write_bytes(b"k" * 64)
    for spec, message in (("es256:k", "unknown algorithm 'es256'"), ("none:k", "unknown"),
                          ("hs256", "not ALG:FILE"), ("hs256:", "not ALG:FILE"),
                          ("hs256:missing", f"{tmp_path}/missing: cannot read: No such file"),
                          ("hs256:k rs256:missing", "missing: cannot read")):
        with pytest.raises(ValueError, match=message):
            jwt.load_keys(spec, str(tmp_path))


# ---- openssl -------------------------------------------------------------------------------------

def _openssl():
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("openssl is missing under CI: .ci/run must install it")
        pytest.skip("the openssl CLI is not installed (apt-get install openssl)")
    return path


def _run(*argv, data=None):
    return subprocess.run(argv, input=data, capture_output=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def openssl_keys(tmp_path_factory):
    """Two RSA-2048 keys made by openssl (e=65537 and e=3), their public keys in both PEM forms."""
    tool = _openssl()
    d = tmp_path_factory.mktemp("openssl")
    for name, exponent in (("k", "65537"), ("k3", "3")):
        _run(tool, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-pkeyopt", f"rsa_keygen_pubexp:{exponent}", "-out", str(d / f"{name}.key"))
        _run(tool, "pkey", "-in", str(d / f"{name}.key"), "-pubout", "-out", str(d / f"{name}.pub"))
        _run(tool, "rsa", "-pubin", "-in", str(d / f"{name}.pub"), "-RSAPublicKey_out",
             "-out", str(d / f"{name}.rsapub"))
    return tool, d


def _openssl_token(tool, keyfile, alg, payload):
    signing_input = f"{seg({'alg': alg, 'typ': 'JWT'})}.{seg(payload)}"
    signature = _run(tool, "dgst", f"-sha{alg[2:]}", "-sign", str(keyfile),
                     data=signing_input.encode())
    return f"{signing_input}.{b64url_encode(signature)}"


def test_openssl_keys_and_signatures(openssl_keys):
    tool, d = openssl_keys
    modulus = _run(tool, "rsa", "-pubin", "-in", str(d / "k.pub"), "-noout", "-modulus")
    n = int(modulus.decode().strip().split("=")[1], 16)
    for name, e in (("k", 65537), ("k3", 3)):
        for form in ("pub", "rsapub"):
            assert (d / f"{name}.{form}").read_bytes().startswith(
                b"-----BEGIN PUBLIC KEY" if form == "pub" else b"-----BEGIN RSA PUBLIC KEY")
            for bits in ("256", "384", "512"):
                keys = jwt.load_keys(f"rs{bits}:{name}.{form}", str(d))
                assert keys.keys[0].e == e
                token = _openssl_token(tool, d / f"{name}.key", f"RS{bits}", GOOD)
                assert jwt.verify(token, keys, NOW).sub == "alice"
                other = _openssl_token(tool, d / ("k3.key" if name == "k" else "k.key"),
                                       f"RS{bits}", GOOD)
                with pytest.raises(jwt.JwtError, match="^bad signature$"):
                    jwt.verify(other, keys, NOW)
    assert jwt.load_keys("rs256:k.pub", str(d)).keys[0].n == n


def test_openssl_agrees_our_test_pem_is_a_public_key(openssl_keys, tmp_path):
    tool, _ = openssl_keys
    (tmp_path / "a2.pem").write_bytes(SPKI_PEM)
    text = _run(tool, "pkey", "-pubin", "-in", str(tmp_path / "a2.pem"), "-noout", "-text")
    assert b"Public-Key: (2048 bit)" in text


# ---- ssectl token ------------------------------------------------------------------------------

def run_ctl(*argv, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if k not in ("SSED_CONFIG", "SSED_SOCKET")}
    base.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "ssed.ctl", *argv], env=base, cwd=cwd or "/",
                          capture_output=True, timeout=30)


def _config(tmp_path, jwt_key):
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "hs").write_bytes(SECRET + b"\n")
    (tmp_path / "ssed.ini").write_text(
        f"[ssed]\nlisten = 127.0.0.1:0\njwt_key = {jwt_key}   ; the keys\n[/user/*]\n")
    return tmp_path / "ssed.ini"


def test_ssectl_token_mints_a_token_that_verifies(tmp_path):
    (tmp_path / "pub.pem").write_bytes(SPKI_PEM)
    conf = _config(tmp_path, "rs256:pub.pem hs256:keys/hs")
    before = int(time.time())
    done = run_ctl("-c", str(conf), "token", "--sub", "alice@example.com", "--subscribe",
                   "/user/alice", "--subscribe", "/room/*", "--publish", "/room/42", "--ttl", "60")
    after = int(time.time())
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    lines = done.stdout.decode().split("\n")
    assert len(lines) == 2 and lines[1] == ""
    token = lines[0]
    claims = jwt.verify(token, Keys((HS,)), time.time(), leeway=0)
    assert claims == jwt.Claims("alice@example.com", claims.exp, ("/user/alice", "/room/*"),
                                ("/room/42",))
    payload = json.loads(b64url_decode(token.split(".")[1]))
    assert set(payload) == {"sub", "iat", "exp", "ssed"}
    assert before <= payload["iat"] <= after and payload["exp"] == payload["iat"] + 60
    # $SSED_CONFIG, the default ttl, no selectors
    done = run_ctl("token", "--sub", "bob", env={"SSED_CONFIG": str(conf)})
    assert done.returncode == 0, done.stderr
    payload = json.loads(b64url_decode(done.stdout.decode().strip().split(".")[1]))
    assert payload["exp"] - payload["iat"] == 3600
    assert payload["ssed"] == {"subscribe": [], "publish": []}


@pytest.mark.parametrize("jwt_key,argv,message", [
    ("rs256:pub.pem", ("--sub", "a"), "no hs256, hs384 or hs512 key in jwt_key"),
    (None, ("--sub", "a"), "no hs256, hs384 or hs512 key in jwt_key"),
    ("hs256:keys/missing", ("--sub", "a"), "cannot read"),
    ("hs256:keys/hs", ("--sub", ""), "--sub must be 1-256 characters"),
    ("hs256:keys/hs", ("--sub", "a", "--subscribe", "/user/*/x"), "not a selector"),
    ("hs256:keys/hs", ("--sub", "a", "--publish", "user"), "not a selector"),
    ("hs256:keys/hs", ("--sub", "a", "--ttl", "0"), "--ttl"),
])
def test_ssectl_token_refusals(tmp_path, jwt_key, argv, message):
    conf = _config(tmp_path, jwt_key or "")
    if jwt_key is None:
        conf.write_text("[ssed]\n")
    done = run_ctl("-c", str(conf), "token", *argv)
    assert done.returncode == 2
    assert done.stdout == b""
    assert message in done.stderr.decode(), done.stderr
    if "--ttl" not in argv:
        assert len(done.stderr.decode().strip().split("\n")) == 1


def test_ssectl_token_needs_a_config():
    done = run_ctl("token", "--sub", "a")
    assert done.returncode == 2
    assert "give -c FILE or set SSED_CONFIG" in done.stderr.decode()
