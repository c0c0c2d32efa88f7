"""Channel templates, the pure parts (SPEC 10): which template makes the channel at a path
(ssed.templates.match), and the config of template sections."""
import pytest

from ssed import config as configmod
from ssed.templates import MAX_PATH, journal_file, match

T = {"/user/": "user", "/user/vip/": "vip", "/room/": "room", "/a/b/c/": "abc"}


@pytest.mark.parametrize("path, want", [
    ("/user/alice", "user"),
    ("/user/alice/inbox", "user"),              # one or more segments
    ("/user/vip/bob", "vip"),                   # the longest prefix wins
    ("/user/vip", "user"),                      # `vip` is a segment of /user/'s
    ("/user/vip/", None),                       # empty segment
    ("/room/42", "room"),
    ("/a/b/c/d", "abc"),
    ("/a/b/x", None),                           # no template's prefix
    ("/user", None),                            # the prefix without its rest
    ("/user/", None),                           # no segment
    ("/user//alice", None),                     # empty segment
    ("/user/alice/", None),                     # trailing empty segment
    ("/user/.", None), ("/user/..", None), ("/user/a/../b", None), ("/user/./b", None),
    ("/user/...", "user"),                      # only `.` and `..` are special
    ("/user/a.b_c~d:e@f!g$h'i(j)k+l,m;n=o-p", "user"),   # every allowed character
    ("/user/al%69ce", None),                    # `%`: not percent-decoded, not allowed
    ("/user/al ice", None), ("/user/a*b", None), ("/user/a?b", None), ("/user/a#b", None),
    ("/user/a\"b", None), ("/user/a<b", None), ("/user/a[b]", None), ("/user/a\\b", None),
    ("/user/ålice", None),                      # ASCII only
    ("/user/a\x00", None), ("/user/a\n", None),
    ("/other/alice", None),
    ("/", None), ("", None),
])
def test_match_table(path, want):
    assert match(T, path) == want


def test_a_whole_path_is_at_most_256_bytes():
    base = "/user/"
    assert match(T, base + "a" * (MAX_PATH - len(base))) == "user"
    assert match(T, base + "a" * (MAX_PATH - len(base) + 1)) is None
    assert MAX_PATH == 256


def test_no_templates_match_nothing_and_a_root_template_takes_every_good_path():
    assert match({}, "/user/alice") is None
    root = {"/": "root", "/user/": "user"}
    assert match(root, "/x") == "root"
    assert match(root, "/x/y") == "root"
    assert match(root, "/user/alice") == "user"
    assert match(root, "/") is None


def test_each_channel_gets_a_journal_file_of_its_own_name():
    assert journal_file("/user/alice") == "user%2Falice.journal"
    assert journal_file("/user/a%2Fb") == "user%2Fa%252Fb.journal"   # (a service's path)
    assert journal_file("/user/alice") != journal_file("/user/alice/x")
    assert journal_file("/chat") == "chat.journal"      # services' names as they were


# -- the config of templates ----------------------------------------------------------------

def parse(text, top=""):
    return configmod.parse(f"[ssed]\n{top}\n{text}", "t.ini", base_dir="/base")


def errors(text, top=""):
    with pytest.raises(configmod.ConfigError) as info:
        parse(text, top)
    return info.value.errors


def test_a_section_ending_in_slash_star_is_a_template_with_every_service_key():
    cfg = parse("[/chat]\n[/user/*]\nhistory = 7\nidle = 30\nmax_channels = 5\n"
                "token = sixteen-bytes-long\nsession_event = true\n")
    assert [s.path for s in cfg.services] == ["/chat"]
    [tpl] = cfg.templates
    assert (tpl.path, tpl.history, tpl.idle, tpl.max_channels, tpl.token, tpl.session_event) \
        == ("/user/*", 7, 30.0, 5, "sixteen-bytes-long", True)


def test_template_defaults():
    [tpl] = parse("[/user/*]\n").templates
    assert (tpl.idle, tpl.max_channels, tpl.source, tpl.journal) == (300.0, 10000, "none", None)


@pytest.mark.parametrize("text, message", [
    ("[/user/*]\nsource = time\n", "t.ini:4: a template takes no 'source'"),
    ("[/chat]\nidle = 5\n", "t.ini:4: key 'idle' belongs in a template section ([/path/*])"),
    ("[/chat]\nmax_channels = 5\n", "t.ini:4: key 'max_channels' belongs in a template"),
    ("[/user/*]\nidle = -1\n", "t.ini:4: idle:"),
    ("[/user/*]\nidle = soon\n", "t.ini:4: idle:"),
    ("[/user/*]\nmax_channels = 0\n", "t.ini:4: max_channels:"),
    ("[/user/*]\nbogus = 1\n", "t.ini:4: unknown key 'bogus'"),
    ("[/us er/*]\n", "t.ini:3: invalid service path '/us er'"),
    ("[/user//*]\n", "t.ini:3: invalid service path '/user/'"),
    ("[/user/../*]\n", "t.ini:3: invalid service path '/user/..'"),
    ("[/user/*/x/*]\n", "t.ini:3: invalid template path '/user/*/x/*'"),
    ("[/user/*]\n[/user/*]\n", "t.ini:4: duplicate section [/user/*]"),
])
def test_template_config_errors_name_file_and_line(text, message):
    found = errors(text)
    assert any(e.startswith(message) for e in found), found


def test_template_keys_in_ssed_are_refused():
    assert errors("[/chat]\n", top="idle = 5") == [
        "t.ini:2: key 'idle' belongs in a template section ([/path/*])"]


def test_a_template_with_a_class_passes_its_own_keys_to_the_plugin():
    [tpl] = parse("[/room/*]\nclass = mod:Room\ngreeting = hi\n").templates
    assert tpl.cls == "mod:Room" and dict(tpl.options) == {"greeting": "hi"}


def test_a_template_journal_is_a_directory_state_dir_by_default_off_for_none():
    assert parse("[/user/*]\n", top="state_dir = st").templates[0].journal == "/base/st"
    assert parse("[/user/*]\njournal = j\n", top="state_dir = st").templates[0].journal \
        == "/base/j"
    assert parse("[/user/*]\njournal = off\n", top="state_dir = st").templates[0].journal \
        is None


def test_a_config_of_templates_only_has_something_to_serve():
    assert configmod.has_services(parse("[/user/*]\n")) == []


def test_diff_adds_changes_and_removes_templates():
    old = parse("[/chat]\n[/user/*]\nidle = 5\n[/room/*]\n")
    new = parse("[/chat]\n[/user/*]\nidle = 6\n[/doc/*]\n")
    assert configmod.diff(old, new) == ["removed /room/*", "changed /user/*: idle",
                                        "added /doc/*"]


def test_a_journal_file_name_stays_under_name_max_and_one_paths_own():
    deep = "/user/" + "a/" * 124 + "b"            # 255 bytes: a good channel path
    other = "/user/" + "a/" * 124 + "c"
    assert match(T, deep) == "user"
    name = journal_file(deep)
    assert len(name.encode()) <= 255 and name.endswith(".journal")
    assert name != journal_file(other)
    assert name.startswith("user%2Fa%2Fa")
