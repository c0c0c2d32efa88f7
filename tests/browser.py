"""A small stdlib harness that drives headless Chromium for the browser tests.

`Browser` starts Chromium in its own process group with `--remote-debugging-pipe` (the
DevTools protocol as NUL-separated JSON on file descriptors 3 and 4: no websocket, no port)
and a fresh profile directory; `close()` (and a finalizer) ends it by its process group id.
`Tab` is one page: `goto(url)`, `evaluate(js)`, `wait(js_condition)` (the condition is
checked in the page, bounded by a timeout there and here), `screenshot(path)`, and
`report()`: the page calls `ssedReport(JSON.stringify(x))` (a DevTools binding) and the test
takes each `x` from a queue, in the order the page sent them, with a bounded wait.
`PageServer` serves test pages from another origin than the daemon's (stdlib `http.server`
on 127.0.0.1:0 in a thread).

Every wait is bounded; nothing sleeps to synchronise.
"""
import base64
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref

import pytest

TIMEOUT = 10.0
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--remote-debugging-pipe")
BINDING = "ssedReport"
_TRAMPOLINE = """if True:
    import fcntl, os, sys
    high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
    for fd in sys.argv[1:3]:
        os.close(int(fd))
    os.dup2(high[0], 3)
    os.dup2(high[1], 4)
    os.close(high[0])
    os.close(high[1])
    os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_path():
    """The Chromium to drive ($SSED_CHROMIUM, else `chromium` on PATH, else Debian's), or None."""
    for candidate in (os.environ.get("SSED_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_chromium():
    """Chromium's path; in CI a missing Chromium fails the test loudly, elsewhere it skips."""
    path = chromium_path()
    if path is None:
        why = ("Chromium is not installed (Debian package `chromium`; .ci/run installs it), "
               "so the browser tests cannot run")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


class BrowserError(Exception):
    """A DevTools command failed, the browser went away, or a wait ran out."""


class Browser:
    def __init__(self, path, timeout=TIMEOUT, env=None):
        """`env`: more environment (tests/test_tls.py: a HOME whose NSS database trusts
        the test CA)."""
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ssed-chromium-")
        self.stderr = open(os.path.join(self.profile, "stderr.log"), "wb")
        to_child, self._out = os.pipe()     # we write commands, Chromium reads fd 3
        self._in, from_child = os.pipe()    # Chromium writes fd 4, we read
        # A small Python trampoline puts the pipe ends at 3 and 4 (whatever numbers they have
        # here), then becomes Chromium, whose wrapper script execs the real binary.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_child), str(from_child), path, *FLAGS,
             f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            pass_fds=(to_child, from_child), start_new_session=True,
            env={**os.environ, **(env or {})})
        os.close(to_child)
        os.close(from_child)
        self._finalizer = weakref.finalize(self, _kill, self.proc, self.profile, self.stderr,
                                           self._out, self._in)
        self._lock = threading.Lock()
        self._next_id = 0
        self._waiting = {}          # command id -> Queue for its answer
        self._sessions = {}         # session id -> Tab
        self.dead = None            # why the pipe ended, once it has
        threading.Thread(target=self._read, daemon=True).start()
        self.version = self.send("Browser.getVersion")["product"]

    # -- the protocol ---------------------------------------------------------------------

    def send(self, method, params=None, session=None, timeout=None):
        """One DevTools command; its result, or BrowserError."""
        answer = queue.Queue(1)
        with self._lock:
            if self.dead:
                raise BrowserError(f"{method}: browser gone ({self.dead}); {self.log_tail()}")
            self._next_id += 1
            msg = {"id": self._next_id, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            self._waiting[self._next_id] = answer
            data = json.dumps(msg).encode() + b"\0"
            try:
                while data:
                    data = data[os.write(self._out, data):]
            except OSError as exc:
                raise BrowserError(f"{method}: cannot write to the browser: {exc}") from None
        try:
            reply = answer.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer in {timeout or self.timeout} s") from None
        finally:
            self._waiting.pop(msg["id"], None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')} "
                               f"{reply['error'].get('data', '')}".rstrip())
        return reply.get("result", {})

    def _read(self):
        buf = b""
        try:
            while True:
                data = os.read(self._in, 1 << 20)
                if not data:
                    break
                buf += data
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))
        except OSError as exc:
            self.dead = f"read error {exc}"
        with self._lock:
            self.dead = self.dead or "the DevTools pipe closed"
            for waiter in list(self._waiting.values()):
                waiter.put({"error": {"message": self.dead}})
        for tab in list(self._sessions.values()):
            tab.events.put(None)
            tab.reports.put(None)

    def _dispatch(self, msg):
        if "id" in msg:
            waiter = self._waiting.get(msg["id"])
            if waiter is not None:
                waiter.put(msg)
            return
        tab = self._sessions.get(msg.get("sessionId"))
        if tab is not None:
            tab.on_event(msg["method"], msg.get("params", {}))

    # -- tabs and the end ---------------------------------------------------------------

    def tab(self, width=1200, height=900):
        return Tab(self, width, height)

    def log_tail(self, n=2000):
        try:
            with open(os.path.join(self.profile, "stderr.log"), "rb") as f:
                return "chromium stderr: " + f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None and not self.dead:
            try:
                self.send("Browser.close", timeout=3)
            except BrowserError:
                pass
        self._finalizer()


def _kill(proc, profile, stderr, *fds):
    """End Chromium by its process group (renderers, zygote and all), then clean up."""
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    stderr.close()
    shutil.rmtree(profile, ignore_errors=True)


class Tab:
    """One page target, attached with a flat session."""

    def __init__(self, browser, width, height):
        self.browser = browser
        self.events = queue.Queue()     # (method, params) of page and runtime events
        self.reports = queue.Queue()    # what the page passed to ssedReport, decoded
        self.console = []               # console messages and uncaught exceptions, as text
        self.target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget",
                                    {"targetId": self.target, "flatten": True})["sessionId"]
        browser._sessions[self.session] = self
        for method in ("Page.enable", "Runtime.enable"):
            self.send(method)
        self.send("Runtime.addBinding", {"name": BINDING})
        self.resize(width, height)

    def send(self, method, params=None, timeout=None):
        return self.browser.send(method, params, self.session, timeout)

    def on_event(self, method, params):
        if method == "Runtime.bindingCalled" and params.get("name") == BINDING:
            self.reports.put(json.loads(params["payload"]))
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                         for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console.append("uncaught: " + details.get("exception", {}).get(
                "description", details.get("text", "")))
        self.events.put((method, params))

    def resize(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def goto(self, url, timeout=TIMEOUT):
        """Navigate and wait (bounded) for the load event."""
        while not self.events.empty():
            self.events.get_nowait()
        answer = self.send("Page.navigate", {"url": url}, timeout)
        if answer.get("errorText"):
            raise BrowserError(f"navigating to {url}: {answer['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def wait_event(self, method, timeout=TIMEOUT):
        deadline = _deadline(timeout)
        while True:
            try:
                item = self.events.get(timeout=_left(deadline, f"no {method}"))
            except queue.Empty:
                continue
            if item is None:
                raise BrowserError(f"browser gone while waiting for {method}")
            if item[0] == method:
                return item[1]

    def evaluate(self, expression, timeout=TIMEOUT):
        """The value of a JS expression (promises awaited), or BrowserError with the JS error."""
        answer = self.send("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True,
                            "awaitPromise": True}, timeout)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error: {text}\nin: {expression[:300]}")
        return answer["result"].get("value")

    def wait(self, condition, timeout=TIMEOUT, what=None):
        """Until the JS expression `condition` is truthy in the page (checked there every
        25 ms, up to `timeout`); its value. On timeout, BrowserError naming `what`."""
        ms = int(timeout * 1000)
        js = ("new Promise((resolve, reject) => { const end = Date.now() + %d;"
              " (function check() { let v; try { v = (%s); } catch (e) { v = undefined; }"
              " if (v) resolve(v); else if (Date.now() > end) reject(new Error('timed out'));"
              " else setTimeout(check, 25); })(); })" % (ms, condition))
        try:
            return self.evaluate(js, timeout + 5)
        except BrowserError as exc:
            raise BrowserError(f"waiting {timeout} s for {what or condition}: {exc}; "
                               f"console: {self.console[-10:]}") from None

    def report(self, timeout=TIMEOUT):
        """The next thing the page reported (bounded wait)."""
        try:
            item = self.reports.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"the page reported nothing in {timeout} s; "
                               f"console: {self.console[-10:]}") from None
        if item is None:
            raise BrowserError("browser gone")
        return item

    def reports_until(self, done, timeout=TIMEOUT):
        """Reports until `done(all_so_far)` is true; the list."""
        deadline = _deadline(timeout)
        got = []
        while not done(got):
            try:
                got.append(self.report(_left(deadline, f"reports so far: {got}")))
            except BrowserError as exc:
                raise BrowserError(f"{exc}; reports so far: {got}") from None
        return got

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        self.browser._sessions.pop(self.session, None)
        if not self.browser.dead:
            try:
                self.browser.send("Target.closeTarget", {"targetId": self.target}, timeout=5)
            except BrowserError:
                pass


def _deadline(timeout):
    return time.monotonic() + timeout


def _left(deadline, what):
    left = deadline - time.monotonic()
    if left <= 0:
        raise BrowserError(f"timed out: {what}")
    return left


class PageServer:
    """Test pages on their own origin: `pages` maps a path to HTML text."""

    def __init__(self, pages):
        served = dict(pages)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = served.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return self.origin + path

    def close(self):
        self.server.shutdown()
        self.server.server_close()
