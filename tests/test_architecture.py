"""Repo-wide architecture rules (DESIGN.md sections 1, 4 and 6; STYLE.md 4b-4c and convention 12).

- the import-linter contracts in pyproject.toml hold (``lint-imports``);
- the compute spine never imports ``torch.distributed`` (import-linter cannot forbid a subpackage of torch);
- ``[tool.importlinter] root_packages`` names exactly the packaged planes, so no plane escapes the contracts;
- every plane imports from this checkout, not from a PyPI distribution of the same name;
- every plane has a README.md and an ``__all__``;
- ``torch.load`` is only called with ``weights_only=True``;
- no module outside tests/ is over the 400-line budget;
- .ci/run runs the README's test command verbatim.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from setuptools import find_packages

from tools import planes

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
FIND = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
PACKAGES: list[str] = find_packages(str(ROOT / FIND["where"][0]), exclude=FIND["exclude"])
PLANES = planes.PLANES
SPINE = planes.SPINE
MAX_MODULE_LINES = 400
SKIP_DIRS = {"build", "dist", "__pycache__", "node_modules"}  # plus every dot-folder (.venv, .git, .nox, ...)


def python_files(*tops: str) -> Iterator[Path]:
    """Every .py file under the given top-level folders (default: the whole repo), skipping envs and builds."""
    roots = [ROOT / top for top in tops] if tops else [ROOT]
    for root in roots:
        if root.is_file():
            yield root
            continue
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(ROOT).parts[:-1]
            if any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
                continue
            yield path


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ------------------------------------------------------------------------------------------- import-linter


def lint_imports_command() -> list[str]:
    script = Path(sys.executable).parent / "lint-imports"
    if script.exists():
        return [str(script), "--no-cache"]
    assert importlib.util.find_spec("importlinter") is not None, "import-linter is missing: pip install -e '.[dev]'"
    return [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()", "--no-cache"]


def test_import_linter_contracts_hold() -> None:
    done = subprocess.run(lint_imports_command(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"lint-imports failed:\n{done.stdout}\n{done.stderr}"


# --------------------------------------------------------------------------------------- torch.distributed


def distributed_imports(tree: ast.Module) -> list[int]:
    """Line numbers that import ``torch.distributed`` in any spelling."""

    def is_dist(name: str) -> bool:
        return name == "torch.distributed" or name.startswith("torch.distributed.")

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(is_dist(alias.name) for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if is_dist(node.module) or (node.module == "torch" and any(a.name == "distributed" for a in node.names)):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "source",
    [
        "import torch.distributed",
        "import torch.distributed as dist",
        "import os, torch.distributed.fsdp",
        "from torch.distributed import init_process_group",
        "from torch.distributed.fsdp import fully_shard",
        "from torch import nn, distributed as dist",
        "def f():\n    import torch.distributed\n",
    ],
)
def test_distributed_check_catches(source: str) -> None:
    assert distributed_imports(ast.parse(source))


@pytest.mark.parametrize(
    "source", ["import torch", "from torch import nn", "import torch.distributions", "from . import distributed"]
)
def test_distributed_check_allows(source: str) -> None:
    assert not distributed_imports(ast.parse(source))


def test_spine_never_imports_torch_distributed() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in python_files(*(p for p in SPINE if (ROOT / p).is_dir()))
        for line in distributed_imports(parse(path))
    ]
    assert not offenders, (
        "the compute spine must stay single-device; parallelism is applied from outside (train). "
        f"torch.distributed imported at: {', '.join(offenders)}"
    )


# ---------------------------------------------------------------------------------------- planes, packaging


def test_the_generated_import_linter_section_is_current() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert planes.pyproject_with_section(text) == text, "stale import-linter section: run python tools/planes.py --write"
    assert PYPROJECT["tool"]["importlinter"]["root_packages"] == PLANES


def test_what_ships_is_exactly_the_listed_planes() -> None:
    shipped = sorted({name.split(".")[0] for name in PACKAGES})
    assert shipped == sorted(PLANES), (
        f"top-level packages {shipped} differ from the planes in tools/planes.py {sorted(PLANES)}: a new plane is "
        "listed there; anything else that is not a plane needs no __init__.py or an exclude in pyproject.toml"
    )


@pytest.mark.parametrize("plane", PLANES)
def test_plane_imports_from_this_checkout(plane: str) -> None:
    """Several plane names are also PyPI distributions (kernel, specs, tensor, ...); ours must win."""
    module = importlib.import_module(plane)
    assert module.__file__ is not None, f"{plane} resolved to a namespace package, not {ROOT / plane}"
    assert Path(module.__file__).resolve().is_relative_to(ROOT), f"{plane} was imported from {module.__file__}"
    missing = [name for name in getattr(module, "__all__", []) if not hasattr(module, name)]
    assert not missing, f"{plane}.__all__ names what {plane} does not define: {missing}"


def declares_all(tree: ast.Module) -> bool:
    """Whether a module assigns ``__all__`` at top level (plain or annotated)."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


@pytest.mark.parametrize("plane", PLANES)
def test_plane_has_readme_and_all(plane: str) -> None:
    init = ROOT / plane / "__init__.py"
    assert init.is_file(), f"{plane}/__init__.py is missing"
    assert (ROOT / plane / "README.md").is_file(), f"{plane}/README.md is missing"
    assert declares_all(parse(init)), f"{plane}/__init__.py has no __all__"


# ------------------------------------------------------------------------------------------------ torch.load


def unsafe_torch_loads(tree: ast.Module) -> list[int]:
    """Line numbers of ``torch.load(...)`` calls without a literal ``weights_only=True``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name):
            if func.value.id == "torch":
                safe = any(
                    kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                    for kw in node.keywords
                )
                if not safe:
                    lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    ("source", "unsafe"),
    [
        ("torch.load(f)", True),
        ("torch.load(f, weights_only=False)", True),
        ("torch.load(f, map_location='cpu', weights_only=flag)", True),
        ("torch.load(f, weights_only=True)", False),
        ("torch.load(f, map_location='cpu', weights_only=True, mmap=True)", False),
        ("yaml.load(f)", False),
    ],
)
def test_torch_load_check(source: str, unsafe: bool) -> None:
    assert bool(unsafe_torch_loads(ast.parse(source))) is unsafe


def test_torch_load_only_with_weights_only() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in python_files() for line in unsafe_torch_loads(parse(p))]
    assert not offenders, f"torch.load without weights_only=True (DESIGN section 4: no pickle) at: {offenders}"


# ------------------------------------------------------------------------------------------------ module size


def test_modules_stay_under_the_line_budget() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in python_files()
        if path.relative_to(ROOT).parts[0] != "tests"
    }
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them; data belongs in YAML): {over}"


# ---------------------------------------------------------------------------------------- README and CI


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Quickstart\n.*?^```(?:bash|sh|console)?\n(.*?)^```", readme, re.S | re.M)
    assert match, "README.md has no '## Quickstart' section with a code block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_readme_quickstart_is_two_commands() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, f"the Quickstart must be exactly two commands (install + example, tests): {commands}"
    example = re.search(r"python (\S+\.py)", commands[0])
    assert example and (ROOT / example.group(1)).is_file(), f"the Quickstart runs a missing script: {commands[0]}"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    install, test_command = quickstart_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines, f".ci/run must run the README's test command verbatim: {test_command!r}"
    for step in re.findall(r"pip install [^&]+", install):
        assert step.strip() in ci_lines, f".ci/run must install as the README does: {step.strip()!r}"
