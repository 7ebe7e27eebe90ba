"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s perf``, ``nox -s example``.

Each session builds its own virtual environment under ``.nox/``. torch is pinned first, to the same 2.13.0
that ``.ci/run`` and the README install, so that ``pip install -e .`` finds ``torch>=2.6`` already met and
doesn't fetch another build.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))
from tools.planes import PLANES  # noqa: E402  (the one list of planes; tools/ is not an installed package)

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, run with the README's test command (extra arguments go to pytest)."""
    _install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, the import-linter contracts (generated from tools/planes.py, checked fresh first) and mypy."""
    _install(session)
    session.run("ruff", "check", ".")
    session.run("python", "tools/planes.py", "--check")
    session.run("lint-imports", "--no-cache")
    session.run("mypy", *PLANES, "tools", "lmplanes_lm_eval.py")


@nox.session
def perf(session: nox.Session) -> None:
    """pytest-benchmark microbenchmarks in ``benchmarks/``; kept out of the test suite. The attention grid
    writes ``benchmarks/out/attention-<device>.json`` and ``.png`` (TFLOP/s against T per kernel)."""
    _install(session, "dev,triton")
    session.run(
        "python",
        "-m",
        "pytest",
        "benchmarks",
        "--benchmark-only",
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        *session.posargs,
    )


@nox.session
def example(session: nox.Session) -> None:
    """The end-to-end example from the README's Quickstart."""
    _install(session)
    session.run("python", "examples/example.py", *session.posargs)
