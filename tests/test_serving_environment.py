"""Restoring a model's recorded environment (mlflow_serving.environment): what the image already
satisfies, what is refused and why, the cache key, credentials for Artifact Registry (pure; the
builder with the real uv and package index runs in tests/test_model_envs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_serving.environment import (  # noqa: E402
    EnvironmentBuilder, EnvironmentSettings, RecordedEnvironment, environment_key, index_with_credentials,
    loaded_conflicts, missing_requirements, pinned, python_refusal,
)
from mlflow_serving.loader import ModelLoader  # noqa: E402

IMAGE = {"numpy": "2.4.6", "scikit-learn": "1.9.1", "pandas": "2.3.3", "mlflow": "3.17.2"}
LINUX = {"sys_platform": "linux", "python_version": "3.11", "platform_system": "Linux", "os_name": "posix",
         "platform_machine": "x86_64", "python_full_version": "3.11.7", "implementation_name": "cpython",
         "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
         "implementation_version": "3.11.7", "extra": ""}


def test_an_sklearn_model_logged_on_the_image_needs_nothing_installed():
    lines = ["mlflow==3.17.2", "numpy==2.4.6", "scikit-learn==1.9.1", "pandas<3"]
    assert missing_requirements(lines, IMAGE, LINUX) == ()


def test_a_package_absent_from_the_image_or_in_another_version_must_be_installed():
    lines = ["lightgbm==4.6.0", "scikit-learn==1.8.0", "numpy==2.4.6"]
    assert missing_requirements(lines, IMAGE, LINUX) == ("lightgbm==4.6.0", "scikit-learn==1.8.0")


def test_the_models_mlflow_pin_does_not_replace_the_serving_runtime():
    assert missing_requirements(["mlflow==3.1.0", "mlflow-skinny==3.1.0"], IMAGE, LINUX) == ()


def test_requirements_for_another_platform_are_skipped():
    assert missing_requirements(["pywin32==306; sys_platform == 'win32'"], IMAGE, LINUX) == ()


def test_urls_paths_and_extras_go_to_uv_as_they_are():
    lines = ["./code/mylib-1.0-py3-none-any.whl", "pandas[parquet]==2.3.3", "pkg @ https://example.com/pkg.whl"]
    assert missing_requirements(lines, IMAGE, LINUX) == tuple(lines)


def test_the_recorded_python_minor_version_must_be_the_images():
    assert python_refusal("3.11.2", (3, 11)) is None
    assert python_refusal(None, (3, 11)) is None
    assert python_refusal("3.12.1", (3, 11)) == ("the model was logged with Python 3.12.1; the serving image runs "
                                                 "Python 3.11: log it under Python 3.11")


def test_a_model_for_another_python_is_refused_before_anything_is_installed(tmp_path):
    (tmp_path / "python_env.yaml").write_text("python: 3.9.18\ndependencies:\n- -r requirements.txt\n")
    (tmp_path / "requirements.txt").write_text("lightgbm==4.6.0\n")
    builder = EnvironmentBuilder(EnvironmentSettings(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="logged with Python 3.9.18; the serving image runs Python 3.11"):
        builder.restore(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_recorded_requirements_drop_comments_and_blanks(tmp_path):
    (tmp_path / "requirements.txt").write_text("# from mlflow\nmlflow==3.17.2\n\nlightgbm==4.6.0  # flavor\n")
    recorded = RecordedEnvironment.read(tmp_path)
    assert recorded == RecordedEnvironment(None, ("mlflow==3.17.2", "lightgbm==4.6.0"))


def test_an_image_satisfied_model_is_restored_without_a_build(tmp_path):
    (tmp_path / "requirements.txt").write_text("mlflow\n")
    restored = EnvironmentBuilder(EnvironmentSettings(tmp_path / "cache")).restore(tmp_path)
    assert restored.overlay is None and "the image satisfies the model's 1 recorded requirements" in restored.summary
    assert not (tmp_path / "cache").exists()


def test_the_cache_key_changes_with_the_requirements_or_the_image_only():
    key = environment_key(["lightgbm==4.6.0"], IMAGE)
    assert key == environment_key(["lightgbm==4.6.0"], dict(IMAGE))
    assert key != environment_key(["lightgbm==4.5.0"], IMAGE)
    assert key != environment_key(["lightgbm==4.6.0"], {**IMAGE, "numpy": "2.4.5"})


def test_resolved_pins_are_read_by_canonical_name():
    assert pinned(["LightGBM==4.6.0", "scipy==1.17.1  # via lightgbm", "-e ."]) == {"lightgbm": "4.6.0",
                                                                                     "scipy": "1.17.1"}


def test_replacing_a_package_the_serving_process_already_imported_is_a_conflict():
    from importlib.metadata import version

    installed = {"pyyaml": version("pyyaml"), "pydantic": version("pydantic")}
    conflicts = loaded_conflicts({"pyyaml": "5.1", "pydantic": "1.0", "lightgbm": "4.6.0"}, installed,
                                 ["yaml.loader", "json"])
    assert conflicts == [f"pyyaml==5.1 (the serving process runs pyyaml {version('pyyaml')})"]


def test_artifact_registry_gets_an_access_token_other_indexes_nothing():
    url = index_with_credentials("https://us-central1-python.pkg.dev/p/mlflow-pypi/simple/", lambda: "ya29.tok/en")
    assert url == "https://oauth2accesstoken:ya29.tok%2Fen@us-central1-python.pkg.dev/p/mlflow-pypi/simple/"
    assert index_with_credentials("https://pypi.org/simple/", lambda: pytest.fail("no token for pypi")) == \
        "https://pypi.org/simple/"


def test_an_environment_that_cannot_be_built_leaves_the_pod_unready_with_the_reason():
    def prepare(path):
        raise RuntimeError("resolving the model's requirements failed: no version of lightgbm==99.0.0")

    loader = ModelLoader("models:/m@a", fetch=lambda uri: "/models/3", prepare=prepare,
                         build=lambda path: pytest.fail("a model without its environment is never loaded"))
    loader.run()
    body = loader.status.body()
    assert body["ready"] is False and body["state"] == "failed"
    assert body["reason"].startswith("the model's environment cannot be built (RuntimeError: resolving the model's "
                                     "requirements failed: no version of lightgbm==99.0.0)")
    assert loader.app is None


def test_the_status_says_the_environment_is_being_restored_while_it_is():
    seen = []
    loader = ModelLoader("models:/m@a", fetch=lambda uri: "/models/2",
                         prepare=lambda path: seen.append(loader.status.body()) or "built", build=lambda path: "app")
    loader.run()
    assert seen[0]["state"] == "building" and seen[0]["reason"] == "restoring the model's recorded environment"
    assert loader.status.state == "ready" and loader.app == "app"


def test_environment_settings_come_from_the_server_command(tmp_path):
    from mlflow_serving.app import environment_settings

    settings = environment_settings({"MLFLOW_SERVING_ENV_CACHE": str(tmp_path), "MLFLOW_SERVING_ENV_TIMEOUT": "60",
                                     "MLFLOW_SERVING_PACKAGE_INDEX": ""})
    assert settings == EnvironmentSettings(Path(tmp_path), 60.0, None)
