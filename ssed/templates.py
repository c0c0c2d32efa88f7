"""Channel templates (SPEC 10): which template, if any, makes the channel at a path. Pure.

A template `[/user/*]` is kept under its prefix `/user/` (the path less its `*`). A path
belongs to the template with the longest prefix it starts with, when the rest of it is one or
more segments of the allowed characters (no empty, `.` or `..` segment) and the whole path is
at most MAX_PATH bytes. Paths are taken as sent: `%` is not an allowed character, so a
percent-encoded path matches no template.
"""
import hashlib
import re

MAX_PATH = 256      # bytes in a channel's whole path
# RFC 3986 unreserved and sub-delims, ':' and '@': what a path segment may hold unencoded.
_REST = re.compile(r"[A-Za-z0-9._~:@!$'()+,;=/-]+\Z", re.ASCII)


def prefix_of(template_path):
    """`/user/*` -> `/user/` (the key a template is kept under)."""
    return template_path[:-1]


def is_template(section_path):
    return section_path.endswith("/*")


def rest_ok(rest):
    """Whether `rest` (the path after the template's prefix) names a channel."""
    if not _REST.match(rest):
        return False
    for segment in rest.split("/"):
        if segment in ("", ".", ".."):
            return False
    return True


def match(templates, path):
    """The template (a value of `templates`, keyed by prefix) that makes the channel at
    `path`, or None. Costs one dict lookup per `/` in the path, most specific first."""
    if not templates or len(path) > MAX_PATH:
        return None         # (every allowed character is one byte: len() is the size)
    end = len(path)
    while True:
        end = path.rfind("/", 0, end)
        if end < 0:
            return None
        template = templates.get(path[:end + 1])
        if template is not None:
            # A shorter prefix would have this rest in its own: no need to look further.
            return template if rest_ok(path[end + 1:]) else None


MAX_NAME = 200      # bytes of a journal's file name before its hash (NAME_MAX is 255)


def journal_file(path):
    """A service or channel path as a file name in `state_dir`: `/chat` -> `chat.journal`,
    `/user/alice` -> `user%2Falice.journal`. A name that would be too long for a file
    system (a 256-byte path of short segments, each `/` three bytes) is cut and ends in a
    hash of the whole path, so that it stays one path's own."""
    name = path.strip("/").replace("%", "%25").replace("/", "%2F") or "%2F"
    if len(name.encode()) > MAX_NAME:
        digest = hashlib.sha256(path.encode()).hexdigest()[:32]
        name = name.encode()[:MAX_NAME - 33].decode("utf-8", "ignore") + "~" + digest
    return name + ".journal"
