"""The README's generated tables match the code they document, and its examples work as
written against the demo config."""
import http.client
import os
import re
import shlex
import subprocess
import sys
from urllib.parse import urlsplit

from conftest import TIMEOUT, env
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
    conf = os.path.join(ROOT, "conf")
    body = (text[text.index("\n[/"):].replace("= messages.txt", f"= {conf}/messages.txt")
            .replace("demo-quotes.py", f"{conf}/demo-quotes.py"))
    return daemon(body)


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


def session_transcripts():
    """The console blocks of "A session": [(command, its output as text)] each."""
    text = open(README, encoding="utf-8").read()
    part = text[text.index("## A session\n"):text.index("\n## ", text.index("## A session\n") + 1)]
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", part, re.S):
        steps = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append([line[2:], []])
            elif not re.match(r"\[\d+\]", line):      # the shell's job notices
                steps[-1][1].append(line)
        blocks.append([(command, "\n".join(out) + "\n") for command, out in steps])
    return blocks


def same_form(text):
    """Text with every number as N: ids, times and dates differ from run to run."""
    return re.sub(r"\d+", "N", text)


def test_readme_session_transcripts_are_what_the_demo_really_prints(daemon, tmp_path):
    """"A session" as the demo config runs it: /time's stream opens with retry and the
    priming id; each publish prints its answer; the background subscriber's file holds
    exactly its stream; ssectl's clients and kick print what the README shows."""
    time_block, chat_block = session_transcripts()
    d = demo_daemon(daemon, tmp_path)
    (command, shown), = time_block
    assert command == "curl -N localhost:8080/time" and shown.endswith("^C\n")
    stream = d.stream("/time")
    stream.wait_events(2)
    blocks = bytes(stream.body).decode().split("\n\n")
    assert same_form("\n\n".join(blocks[:4]) + "\n\n") == same_form(shown[:-len("^C\n")])

    alice = None
    for command, shown in chat_block:
        argv = shlex.split(command, comments=True)
        if argv[0] == "curl":
            assert "/chat?client=alice" in command and "> alice.txt" in command
            alice = d.stream("/chat?client=alice")
            alice.wait_bytes(b"\nid: ")          # it is in the hot set: publishes reach it
        elif argv[0] == "cat":
            alice.wait_closed()
            assert same_form(bytes(alice.body).decode()) == same_form(shown)
        elif argv[:4] == ["python3", "-m", "ssed.ctl", "list"]:
            header, *rows = shown.splitlines()
            assert header.split() == ["PATH", "SOURCE", "CLIENTS", "LAST_ID"]
            assert [row.split()[:2] for row in rows] == [
                [sc.path, sc.source] for sc in config.load(DEMO).services]
        else:
            assert argv[:3] == ["python3", "-m", "ssed.ctl"], command
            args = argv[3:]
            if args[0] == "listen":         # /news: two of messages.txt's lines, 5 s apart
                messages = open(os.path.join(ROOT, "conf", "messages.txt")).read().splitlines()
                lines = [re.fullmatch(r"id=\d+-\d+ event=news data=(.*)", line)
                         for line in shown.splitlines()]
                assert len(lines) == 2 and all(m and m[1] in messages for m in lines), shown
                continue
            done = subprocess.run([sys.executable, "-m", "ssed.ctl", "-s", d.control, *args],
                                  env=env(), capture_output=True, text=True, timeout=TIMEOUT)
            assert done.returncode == 0, done
            assert same_form(done.stdout) == same_form(shown), command
    assert alice is not None and alice.body


def anchor(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_between_the_readmes_resolve():
    """The benchmark details moved to bench/README.md; the links each way name a file that
    exists and, where they name one, a heading it has."""
    checked = 0
    for doc in (README, os.path.join(ROOT, "bench", "README.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", open(doc, encoding="utf-8").read()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(doc), path))
            assert os.path.isfile(linked), (doc, target)
            if fragment:
                headings = re.findall(r"^#+ (.*)$", open(linked, encoding="utf-8").read(), re.M)
                assert fragment in [anchor(h) for h in headings], (doc, target)
            checked += 1
    assert checked >= 2
