"""The README's generated tables match the code they document, and its examples work as
written against the demo config."""
import http.client
import os
import re
import shlex
import shutil
from urllib.parse import urlsplit

from ssed import config, control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DEMO = os.path.join(ROOT, "conf", "ssed.ini")


def section(name):
    text = open(README, encoding="utf-8").read()
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert m, f"README has no {name} section"
    return m.group(1)


def test_readme_starts_with_make_run_and_make_test():
    text = open(README, encoding="utf-8").read()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"],
                                                                        ["make", "test"]]


def test_readme_keys_table_is_the_generated_one():
    assert section("keys") == config.keys_markdown().strip()


def test_readme_lists_every_control_command():
    rows = section("commands").splitlines()[2:]
    documented = [re.match(r"\| `(\w+)", row).group(1) for row in rows]
    assert sorted(documented) == sorted(control.COMMANDS)


def demo_daemon(daemon, tmp_path):
    """A daemon on conf/ssed.ini's services (and the files they read), on a free port."""
    text = open(DEMO, encoding="utf-8").read()
    d = daemon(text[text.index("\n[/"):])
    for name in ("messages.txt", "demo-quotes.py"):
        shutil.copy(os.path.join(ROOT, "conf", name), d.dir)
    return d


def test_readme_http_post_example_works_on_the_demo_config(daemon, tmp_path):
    """The curl line of "Publishing over HTTP", sent as written (but to the test's port) to
    the demo /chat: its token is the demo's, and the answer has the form the README shows."""
    text = open(README, encoding="utf-8").read()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "-d '" in b)
    command, answer = block.replace("\\\n", " ").strip().split("\n")
    argv = shlex.split(command)
    assert argv[0] == "curl"
    headers = dict(h.split(": ", 1) for flag, h in zip(argv, argv[1:]) if flag == "-H")
    body = argv[argv.index("-d") + 1]
    url = urlsplit(argv[-1])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", 8080, "/chat")
    token = headers["Authorization"].removeprefix("Bearer ")
    demo = config.load(DEMO)
    [chat] = [sc for sc in demo.services if sc.path == "/chat"]
    assert chat.publish_token == token and len(token.encode()) >= 16
    d = demo_daemon(daemon, tmp_path)
    stream = d.stream("/chat?client=alice")
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.request("POST", url.path, body=body.encode(), headers=headers)
    response = conn.getresponse()
    got = response.read().decode()
    assert response.status == 200, got
    assert re.sub(r"\d+", "N", got.strip()) == re.sub(r"\d+", "N", answer.strip())
    [event] = [e for e in stream.wait_events(2) if e.type != "session"]
    assert (event.type, event.data) == ("greeting", "hello")
