"""Imports stay at module top; an import inside a function says why in a ``# lazy:`` comment.

A function-level import hides a dependency, so each one left in the areas below carries a
one-line reason (start-up time, an optional module, an import cycle) on its own line or on a
comment line right above its run of imports (docs/architecture.md, "Imports").
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = (
    "cli",
    "petctiqa/dataset",
    "petctiqa/dicom",
    "petctiqa/distortions",
    "petctiqa/fetch",
    "petctiqa/iqa",
    "petctiqa/models",
    "petctiqa/msiqa",
    "petctiqa/ratings",
    "petctiqa/scoring",
    "petctiqa/distort.py",
    "petctiqa/noise_kernel.py",
    "petctiqa/png.py",
    "petctiqa/pool.py",
    "petctiqa/protocol*.py",
    "petctiqa/render.py",
    "petctiqa/tcia_client.py",
    "petctiqa/terminal.py",
    "petctiqa/phantom*.py",
)
NOT_CHECKED: set[str] = set()  # files left out while other work is in progress
MARK = "# lazy:"


def checked_files() -> list[Path]:
    files: set[Path] = set()
    for entry in CHECKED:
        path = ROOT / entry
        if path.is_dir():
            files.update(path.rglob("*.py"))
        else:
            files.update(ROOT.glob(entry))
    return sorted(f for f in files if f.relative_to(ROOT).as_posix() not in NOT_CHECKED)


def unexplained_imports(source: str) -> list[int]:
    """Line numbers of imports inside functions with no ``# lazy:`` reason."""
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for block in _statement_lists(function):
            for run in _import_runs(block):
                found += [n.lineno for n in run if not _explained(lines, run[0], n)]
    return sorted(set(found))


def _statement_lists(function: ast.AST):
    for node in ast.walk(function):
        for name in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _import_runs(block: list[ast.stmt]) -> list[list[ast.stmt]]:
    runs: list[list[ast.stmt]] = []
    for before, node in zip([None, *block], block, strict=False):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(before, ast.Import | ast.ImportFrom):
                runs[-1].append(node)
            else:
                runs.append([node])
    return runs


def _explained(lines: list[str], first: ast.stmt, node: ast.stmt) -> bool:
    """``# lazy:`` on the import's own lines, or in the comment lines right above its run."""
    own = lines[node.lineno - 1 : node.end_lineno]
    if any(MARK in line for line in own):
        return True
    row = first.lineno - 2  # 0-based index of the line above the run
    while row >= 0 and lines[row].strip().startswith("#"):
        if lines[row].strip().startswith(MARK):
            return True
        row -= 1
    return False


def test_function_level_imports_say_why():
    problems = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in checked_files()
        for line in unexplained_imports(path.read_text())
    ]
    assert not problems, "imports inside functions without a '# lazy: <why>' comment: " + ", ".join(
        problems
    )


def test_the_checker_finds_an_unexplained_import_and_accepts_a_reason():
    source = (
        "def f():\n"
        "    import json\n"
        "    return json\n"
        "\n"
        "def g():\n"
        "    # lazy: slow\n"
        "    import scipy\n"
        "    from scipy import (\n"
        "        special,\n"
        "    )\n"
        "    return scipy, special\n"
        "\n"
        "def h():\n"
        "    x = 1  # lazy: not about the import below\n"
        "    import os\n"
        "    return os, x\n"
        "\n"
        "def k():\n"
        "    import numba  # lazy: optional\n"
        "    return numba\n"
    )
    assert unexplained_imports(source) == [2, 15]
    assert len(checked_files()) > 50


def test_distortion_plugins_stay_light_for_protocol_parsing():
    """The reason the plug-ins import SciPy, pydicom and the renderer lazily: loading a
    protocol imports every plug-in."""
    code = (
        "import sys, petctiqa.protocol, petctiqa.distortions; "
        "heavy = [m for m in ('scipy', 'pydicom', 'torch', 'numba', 'petctiqa.render') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_imports_no_heavy_library():
    """`petctiqa --help` imports every command module: their library imports stay lazy."""
    code = (
        "import sys; from click.testing import CliRunner; from petctiqa_cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('numpy', 'scipy', 'pandas', 'pydicom', 'torch', 'flask', "
        "'waitress', 'requests', 'PIL', 'cv2') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
