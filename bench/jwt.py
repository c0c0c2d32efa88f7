#!/usr/bin/env python3
"""JWT verifications per CPU-second (SPEC section 11): HS256 and RS256 with a 2048-bit key,
each through `jwt.verify` (no cache: the whole decode, signature and claims check) and through
`jwt.Verifier` with every token already cached (what a reconnect storm costs).

    python3 bench/jwt.py                 # ~1 CPU-second per row
    python3 bench/jwt.py --seconds 3     # longer rows
    python3 bench/jwt.py --root DIR      # the ssed package in DIR (e.g. a git worktree)

Process CPU time (time.process_time), not wall time, so that the other load on a shared
machine moves the figures less. The RSA key is RFC 7515 Appendix A.2's (public numbers,
e = 65537), so that the bench needs no openssl; the tokens are 1,000 distinct ones per row,
cycled, with the claims a real subscriber's token carries.
"""
import argparse
import hashlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_000
TOKENS = 1000
A2_N = ("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1P"
        "t0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
        "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_"
        "I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ")
A2_D = ("Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVo"
        "l2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn4"
        "39X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8"
        "bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ")


def claims(i):
    return {"sub": f"user{i}@example.com", "iat": NOW, "exp": NOW + 3600,
            "ssed": {"subscribe": [f"/user/user{i}", "/room/*"], "publish": ["/room/42"]}}


def rs_token(jwt, n, d, payload):
    seg = [jwt.b64url_encode(json.dumps(p, separators=(",", ":")).encode())
           for p in ({"alg": "RS256", "typ": "JWT"}, payload)]
    signing_input = ".".join(seg).encode()
    k = (n.bit_length() + 7) // 8
    block = jwt.emsa_pkcs1_v15("sha256", signing_input, k)
    signature = pow(int.from_bytes(block, "big"), d, n).to_bytes(k, "big")
    return ".".join(seg) + "." + jwt.b64url_encode(signature)


def rate(verify, tokens, seconds):
    """Verifications per CPU-second: whole passes over `tokens` until `seconds` of CPU."""
    done, start = 0, time.process_time()
    while True:
        for token in tokens:
            verify(token)
        done += len(tokens)
        spent = time.process_time() - start
        if spent >= seconds:
            return done / spent


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="CPU-seconds per row")
    p.add_argument("--root", default=ROOT, help="the directory holding the ssed package")
    args = p.parse_args()
    sys.path.insert(0, args.root)
    from ssed import jwt

    n, d = (int.from_bytes(jwt.b64url_decode(v), "big") for v in (A2_N, A2_D))
    hs = jwt.Key("HS256", None, secret=hashlib.sha256(b"bench").digest())
    rs = jwt.Key("RS256", None, n=n, e=65537)
    rows = []
    for name, key, make in (("HS256", hs, lambda c: jwt.mint(hs, c)),
                            ("RS256-2048", rs, lambda c: rs_token(jwt, n, d, c))):
        keys = jwt.Keys((key,))
        tokens = [make(claims(i)) for i in range(TOKENS)]
        assert all(jwt.verify(t, keys, NOW).sub for t in tokens)
        plain = rate(lambda t: jwt.verify(t, keys, NOW), tokens, args.seconds)
        verifier = jwt.Verifier(keys)
        for t in tokens:
            verifier.verify(t, NOW)
        cached = rate(lambda t: verifier.verify(t, NOW), tokens, args.seconds)
        rows.append((name, len(tokens[0]), plain, cached))
    print("| alg | token bytes | verify / CPU-s | µs each | cache hits / CPU-s | µs each |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, plain, cached in rows:
        print(f"| {name} | {size} | {plain:,.0f} | {1e6 / plain:.1f} | {cached:,.0f} "
              f"| {1e6 / cached:.1f} |")


if __name__ == "__main__":
    main()
