"""Nox sessions: the test suite on the other supported Pythons, and a release build in one command.

    nox -s tests      # the suite on CPython 3.10, 3.12 and 3.13 (3.11 is the main .venv that scripts/test.sh uses)
    nox -s release    # python -m build (sdist + wheel into dist/) and twine check dist/*

Interpreters are looked up on PATH and under pyenv (``~/.pyenv/versions/3.X.*``), never downloaded. A missing one
is reported and its session skipped; with ``CI=true`` a missing one fails the run, so CI cannot pass green while
testing fewer Pythons than it claims. scripts/test.sh runs both sessions.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

OTHER_PYTHONS = ("3.10", "3.12", "3.13")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
# On the other Pythons the official clients' tests are left out: they exercise third-party clients in their own
# processes (the Python one pinned to 2.0.11, the Node one on node), not this package on that Python, and they are
# the slowest of the suite. The main .venv (3.11) runs them.
OTHER_PYTHONS_PYTEST = ("-x", "-q", "-p", "no:cacheprovider", "-m", "not official")

nox.options.sessions = ["tests", "release"]
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = IN_CI
nox.options.reuse_venv = "yes"


def _pyenv_bin_dirs(versions: tuple[str, ...]) -> list[str]:
    """The newest pyenv build of each version (``~/.pyenv/versions/3.10.13/bin``), so nox finds ``python3.10``."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for version in versions:
        builds = sorted(root.glob(f"{version}.*/bin/python{version}"),
                        key=lambda p: [int(part) for part in p.parent.parent.name.split(".") if part.isdigit()])
        if builds:
            found.append(str(builds[-1].parent))
    return found


os.environ["PATH"] = os.pathsep.join([*_pyenv_bin_dirs(OTHER_PYTHONS), os.environ.get("PATH", "")])
MISSING = [v for v in OTHER_PYTHONS if shutil.which(f"python{v}") is None]
if MISSING:
    print(f"noxfile: no interpreter for Python {', '.join(MISSING)} (looked on PATH and under pyenv); "
          f"{'CI=true: this fails the run' if IN_CI else 'those sessions are skipped'}", file=sys.stderr)


@nox.session(python=list(OTHER_PYTHONS))
def tests(session: nox.Session) -> None:
    """The suite on one more Python: stop at the first failure, quiet, the official clients left out."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *OTHER_PYTHONS_PYTEST, *session.posargs)


@nox.session
def release(session: nox.Session) -> None:
    """Build the sdist and the wheel from a clean dist/ and check both with twine (upload: twine upload dist/*)."""
    shutil.rmtree("dist", ignore_errors=True)
    session.install("build>=1.2", "twine>=5")
    session.run("python", "-m", "build", "--outdir", "dist")
    built = sorted(str(p) for p in Path("dist").iterdir())
    if not any(p.endswith(".whl") for p in built) or not any(p.endswith(".tar.gz") for p in built):
        session.error(f"expected a wheel and an sdist in dist/, found {built}")
    session.run("python", "-m", "twine", "check", "--strict", *built)
