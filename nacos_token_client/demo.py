"""``nacos-token demo``: the whole token lifecycle against the embedded mock server, as a readable timeline.

It uses an 8-second token and a 3-second idle freeze, so it finishes in about 12 seconds (``DEMO_SECONDS``, which
the CLI help and the README quote and a test checks against a real run): login, cached requests, the background
refresh past 90 %, ``invalidate()``, a server key rotation and an idle freeze, the last two survived with no failed
request. Its two waits show a countdown: one line redrawn in place on a terminal, a plain line a second otherwise.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .client import NacosTokenClient
from .events import TokenEvent
from .testing.server import MockNacosServer

__all__ = ["DEMO_SECONDS", "run_demo"]

TOKEN_LIFE = 8
IDLE_FREEZE = 3.0
DEMO_SECONDS = 12  # measured: 12.3 s on an idle machine (the refresh wait ~7 s, the idle wait 3.5 s, the rest < 2 s)
PLAIN_PROGRESS_EVERY = 1.0  # seconds between countdown lines when the output is not a terminal
LEGEND = ("a login's label says why it happened: [absent] no token yet, [advisory] background refresh past 90 %, "
          "[forced] invalidate(), [rejected] the server refused the token")


class _Timeline:
    """Prints what happens, stamped with seconds since the start; progress lines redraw in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.tty = out.isatty()
        self._lock = threading.Lock()
        self._progress = False
        self._last_plain = -PLAIN_PROGRESS_EVERY

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:5.1f}s]"

    def say(self, text: str) -> None:
        with self._lock:
            if self._progress and self.tty:
                self.out.write("\r\033[K")  # wipe the countdown line; the next say() or progress() redraws
            self._progress = False
            self.out.write(f"{self._stamp()} {text}\n")
            self.out.flush()

    def progress(self, text: str) -> None:
        """A countdown: redrawn in place on a terminal, a new plain line every second otherwise (logs, CI)."""
        with self._lock:
            if self.tty:
                self.out.write(f"\r\033[K{self._stamp()}    {text}")
            elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_EVERY:
                self._last_plain = time.monotonic()
                self.out.write(f"{self._stamp()}    ... {text}\n")
            else:
                return
            self._progress = True
            self.out.flush()

    def heading(self, text: str) -> None:
        self.say(f"== {text}")


def run_demo(out: TextIO = sys.stdout) -> int:
    """Run the walkthrough; returns 0 when every request succeeded."""
    timeline = _Timeline(out)
    server = MockNacosServer(token_ttl=TOKEN_LIFE, active_timeout=IDLE_FREEZE)
    url = server.start()
    refreshed = threading.Event()

    def on_event(event: TokenEvent) -> None:
        reason = event.reason.value if event.reason else "-"
        if event.kind == "login":
            where = "another process (store)" if event.outcome == "from_store" else "the server"
            note = " (the server handed back the same token)" if event.outcome == "same_token" else ""
            timeline.say(f"   login [{reason}] from {where}: token {event.fingerprint}{note}")
            if event.reason is not None and event.reason.value == "advisory":
                refreshed.set()
        elif event.kind == "rejection":
            timeline.say(f"   the server rejected token {event.fingerprint}: {event.error!r} ({event.outcome} problem)")
        elif event.kind == "replay":
            timeline.say(f"   request replayed once with the new token: {event.outcome}")
        elif event.kind == "invalidate":
            timeline.say(f"   invalidate(): token {event.fingerprint} {event.outcome}")
        elif event.kind == "failure":
            timeline.say(f"   login failed [{reason}]: {event.outcome}")

    failed = 0
    requests = 0
    timeline.say(f"embedded mock Nacos server on {url} (it issues {TOKEN_LIFE} s tokens and freezes one idle for "
                 f"{IDLE_FREEZE:.0f} s)")
    timeline.say(LEGEND)
    try:
        with NacosTokenClient(url, "nacos", "nacos", on_event=on_event) as client:

            def get() -> None:
                nonlocal failed, requests
                requests += 1
                try:
                    if client.get_config("demo.yaml") != "greeting: hello":
                        failed += 1
                except Exception as exc:
                    failed += 1
                    timeline.say(f"   request failed: {type(exc).__name__}: {exc}")

            timeline.heading("1. the first request logs in")
            client.publish_config("demo.yaml", "greeting: hello")
            info = client.token_info()
            assert info is not None
            timeline.say(f"   this token lives {info.lifetime:.1f} s from when its login was sent, not {TOKEN_LIFE} s: "
                         f"its exp is in whole seconds, counted from the start of the server's current second")
            timeline.say(f"   background refresh at {(info.refresh_at - info.issued_at) / info.lifetime:.0%} of its "
                         f"life, in {info.refresh_at - time.time():.1f} s; requests would wait only in the last "
                         f"{info.expires_at - info.mandatory_at:.2f} s")

            timeline.heading("2. the token is cached")
            for _ in range(20):
                get()
            timeline.say(f"   20 requests, {client.auth.stats.logins} login so far")

            timeline.heading("3. past 90 % of its life one background refresh starts; requests never wait")
            deadline = time.monotonic() + TOKEN_LIFE * 2
            while not refreshed.is_set() and time.monotonic() < deadline:
                left = info.refresh_at - time.time()
                timeline.progress(f"requesting every 0.25 s; background refresh due in {max(left, 0):.1f} s")
                get()
                # The advisory window (refresh_at .. mandatory_at) may be as short as 2 % of the token's life (0.14 s
                # here): when it is near, the next request goes just past refresh_at so that one lands inside it.
                left = info.refresh_at - time.time()
                time.sleep(left + 0.02 if 0 < left < 0.25 else 0.25)
            for _ in range(4):  # keep the idle timer alive and let a second pass: Nacos tokens are per second
                get()
                time.sleep(0.3)
            timeline.say(f"   {client.auth.stats.waits} requests waited for a login")

            timeline.heading("4. invalidate(): drop the cached token, the next request logs in")
            client.invalidate()
            get()

            timeline.heading("5. the server rotates its signing key: every issued token is dead")
            time.sleep(0.2)
            server.rotate_secret()
            for _ in range(5):
                get()
            timeline.say(f"   5 requests after the rotation, {failed} failed")

            timeline.heading(f"6. the token idles for more than {IDLE_FREEZE:.0f} s and is frozen (Sa-Token style)")
            idle_until = time.monotonic() + IDLE_FREEZE + 0.5
            while time.monotonic() < idle_until:
                timeline.progress(f"idle; the next request in {max(idle_until - time.monotonic(), 0):.1f} s")
                time.sleep(0.1)
            get()

            stats = client.auth.stats
            timeline.heading("done")
            timeline.say(f"   {requests} requests, {failed} failed; {stats.logins} logins, {stats.replays} replays, "
                         f"{stats.waits} waits; server saw {sum(server.stats.rejections.values())} rejections: "
                         f"{', '.join(sorted(server.stats.rejections)) or 'none'}")
    finally:
        server.stop()
    return 0 if failed == 0 else 1
