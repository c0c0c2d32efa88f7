"""The body of a POST that publishes (SPEC 4): text/plain (all of it is the data), JSON
(`{"data", "event", "client"}`) or a form (`data`, `event`, `client`); any other key is a 400,
never silently dropped, and an `id` is refused (only the daemon makes ids). Pure.
"""
import json
from urllib.parse import parse_qs

from .control import CLIENT_ID, NO_PUBLISHER_IDS
from .http1 import HttpError


POST_KEYS = ("data", "event", "client")     # SPEC 4: any other key is a 400, never dropped


def fields(request):
    """(data, event, client) from a POST body: text/plain (the data), JSON or a form."""
    ctype = request.header("content-type", "text/plain").split(";")[0].strip().lower()
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "body is not valid UTF-8") from None
    if ctype == "text/plain":
        return text, None, None
    if ctype == "application/json":
        fields = _json_fields(text)
    elif ctype == "application/x-www-form-urlencoded":
        fields = _form_fields(text)
    else:
        raise HttpError(415, f"Content-Type {ctype} is not text/plain, JSON or a form")
    if fields.get("id") is not None:
        raise HttpError(400, NO_PUBLISHER_IDS)
    unknown = sorted(k for k in fields if k not in POST_KEYS and k != "id")
    if unknown:
        raise HttpError(400, f"unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))} (a publish takes data, event, client)")
    client = fields.get("client")
    if client is not None and not CLIENT_ID.match(client):
        raise HttpError(400, "client must be 1-64 of A-Za-z0-9._:-")
    return fields["data"], fields.get("event"), client


def _json_fields(text):
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
        raise HttpError(400, 'JSON body must be {"data": "...", "event": "...", "client": "..."}')
    for key in ("event", "client"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise HttpError(400, f"{key} must be a string")
    return obj


def _form_fields(text):
    form = parse_qs(text, keep_blank_values=True)
    if "data" not in form:
        raise HttpError(400, "form body needs a data field")
    repeated = sorted(k for k, values in form.items() if len(values) > 1)
    if repeated:
        raise HttpError(400, f"form field {repeated[0]!r} given more than once")
    return {k: values[0] for k, values in form.items()}
