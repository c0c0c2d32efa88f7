"""The control protocol's text form (SPEC section 5), both ways: a line a person types to the
request dict its JSON form would be, and an answer dict to one line for a person.

Words are read as a POSIX shell reads them (QUOTING says how); publish's DATA is the
exception. The commands table comes in as an argument (`control.COMMANDS`), so that this
module needs nothing of control's; its errors are `TextError`, which control answers as it
answers any other bad request.
"""
import json
import re


class TextError(ValueError):
    """A typed line that cannot be read; the text says what is wrong, for the answer."""


QUOTING = ("words are split at spaces; quote a word with '...' (taken as is) or \"...\" "
           "(where \\\" and \\\\ are \" and \\), or escape one character with \\, as in "
           "a shell. publish's DATA is the rest of the line as typed, quotes and spaces "
           "included, unless it starts with a quote: then it is one quoted word")

# One piece of a shell word: a plain character, a backslash escape, or a quoted string.
_PIECE = r"[^ \t'\"\\]|\\.|'[^']*'|" + r'"(?:[^"\\]|\\.)*"'
_WORD = re.compile(f"(?:{_PIECE})+")
_FLAG = re.compile(r"[ \t]*(-e|--event|--client)(?=[ \t]|\Z)")


def parse(line, commands):
    """The request dict for a typed line; `commands` maps a name to its Spec (its JSON
    `fields`, in the order the text form takes them, and its `text_args` for the usage)."""
    _, head, rest = _first_word(line.strip(), "command")
    if head.startswith("/"):
        return {"cmd": "admin", "service": head, "args": _words(rest, head)}
    if head == "publish":
        return _parse_publish(rest)
    spec = commands.get(head)
    if spec is None:
        return {"cmd": head}
    words = _words(rest, head)
    names = list(spec.fields)
    if head == "admin":
        return {"cmd": "admin", "service": words[0] if words else None, "args": words[1:]}
    if len(words) > len(names):
        raise TextError(f"{head}: too many arguments (usage: {head} {' '.join(spec.text_args)})")
    req = {"cmd": head, **dict(zip(names, words))}
    if head == "ban" and "seconds" in req:
        req["seconds"] = _number(req["seconds"])
    return req


def _first_word(text, command):
    """The first word of `text` as typed and unquoted (both '' at the end of the line), and
    the text after it."""
    text = text.lstrip(" \t")
    match = _WORD.match(text)
    end = match.end() if match else 0
    if end < len(text) and text[end] not in " \t":     # a quote or a backslash that is open
        raise TextError(f"{command}: " + ("nothing after the final \\ to escape"
                                          if text[end] == "\\" else f"no closing {text[end]}"))
    raw = text[:end]
    return raw, re.sub(_PIECE, _unquote, raw), text[end:]


def _unquote(piece):
    text = piece.group()
    if text[0] == "'":
        return text[1:-1]
    if text[0] == '"':
        return re.sub(r'\\([\\"])', r"\1", text[1:-1])
    return text[-1]     # a plain character, or the one a backslash escapes


def _words(text, command):
    words = []
    while True:
        raw, word, text = _first_word(text, command)
        if not raw:
            return words
        words.append(word)


def _parse_publish(rest):
    """publish SERVICE [-e EVENT] [--client ID] DATA: the options end at the first word that
    is not one; DATA is the rest as typed (`it's`, JSON with its quotes, runs of spaces) unless
    it starts with a quote, which makes it one quoted word (to keep leading spaces, or to
    send data that looks like an option)."""
    raw, service, rest = _first_word(rest, "publish")
    req = {"cmd": "publish", "service": service if raw else None}
    while flag := _FLAG.match(rest):
        raw, value, rest = _first_word(rest[flag.end():], "publish")
        if not raw:
            raise TextError(f"publish: {flag[1]} needs a value")
        req["client" if flag[1] == "--client" else "event"] = value
    data = rest.lstrip(" \t")
    if data[:1] in ("'", '"'):
        _, data, after = _first_word(data, "publish")
        if after.strip(" \t"):
            raise TextError("publish: text after the quoted DATA (quote all of it, or "
                            "start it with another character to send it as typed)")
    req["data"] = data
    return req


def _number(text):
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise TextError(f"not a number: {text!r}") from None


# -- answers ------------------------------------------------------------------------------

# Flags of an answer that the text form shows as a note rather than as key=value.
NOTES = {"no_such_client": "no such client now"}


def render(answer):
    """An answer as one line for a person: `ok key=value ...` or `error: ...`; control
    characters (a service's multi-line admin text, a CR in a typed path) escaped."""
    if not answer.get("ok"):
        return "error: " + _one_line(answer.get("error", "failed"))
    parts = ["ok"]
    for key, value in answer.items():
        if key == "ok" or key in NOTES:
            continue
        if isinstance(value, (list, dict)):
            value = json.dumps(value, separators=(",", ":"))
        elif value is None:
            value = "-"
        parts.append(f"{key}={value}")
    parts.extend(f"({note})" for key, note in NOTES.items() if answer.get(key) is True)
    return _one_line(" ".join(parts))


_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one_line(text):
    return _CONTROL_CHAR.sub(lambda m: _NAMED.get(m.group(), "\\x%02x" % ord(m.group())), text)
