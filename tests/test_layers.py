"""The layer rules of docs/architecture.md: the robot-side packages and ``edgeseg --help`` work without torch."""

from __future__ import annotations

import pytest
from helpers.blocked_imports import run_without


@pytest.mark.parametrize("module", ["edgeseg.runtime", "edgeseg.quant", "edgeseg.engine", "edgeseg.spec",
                                    "edgeseg.errors", "edgeseg.fileio", "edgeseg.images"])
def test_robot_side_imports_without_torch(module: str) -> None:
    result = run_without(f"import importlib; importlib.import_module({module!r}); print('ok')", {"torch"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr


def test_runtime_needs_no_onnx_package() -> None:
    result = run_without("import edgeseg.runtime; print('ok')", {"torch", "onnx", "onnxsim"})
    assert result.returncode == 0, result.stderr


def test_tensorrt_version_and_cache_format_owners_are_stdlib_only() -> None:
    # runtime.compat (on the robot), engine/ and quant/ all import these two top-level owners.
    result = run_without("import edgeseg.trt_version, edgeseg.trt_cache_format; print('ok')",
                         {"numpy", "torch", "onnx", "tensorrt"})
    assert result.returncode == 0, result.stderr
    result = run_without("import edgeseg.runtime.compat; print('ok')", {"torch", "onnx", "onnxsim", "tensorrt"})
    assert result.returncode == 0, result.stderr


def test_cli_help_imports_no_torch() -> None:
    result = run_without(
        """
        from click.testing import CliRunner
        from edgeseg.cli import main, COMMANDS
        runner = CliRunner()
        out = runner.invoke(main, ["--help"])
        assert out.exit_code == 0, out.output
        for name in COMMANDS:
            sub = runner.invoke(main, [name, "--help"])
            assert sub.exit_code == 0, (name, sub.output, sub.exception)
        assert "torch" not in sys.modules
        print('ok')
        """,
        {"torch"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr + result.stdout
