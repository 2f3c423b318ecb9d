"""Every example and the demo run on a fresh install against the embedded mock server."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nacos_token_client.demo import DEMO_SECONDS, _Timeline

EXAMPLES = Path(__file__).parent.parent / "examples"
EXPECTED = {
    "quickstart.py": ["read back: greeting: hello", "100 more requests, still 1 login", "replays=1",
                      "logins so far: 3"],
    "async_quickstart.py": ["500 concurrent requests: 500 ok, 1 login",
                            "after a key rotation: 100 of 100 ok, 2 logins"],
    "invalidate.py": ["invalidate() dropped it", "(different: True)", "1 dropped it, 9 found it already gone"],
    "shared_store.py": ["4 processes share 1 token", "the server saw 1 login for all of them", "mode 0o600"],
    "watch_config.py": ["after a key rotation the change still arrived", "removal is a change too: content=None",
                        "sync watch saw 3 changes, none twice", "async iterator saw ['v1', 'v2', 'v3']"],
    "register_service.py": ["the server asks for a beat every 0.2 s", "unhealthy 0 times",
                            "discovered 10.0.0.7:8080 healthy=True metadata={'version': '1.4'}",
                            "deregistered: 0 instances left", "async: 1 instance of payments"],
    "web_app.py": ["{'published': True}", "GET /config/missing  -> 404", "{'error': 'authorization failed!'}",
                   "'replays': 1"],
}


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NACOS_")}
    return subprocess.run([sys.executable, "-W", "error::DeprecationWarning", *args], check=False,
                          capture_output=True, text=True, timeout=120, env=env, cwd=EXAMPLES.parent)


def _requirement_names(extra: str | None) -> set[str]:
    """Distribution names the installed package requires: the core (extra None) or one extra's."""
    names: set[str] = set()
    for spec in importlib.metadata.requires("nacos-token-client") or []:
        name, _, marker = spec.partition(";")
        wanted = f'extra == "{extra}"' in marker if extra else not marker.strip()
        if wanted:
            names.add(_normalise(re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0]))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules(path: Path) -> set[str]:
    """Top-level modules a script imports, lazily imported ones included."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_examples_extra_covers_every_import() -> None:
    """``pip install ".[examples]"`` is all an example needs beyond the standard library and the package."""
    covered = _requirement_names(None) | _requirement_names("examples")
    assert {"starlette", "uvicorn"} <= _requirement_names("examples")
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for path in sorted(EXAMPLES.glob("*.py")):
        for module in _imported_modules(path) - set(sys.stdlib_module_names) - {"__future__", "nacos_token_client"}:
            dists = {_normalise(d) for d in providers.get(module, [module])}
            if not dists & covered:
                missing[f"{path.name}: {module}"] = sorted(dists)
    assert not missing, f"imports not covered by the core dependencies or the examples extra: {missing}"


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str) -> None:
    result = run([str(EXAMPLES / name)])
    assert result.returncode == 0, result.stderr[-3000:]
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_demo() -> None:
    started = time.monotonic()
    result = run(["-m", "nacos_token_client", "demo"])
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for line in ("login [absent]", "login [advisory]", "0 requests waited for a login", "invalidate(): token",
                 "login [forced]", "'Invalid signature'", "'token frozen!'", "0 failed"):
        assert line in out, out
    assert "eyJ" not in out  # fingerprints only
    # The labels are explained before they are used.
    legend = out.index("[advisory] background refresh")
    assert legend < out.index("login [absent]") and "[forced] invalidate()" in out and "[rejected]" in out
    # The token life printed is the one the token has, and the 8 s the server was told is explained.
    life = re.search(r"this token lives (\d+\.\d) s from when its login was sent, not 8 s: its exp is in whole", out)
    assert life and 7.0 <= float(life.group(1)) <= 8.0, out
    # Not a terminal: the two waits print a plain countdown line about every second, each on its own line.
    refresh = re.findall(r"\.\.\. requesting every 0.25 s; background refresh due in (\d+\.\d) s\n", out)
    idle = re.findall(r"\.\.\. idle; the next request in (\d+\.\d) s\n", out)
    assert len(refresh) >= 5 and [float(x) for x in refresh] == sorted((float(x) for x in refresh), reverse=True)
    assert len(idle) >= 3 and "\r" not in out and "\033" not in out
    # It takes what the help, the README and scripts/demo.sh say.
    assert DEMO_SECONDS - 2 <= took <= DEMO_SECONDS + 8, took
    root = EXAMPLES.parent
    assert f"about {DEMO_SECONDS} seconds" in (root / "README.md").read_text()
    assert f"about {DEMO_SECONDS} seconds" in (root / "scripts" / "demo.sh").read_text()
    help_text = run(["-m", "nacos_token_client", "--help"]).stdout
    assert f"(about {DEMO_SECONDS} s)" in help_text


def test_demo_countdown_redraws_one_line_on_a_terminal() -> None:
    """On a TTY each countdown is one line redrawn in place (carriage return + erase), replaced by the next event."""
    out = io.StringIO()
    out.isatty = lambda: True  # type: ignore[method-assign]
    timeline = _Timeline(out)
    for left in (3, 2, 1):
        timeline.progress(f"due in {left} s")
    timeline.say("done")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r\033[K") == 4 and text.endswith("] done\n")
    assert "due in 1 s" in text
