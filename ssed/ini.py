"""The INI line reader under the config: text to sections of (key, value, line) entries.

`configparser` keeps no line numbers, so this is our own. It knows the shape of the file only
(sections, `key = value`, comments, continuation lines), not what any key means: config.py
judges the entries, and `ssectl` reads its control socket's path with the same rules
(`read_sections` with an `error` that ignores what it is told). Pure.
"""
import re
from dataclasses import dataclass

# A comment starts a line or follows whitespace, so `a=b#c` keeps its `#` (URLs, colours).
_COMMENT = re.compile(r"(?:^|\s)[;#].*")


@dataclass
class Section:
    name: str | None  # None for a broken header: its keys are skipped, not misfiled
    line: int
    entries: list  # [key, value, line]; the value grows with continuation lines


def read_sections(text, error):
    """The sections of `text`, in file order; `error(line, message)` is told of each line
    that is not of the INI form, and reading goes on."""
    sections, current, last = [], None, None
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        if "\0" in raw:
            error(number, "NUL character")
            last = None
            continue
        line = _COMMENT.sub("", raw, count=1).strip()
        if not line:
            continue  # blank and comment lines do not end a multi-line value
        if raw[0].isspace():
            if last is None:
                error(number, "indented line, but no key before it to continue")
            else:
                last[1] += "\n" + line
            continue
        last = None
        key, equals, value = line.partition("=")
        if line.startswith("["):
            current = Section(line[1:-1].strip() if line.endswith("]") else None, number, [])
            if current.name is None:
                error(number, f"section header without a closing ]: {line!r}")
            sections.append(current)
        elif not equals or not key.strip():
            error(number, f"expected [section] or key = value, got {_shown(line)!r}")
        elif current is None:
            error(number, f"key {key.strip()!r} before any [section]")
        else:
            last = [key.strip(), value.strip(), number]
            current.entries.append(last)
    return sections


_SECRET_KEYS = ("token", "publish_token", "redis")    # redis: its URL may hold a password


def _shown(line):
    """A line quoted in an error, less what follows a token key (`token: T`, `token T`)."""
    word = re.match(r"[\w-]*", line).group()
    return f"{line[:len(word)]} ... (value not shown)" if word in _SECRET_KEYS else line
