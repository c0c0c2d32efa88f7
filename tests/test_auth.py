"""Per-user authorization at the edge (SPEC 11): web.handle in process with `auth = jwt` and
`publish_auth = jwt`, tokens made here with hmac (independently of ssed.jwt): where a token
may come from, 401 and 403 with their exact WWW-Authenticate, `sub` as the client id, the
cookie and CORS credentials, heads up to 16 KiB, streams closed at expiry, config rules.
ssed.jwt itself (signatures, keys, the negative corpus) is tested in test_jwt.py.
"""
import base64
import hashlib
import hmac
import json

import pytest

from orders import Orders
from ssed import config as configmod
from ssed import auth, web
from ssed.http1 import HttpError, MAX_HEAD, RequestParser, whole_request
from ssed.hub import Hub

T0 = 1_800_000_000.0
SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
CONFIG = """
[ssed]
jwt_key = hs256:jwt.secret
jwt_cookie = sid
cors_origins = https://app.example
retry = 0

[/user/alice]
auth = jwt

[/user/bob]
auth = jwt

[/room/42]
auth = jwt
publish_auth = jwt

[/open]
cors_origins = *

[/static]
token = a-static-token-of-20b
"""


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims, secret=SECRET, header=None):
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def token(sub="alice", subscribe=("/user/alice",), publish=(), exp=T0 + 3600, **more):
    return mint({"sub": sub, "exp": exp,
                 "ssed": {"subscribe": list(subscribe), "publish": list(publish)}, **more})


@pytest.fixture
def hub(tmp_path):
    (tmp_path / "jwt.secret").write_bytes(SECRET + b"\n")
    cfg = configmod.parse(CONFIG, str(tmp_path / "ssed.ini"))
    h = Hub(cfg, lambda level, line: None, now=T0)
    h.start()
    return h


def request(method, target, headers=(), body=b"", max_head=MAX_HEAD):
    head = [f"{method} {target} HTTP/1.1", "Host: x", *headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return whole_request(raw, max_head) or RequestParser(1024, max_head).feed(raw)


def handle(hub, method, target, headers=(), body=b""):
    result = web.handle(hub, request(method, target, headers, body, hub.max_head), "127.0.0.1")
    head, _, rest = result.data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict((n.lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:]))
    return int(lines[0].split()[1]), fields, rest, result


def bearer(tok):
    return [f"Authorization: Bearer {tok}"]


INVALID = 'Bearer realm="ssed", error="invalid_token"'
SCOPE = 'Bearer realm="ssed", error="insufficient_scope"'


# -- where the token comes from, and the client id --------------------------------------------

@pytest.mark.parametrize("how", ["header", "cookie", "query"])
def test_a_valid_token_opens_the_stream_as_its_sub(hub, how):
    tok = token()
    headers, target = {"header": (bearer(tok), "/user/alice"),
                       "cookie": ([f"Cookie: a=b; sid={tok}"], "/user/alice"),
                       "query": ([], f"/user/alice?access_token={tok}")}[how]
    status, _, _, result = handle(hub, "GET", target, headers)
    assert status == 200 and result.client.id == "alice"
    assert hub.streams_of("alice") == (result.client,)


def test_a_sub_that_is_an_email_address_is_the_client_id(hub):
    status, _, _, result = handle(hub, "GET", "/user/alice", bearer(token(sub="a@example.com")))
    assert status == 200 and result.client.id == "a@example.com"


def test_a_client_parameter_other_than_the_sub_is_403(hub):
    status, _, _, result = handle(hub, "GET", "/user/alice?client=mallory", bearer(token()))
    assert (status, result.refused) == (403, "forbidden")
    status, _, _, _ = handle(hub, "GET", "/user/alice?client=alice", bearer(token()))
    assert status == 200


# -- refusals ----------------------------------------------------------------------------------

def test_no_token_is_401_with_the_bare_challenge(hub):
    status, fields, body, result = handle(hub, "GET", "/user/alice")
    assert (status, fields["www-authenticate"], result.refused) == (401, 'Bearer realm="ssed"',
                                                                   "unauthorized")


