from __future__ import annotations

import subprocess
import sys
import warnings

import click
from click.testing import CliRunner

from petctiqa.errors import DatasetError, PetctiqaWarning
from petctiqa_cli._common import echo_warnings, flag, in_cli_words
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


def test_build_dataset_protocol_errors_list_dataset_protocols_only(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    result = runner.invoke(cli, ["build-dataset", "--out", str(out), "--protocol", "nope"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: unknown dataset protocol 'nope': not a file, and not a shipped dataset protocol "
        "(pet-ct-iqa-ds, pet-ct-iqa-ds-continuous, pet-ct-iqa-ds-shot, pet-ct-lowdose)\n"
    )
    result = runner.invoke(cli, ["build-dataset", "--out", str(out), "--protocol", "likert-0-4"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: likert-0-4 is a rating-scale protocol, not a dataset protocol (dataset "
        "protocols: pet-ct-iqa-ds, pet-ct-iqa-ds-continuous, pet-ct-iqa-ds-shot, pet-ct-lowdose)\n"
    )
    assert not out.exists()  # nothing was started


def test_library_settings_are_worded_as_their_flags():
    assert flag("allow_simulated") == "--allow-simulated" and flag("folds") == "--folds"
    assert flag("model_name") == "--model"  # the one setting whose flag differs
    error = DatasetError("folds 9: need 2 <= folds <= number of patients (4)", setting="folds")
    assert in_cli_words(error) == (
        "folds 9: need 2 <= folds <= number of patients (4) (option --folds)"
    )
    assert in_cli_words(DatasetError("a.csv: no rated images found")) == (
        "a.csv: no rated images found"
    )

    @click.command()
    def warns() -> None:
        with echo_warnings():
            warning = PetctiqaWarning("ds: SIMULATED ratings", setting="allow_simulated")
            warnings.warn(warning, stacklevel=1)
            warnings.warn("plain library warning", UserWarning, stacklevel=1)

    result = CliRunner().invoke(warns, [])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: ds: SIMULATED ratings (option --allow-simulated)\n"
        "warning: plain library warning\n"
    )
