"""Serving restores a model's recorded environment, end to end on one local platform.

v1 (scikit-learn, in the serving image) is served at the start. v2 is a LightGBM model: LightGBM is
not in the serving image, so `promote` rehearses its environment (uv, from pypi.org), moves the
alias, rolls serving, which restores the same environment, and checks serving's answer to the
version's own input example; serving then answers as LightGBM predicted in the training process.
v3 records a requirement that cannot be installed: the rehearsal refuses it, the alias stays on
v2 and v2 keeps serving.
"""

from __future__ import annotations

import pytest

from tools.local.processes import http
from tools.local.testing import scratch_platform
from tools.ops.local import PlatformRoller, admin_runner, local_verifier
from tools.ops.promote import EXIT_REHEARSAL, RuntimeGranter, WouldNotServe, promote, registry_client

pytestmark = pytest.mark.slow

UNINSTALLABLE = "lightgbm==99.0.0"


@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-envs-") as platform:
        platform.start()
        yield platform


def promote_checked(platform, version: str, log: list):
    runner = admin_runner(platform)
    return promote(registry_client(platform.tracking_url, platform.admin_username, platform.admin_password),
                   RuntimeGranter(runner, platform.serving_username),
                   PlatformRoller(platform), model=platform.model_name, version=version, alias=platform.model_alias,
                   log=log.append, verifier=local_verifier(runner, platform.workdir, platform.serving_url))


def served(platform, example: dict) -> list:
    response = http("POST", f"{platform.serving_url}/invocations", json_body=example)
    assert response.status == 200, response.body[:300]
    return response.json()["predictions"]


@pytest.fixture(scope="module")
def lightgbm(platform):
    version = platform.train_model(flavor="lightgbm", move_alias=False)
    log: list[str] = []
    promote_checked(platform, version["version"], log)
    return version, log


def test_a_model_whose_flavor_is_not_in_the_image_is_served_with_its_recorded_environment(platform, lightgbm):
    version, log = lightgbm
    assert any("rehearsal of version" in line and "lightgbm==4.6.0" in line for line in log), log
    rows = {"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                            "petal width (cm)"],
                                "data": [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [4.7, 3.2, 1.3, 0.2],
                                         [4.6, 3.1, 1.5, 0.2], [5.0, 3.6, 1.4, 0.2]]}}  # iris' first 5 rows
    assert served(platform, rows) == version["example_predictions"]


def test_the_promotion_checked_serving_answers_the_versions_input_example(lightgbm):
    _, log = lightgbm
    assert any("its input example was answered with 5 predictions" in line for line in log), log


def test_serving_log_shows_the_environment_build(platform, lightgbm):
    text = (platform.logs_dir / "serving.log").read_text()
    assert "building the model's environment for lightgbm==4.6.0" in text
    assert "+ lightgbm==4.6.0" in text  # uv's progress, relayed to the pod log


def test_a_version_whose_environment_cannot_be_built_is_refused_and_the_old_one_keeps_serving(platform, lightgbm):
    served_before = lightgbm[0]
    broken = platform.train_model(move_alias=False, extra_requirements=(UNINSTALLABLE,))
    with pytest.raises(WouldNotServe, match=rf"version {broken['version']} would not serve: its environment cannot "
                                            rf"be built: .*lightgbm==99.0.0.*nothing changed") as err:
        promote_checked(platform, broken["version"], [])
    assert err.value.exit_code == EXIT_REHEARSAL
    model = registry_client(platform.tracking_url, platform.admin_username, platform.admin_password
                            ).get_registered_model(platform.model_name)
    assert model.aliases[platform.model_alias] == served_before["version"]
    assert http("GET", f"{platform.serving_url}/ping").status == 200
