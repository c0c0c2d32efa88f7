"""log.py: token values redacted by shape; Throttle and Episode: repeated lines bounded,
failures logged once per episode."""
import io

from ssed.log import Episode, Logger, Throttle, redact


def recorder():
    lines = []
    return lines, lambda level, message: lines.append((level, message))


def test_throttle_logs_first_then_one_per_interval_with_the_count_held_back():
    lines, log = recorder()
    throttle = Throttle(log, every=60)
    sent = [throttle("hook", 100 + i, "error", "boom") for i in range(5)]
    assert sent == [True, False, False, False, False]
    assert throttle("hook", 161, "error", "boom")
    assert lines == [("error", "boom"),
                     ("error", "boom [4 more like this in the last 60 s were not logged]")]


def test_throttle_keys_are_independent():
    lines, log = recorder()
    throttle = Throttle(log, every=60)
    assert throttle(("/a", "on_connect"), 0, "error", "a")
    assert throttle(("/b", "on_connect"), 0, "error", "b")
    assert not throttle(("/a", "on_connect"), 1, "error", "a")
    assert [m for _, m in lines] == ["a", "b"]


def test_throttle_forgets_quiet_keys_past_its_bound():
    lines, log = recorder()
    throttle = Throttle(log, every=1)
    for i in range(Throttle.MAX_KEYS):
        throttle(i, 0, "info", "x")
    throttle("new", 5, "info", "x")      # every older key is quiet by now
    assert len(throttle.keys) == 1


def test_episode_logs_start_reminder_and_recovery_once_each():
    lines, log = recorder()
    episode = Episode(log, "/q: command", remind=10)
    episode.recovered(999)                  # nothing going on: nothing logged
    for i in range(5):
        episode.failed(1000 + i, "exit status 1")
    assert episode.failing and len(lines) == 1
    assert lines[0][1].startswith("/q: command failing: exit status 1")
    episode.failed(1011, "exit status 1")
    assert "still failing since" in lines[1][1] and "6 times" in lines[1][1]
    episode.recovered(1012)
    episode.recovered(1013)
    assert len(lines) == 3 and lines[2][0] == "info"
    assert "recovered after 6 failures" in lines[2][1]
    assert not episode.failing
    episode.failed(2000, "again")
    assert lines[3][1].startswith("/q: command failing: again")


def test_redact_hides_token_values_by_their_shape_and_nothing_else():
    cases = [
        ("/chat?access_token=s3cr3t&client=c1", "/chat?access_token=***&client=c1"),
        ("/?service=/a&ACCESS_TOKEN=x%20y", "/?service=/a&ACCESS_TOKEN=***"),
        ("('authorization', 'Bearer abc.def')", "('authorization', 'Bearer ***')"),
        ("SIGHUP: reloading", "SIGHUP: reloading"),
        ("token bearer", "token bearer"),           # no value after it: nothing to hide
    ]
    assert [redact(text) for text, _ in cases] == [want for _, want in cases]


def test_logger_redacts_and_escapes_but_leaves_other_words_alone():
    out = io.StringIO()
    log = Logger(out, journald=True)
    log("info", "SIGHUP: reloading")
    log("debug", "not shown at info")
    log("warning", "GET /a?access_token=t0k3n HTTP/1.1 \x1b[31m\nforged")
    assert out.getvalue() == ("<6>SIGHUP: reloading\n"
                              "<4>GET /a?access_token=*** HTTP/1.1 \\x1b[31m\\x0aforged\n")