@pytest.mark.parametrize("bad", [
    token(exp=T0 - 3600),                               # expired (beyond the leeway)
    token(nbf=T0 + 3600),                               # not yet valid
    mint({"sub": "alice", "exp": T0 + 60}, secret=b"another secret of 32 bytes or more!!"),
    "not.a.jwtx9",
    mint({"sub": "alice", "exp": T0 + 60}, header={"alg": "none"}),
])
def test_a_bad_token_is_401_invalid_token_and_never_echoed(hub, bad):
    status, fields, body, _ = handle(hub, "GET", "/user/alice", bearer(bad))
    assert (status, fields["www-authenticate"]) == (401, INVALID)
    assert bad.encode() not in body and bad.split(".")[-1].encode() not in body


def test_a_valid_token_that_does_not_cover_the_path_is_403_insufficient_scope(hub):
    status, fields, _, result = handle(hub, "GET", "/user/bob", bearer(token()))
    assert (status, fields["www-authenticate"], result.refused) == (403, SCOPE, "forbidden")


def test_a_multiplexed_stream_is_refused_whole_if_one_path_is_not_covered(hub):
    tok = token(subscribe=["/user/*"])
    assert handle(hub, "GET", "/?service=/user/alice&service=/user/bob", bearer(tok))[0] == 200
    tok = token(subscribe=["/user/alice"])
    status, fields, _, _ = handle(hub, "GET", "/?service=/user/alice&service=/room/42",
                                  bearer(tok))
    assert (status, fields["www-authenticate"]) == (403, SCOPE)


def test_selectors_star_and_prefix(hub):
    assert handle(hub, "GET", "/room/42", bearer(token(subscribe=["*"])))[0] == 200
    assert handle(hub, "GET", "/room/42", bearer(token(subscribe=["/room/*"])))[0] == 200
    assert handle(hub, "GET", "/room/42", bearer(token(subscribe=["/room"])))[0] == 403


def test_services_without_auth_ignore_tokens_and_static_tokens_still_work(hub):
    assert handle(hub, "GET", "/open")[0] == 200
    assert handle(hub, "GET", "/static", bearer("a-static-token-of-20b"))[0] == 200
    assert handle(hub, "GET", "/static")[0] == 401


# -- publishing ----------------------------------------------------------------------------------

def test_post_with_publish_auth_takes_a_token_whose_publish_claims_cover_it(hub):
    body = b'{"data": "hi"}'
    json_ct = ["Content-Type: application/json"]
    ok = token(subscribe=[], publish=["/room/42"])
    status, _, reply, _ = handle(hub, "POST", "/room/42", bearer(ok) + json_ct, body)
    assert status == 200 and json.loads(reply)["delivered"] == 0
    status, fields, _, _ = handle(hub, "POST", "/room/42", bearer(token()) + json_ct, body)
    assert (status, fields["www-authenticate"]) == (403, SCOPE)
    assert handle(hub, "POST", "/room/42", json_ct, body)[0] == 401
    assert handle(hub, "POST", "/user/alice", bearer(ok) + json_ct, body)[0] == 405


# -- CORS with the cookie -----------------------------------------------------------------------

