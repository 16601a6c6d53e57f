"""mlflow_fileenv (mlflow_image/): env vars from the Secret Manager files, then exec; fails closed."""

from __future__ import annotations

import subprocess
import sys

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_fileenv import FileEnvError, parse, resolve  # noqa: E402


def test_names_and_command_are_split_at_the_double_dash():
    assert parse(["A", "B", "--", "mlflow", "server", "--port", "5000"]) == (["A", "B"], ["mlflow", "server", "--port", "5000"])


@pytest.mark.parametrize("argv", [["A", "mlflow"], ["--", "mlflow"], ["A", "--"], ["bad-name", "--", "x"]])
def test_malformed_invocations_are_refused(argv):
    with pytest.raises(FileEnvError):
        parse(argv)


def test_each_name_is_read_from_its_file_without_the_trailing_newline(tmp_path):
    (tmp_path / "p").write_text("s3cret\n")
    env = resolve(["PASSWORD"], {"PASSWORD_FILE": str(tmp_path / "p"), "OTHER": "x"})
    assert env == {"PASSWORD": "s3cret", "OTHER": "x"}  # the _FILE variable is gone


def test_a_missing_or_empty_file_refuses_to_start_and_names_the_variable(tmp_path):
    with pytest.raises(FileEnvError, match="PASSWORD_FILE is not set"):
        resolve(["PASSWORD"], {})
    with pytest.raises(FileEnvError, match="PASSWORD_FILE=.*cannot read"):
        resolve(["PASSWORD"], {"PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("")
    with pytest.raises(FileEnvError, match="empty"):
        resolve(["PASSWORD"], {"PASSWORD_FILE": str(tmp_path / "empty")})


def test_the_command_replaces_the_wrapper_with_the_value_in_its_environment(tmp_path):
    (tmp_path / "p").write_text("s3cret\n")
    completed = subprocess.run(
        [sys.executable, "-m", "mlflow_fileenv", "PASSWORD", "--", sys.executable, "-c",
         "import os, sys; print(os.environ['PASSWORD'], 'PASSWORD_FILE' in os.environ); sys.exit(7)"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "mlflow_image", "PASSWORD_FILE": str(tmp_path / "p")},
        capture_output=True, text=True, timeout=60)
    assert (completed.returncode, completed.stdout) == (7, "s3cret False\n")


def test_a_refusal_exits_2_without_running_the_command(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "mlflow_fileenv", "PASSWORD", "--", "false"],
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "mlflow_image"},
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "PASSWORD_FILE is not set" in completed.stderr


def test_both_images_copy_the_wrapper():
    dockerfile = open("mlflow_image/Dockerfile").read()
    for target in ("AS tracking", "AS serving"):
        stage = dockerfile.split(target, 1)[1].split("\nFROM ", 1)[0]
        assert "COPY mlflow_fileenv /opt/mlflow-extras/mlflow_fileenv" in stage, target
