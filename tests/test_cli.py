from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from petctiqa_cli.main import COMMANDS, cli


def test_every_command_resolves_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output and name in result.output


def test_top_level_help_lists_all_commands_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from petctiqa_cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); print(r.output); "
        "assert 'torch' not in sys.modules, 'petctiqa --help imported torch'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert name in out.stdout
