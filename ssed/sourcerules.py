"""The config rules about a service's `source`: the names, the keys each built-in source
needs or uses, and the errors for a section that sets keys its source would ignore."""
import difflib

from . import values as V
from .sources import SOURCES

# Keys a built-in source reads (its class's `uses`); the other service keys apply to all.
SOURCE_KEYS = {name for cls in SOURCES.values() for name in cls.uses}


def source(text):
    """The `source` key's parser."""
    if text not in SOURCES:
        raise ValueError(f"expected {' | '.join(SOURCES)}, got {text!r}"
                         + V.did_you_mean(text, SOURCES))
    return text


def check_source(section, values, lines, error):
    """Keys the built-in source needs, and keys set that it would silently ignore."""
    source_ = values.get("source", "none")
    if "source" in lines and "source" not in values:
        # A bad source was reported with the one it is closest to: check the keys against
        # that one, so that their errors come in this pass too (no close one: no guess).
        text = next(text for name, text, _ in section.entries if name == "source")
        close = difflib.get_close_matches(text, list(SOURCES), n=1)
        if close:
            _unused_keys(close[0], values, lines, error)
        return
    _unused_keys(source_, values, lines, error)
    needs = SOURCES[source_].needs   # one of them, exactly
    given = [n for n in needs if values.get(n) not in (None, ())]
    where = lines.get("source", section.line)
    if needs and not given:
        error(where, f"source {source_!r} needs " + " or ".join(map(repr, needs)))
    elif len(given) > 1:
        error(where, f"source {source_!r} takes {given[0]!r} or {given[1]!r}, not both")


def _unused_keys(source_, values, lines, error):
    for name, line in lines.items():
        if (name in SOURCE_KEYS and name not in SOURCES[source_].uses
                and values.get(name) not in (None, ())):
            error(line, f"key {name!r} is not used by source {source_!r}")