def test_a_listed_origin_gets_credentials_and_star_never_does(hub):
    _, fields, _, _ = handle(hub, "GET", "/user/alice",
                             ["Origin: https://app.example", f"Cookie: sid={token()}"])
    assert fields["access-control-allow-origin"] == "https://app.example"
    assert fields["access-control-allow-credentials"] == "true"
    _, fields, _, _ = handle(hub, "GET", "/open", ["Origin: https://elsewhere.example"])
    assert fields["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in fields


# -- heads up to 16 KiB --------------------------------------------------------------------------

def test_with_jwt_keys_a_head_may_hold_an_8_kib_token(hub):
    big = token(pad="x" * 5950)
    assert 8000 < len(big) <= 8192 and hub.max_head == 16384
    assert handle(hub, "GET", "/user/alice", bearer(big))[0] == 200
    with pytest.raises(HttpError) as refused:
        request("GET", "/user/alice", [f"X-Pad: {'y' * 17000}"], max_head=hub.max_head)
    assert refused.value.status == 431


def test_without_jwt_keys_heads_stay_at_8_kib():
    cfg = configmod.parse("[/a]\n", "x.ini")
    h = Hub(cfg, lambda level, line: None, now=T0)
    assert h.max_head == MAX_HEAD == 8192 and h.jwt is None


# -- expiry ---------------------------------------------------------------------------------------

def test_a_stream_is_closed_when_its_token_expires_plus_the_leeway(hub):
    orders = Orders(hub)
    _, _, _, result = handle(hub, "GET", "/user/alice", bearer(token(exp=T0 + 100)))
    hub.tick(T0 + 129)
    assert orders.closed == []
    due = hub.tick(T0 + 129.5)
    assert due <= T0 + 130
    hub.tick(T0 + 130)
    assert orders.closed == [("alice", "expired")]
    assert hub.dropped["expired"] == 1


def test_a_closed_stream_leaves_nothing_to_expire(hub):
    orders = Orders(hub)
    _, _, _, result = handle(hub, "GET", "/user/alice", bearer(token(exp=T0 + 100)))
    orders.close(result.client, "eof")
    hub.tick(T0 + 200)
    assert orders.closed == [("alice", "eof")]


# -- config ----------------------------------------------------------------------------------------

def test_auth_jwt_without_keys_or_with_a_static_token_is_a_config_error(tmp_path):
    text = "[/a]\nauth = jwt\n[/b]\nauth = jwt\ntoken = a-static-token-of-20b\n" \
           "[/c]\npublish_auth = jwt\n"
    cfg = configmod.parse(text, "x.ini")
    assert auth.check(cfg) == [
        (2, "auth = jwt needs jwt_key in [ssed]"),
        (4, "auth = jwt needs jwt_key in [ssed]"),
        (4, "auth = jwt and token both set: choose one"),
        (7, "publish_auth = jwt needs jwt_key in [ssed]")]


def test_a_bad_jwt_key_is_a_config_error_with_its_line(tmp_path):
    (tmp_path / "short").write_bytes(b"too short")
    with pytest.raises(configmod.ConfigError) as bad:
        configmod.parse("[ssed]\njwt_key = hs256:short\n[/a]\n", str(tmp_path / "x.ini"))
    assert bad.value.errors[0].startswith(f"{tmp_path / 'x.ini'}:2: jwt_key: ")


# -- templates -----------------------------------------------------------------------------------

TEMPLATE = """
[ssed]
jwt_key = hs256:jwt.secret
retry = 0

[/inbox/*]
auth = jwt
publish_auth = jwt
"""


@pytest.fixture
def thub(tmp_path):
    (tmp_path / "jwt.secret").write_bytes(SECRET)
    h = Hub(configmod.parse(TEMPLATE, str(tmp_path / "ssed.ini")), lambda level, line: None,
            now=T0)
    h.start()
    return h


def test_a_template_with_auth_makes_a_channel_only_for_a_token_that_covers_it(thub):
    assert handle(thub, "GET", "/inbox/alice")[0] == 401
    assert handle(thub, "GET", "/inbox/bob", bearer(token(subscribe=["/inbox/alice"])))[0] == 403
    assert "/inbox/alice" not in thub.channels and "/inbox/bob" not in thub.channels
    status, _, _, result = handle(thub, "GET", "/inbox/alice",
                                  bearer(token(subscribe=["/inbox/alice"])))
    assert status == 200 and result.client.id == "alice"
    assert "/inbox/alice" in thub.channels


def test_a_post_to_a_template_channel_takes_a_token_that_may_publish_there(thub):
    body, ct = b"hello", ["Content-Type: text/plain"]
    assert handle(thub, "POST", "/inbox/carol", bearer(token()) + ct, body)[0] == 403
    assert "/inbox/carol" not in thub.channels
    ok = token(subscribe=[], publish=["/inbox/*"])
    assert handle(thub, "POST", "/inbox/carol", bearer(ok) + ct, body)[0] == 200
    assert "/inbox/carol" in thub.channels


def test_auth_jwt_on_a_template_without_keys_is_a_config_error():
    cfg = configmod.parse("[/inbox/*]\nauth = jwt\n", "x.ini")
    assert auth.check(cfg) == [(2, "auth = jwt needs jwt_key in [ssed]")]
