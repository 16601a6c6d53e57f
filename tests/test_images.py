"""The MLflow images: built and pushed by the program, or prebuilt by digest; tagged so that every
rebuild of pulumi-docker-build pushes a new tag, and built from contexts that hold what they copy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from e2b_dockerfile_utils import PatternMatcher, parse_dockerfile_ast

from infra.images import ROOT, build_tag, context_files, context_hash, image_version
from tools.offline.stack import run_load_test_stack
from tests.helpers import container
from tools.local import images
from tools.local.images import ImageBuildError, ImageStore
from tools.offline.mocks import is_secret

IMAGE = "docker-build:index:Image"
BUILDS = [("mlflow_image", "tracking"), ("mlflow_image", "serving"), ("loadtest", "locust")]
# mlflow_image/.dockerignore before 0ef3341 (`git show 0ef3341~1:mlflow_image/.dockerignore`): the
# first build failed on the packages it did not re-include.
OLD_MLFLOW_DOCKERIGNORE = """\
# Build context = mlflow_image/. Only the Dockerfile and the requirements files
# are needed; exclude everything, then re-include what the Dockerfile COPYs.
*
!Dockerfile
!requirements-common.txt
!requirements-tracking.txt
!requirements-serving.txt
!mlflow_serving/*.py
!mlflow_metrics/*.py

# Belt and braces, in case the allow-list above is ever loosened.
**/.git
**/__pycache__
**/*.py[cod]
**/.pytest_cache
**/.mypy_cache
**/.ruff_cache
**/.venv
**/.venv-*
**/venv
**/tests
**/mlruns
**/mlartifacts
**/*.db
**/.env
**/*.pem
**/*.key
**/*.json
"""


@pytest.fixture(scope="module")
def image_builds(stack_runs) -> list[tuple[Path, dict]]:
    """Every image the two projects build, with the folder its paths are relative to (its project's):
    the platform's (dev) and the load test's (loadtest/, dev)."""
    return ([(ROOT, i.inputs) for i in stack_runs["dev"].of_type(IMAGE)]
            + [(ROOT / "loadtest", i.inputs) for i in run_load_test_stack("dev").of_type(IMAGE)])


def copy_context(context: str, tmp_path: Path) -> Path:
    """A copy of a build context, as a clean checkout has it."""
    return shutil.copytree(ROOT / context, tmp_path / context, ignore=shutil.ignore_patterns("__pycache__"))


def unbuildable_sources(context: Path, dockerfile: Path) -> dict[str, str]:
    """COPY/ADD sources (not `--from=` stage copies) the build would not find, and why."""
    present = [p.relative_to(context).as_posix() for p in context.rglob("*") if not p.is_dir()]
    sent = context_files(context, dockerfile)
    problems = {}
    for instruction in parse_dockerfile_ast(dockerfile.read_text()).instructions:
        if instruction.name.upper() not in ("COPY", "ADD") or any(f.startswith("--from") for f in instruction.flags):
            continue
        for source in instruction.args[:-1]:
            if source.startswith("<<") or "://" in source:  # heredocs and URLs: not read from the context
                continue
            # A source names a file or a folder, wildcards allowed, as an ignore pattern does.
            under = (lambda path: True) if source.strip("./") == "" else PatternMatcher([source]).matches
            if not any(map(under, present)):
                problems[source] = "not in the context"
            elif not any(map(under, sent)):
                problems[source] = "filtered out by .dockerignore"
    return problems


def test_every_copy_source_survives_its_context_s_dockerignore(image_builds):
    builds = {((root / i["context"]["location"]).resolve(), (root / i["dockerfile"]["location"]).resolve())
              for root, i in image_builds}
    assert {context for context, _ in builds} >= {ROOT / "mlflow_image", ROOT / "loadtest"}
    for context, dockerfile in builds:
        assert unbuildable_sources(context, dockerfile) == {}, context


def test_the_guard_names_the_packages_the_old_dockerignore_filtered_out(tmp_path):
    context = copy_context("mlflow_image", tmp_path)
    (context / ".dockerignore").write_text(OLD_MLFLOW_DOCKERIGNORE)
    assert unbuildable_sources(context, context / "Dockerfile") == {
        package: "filtered out by .dockerignore"
        for package in ("mlflow_dbwait", "mlflow_dbgrant", "mlflow_fileenv", "mlflow_serving_user", "mlflow_iap_auth",
                        "mlflow_access", "mlflow_crdwait", "mlflow_drift", "mlflow_notify")}


def test_the_guard_names_a_source_missing_from_the_context(tmp_path):
    context = copy_context("loadtest", tmp_path)
    (context / "payloads.py").unlink()
    assert unbuildable_sources(context, context / "Dockerfile") == {"payloads.py": "not in the context"}


def test_every_image_is_tagged_by_its_build(image_builds):
    for root, image in image_builds:
        context, target = image["context"]["location"], image["target"]
        assert [tag.rsplit(":", 1)[1] for tag in image["tags"]] == [build_tag(context, target, root)[:16]], target
    assert sorted(image["target"] for _, image in image_builds) == sorted(target for _, target in BUILDS)


@pytest.mark.parametrize("context, target", BUILDS)
def test_the_tag_ignores_what_the_builder_never_sees(tmp_path, context, target):
    directory = copy_context(context, tmp_path)
    before = build_tag(context, target, root=tmp_path)
    for folder in [directory, *(p for p in directory.iterdir() if p.is_dir())]:
        (folder / "__pycache__").mkdir()
        (folder / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"stray")
    (directory / "NOTES.md").write_text("excluded by .dockerignore\n")
    assert build_tag(context, target, root=tmp_path) == before


@pytest.mark.parametrize("context, target", BUILDS)
def test_the_tag_moves_with_any_file_the_builder_sees(tmp_path, context, target):
    directory = copy_context(context, tmp_path)
    before = build_tag(context, target, root=tmp_path)
    for name in context_files(directory, directory / "Dockerfile"):
        original = (directory / name).read_bytes()
        (directory / name).write_bytes(original + b"\n")
        assert build_tag(context, target, root=tmp_path) != before, name
        (directory / name).write_bytes(original)
    assert build_tag(context, target, root=tmp_path) == before


def test_the_tag_moves_with_a_file_mode_as_the_provider_s_hash_does(tmp_path):
    directory = copy_context("mlflow_image", tmp_path)
    before = build_tag("mlflow_image", "serving", root=tmp_path)
    os.chmod(directory / "mlflow_serving" / "app.py", 0o755)
    assert build_tag("mlflow_image", "serving", root=tmp_path) != before


def test_the_tag_moves_with_the_target():
    assert build_tag("mlflow_image", "tracking") != build_tag("mlflow_image", "serving")


def test_a_dockerfile_s_own_ignore_file_wins_as_the_provider_reads_it(tmp_path):
    directory = copy_context("loadtest", tmp_path)
    (directory / "Dockerfile.dockerignore").write_text("*\n!requirements.txt\n")
    assert context_files(directory, directory / "Dockerfile") == ["requirements.txt"]


def test_context_hash_is_the_provider_s_byte_for_byte(tmp_path):
    tree = {"Dockerfile": ("FROM scratch\n", 0o644), "a.txt": ("1\n", 0o644), "a/b": ("2\n", 0o600),
            "a-b": ("3\n", 0o755), "setuid.sh": ("4\n", 0o4755), "shared/g": ("5\n", 0o2750), "Émile": ("6\n", 0o1644)}
    for name, (text, mode) in tree.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
        os.chmod(tmp_path / name, mode)
    os.symlink("a.txt", tmp_path / "link-to-file")
    os.symlink("a", tmp_path / "link-to-dir")
    os.mkfifo(tmp_path / "pipe")
    # What the provider's hashFile/hashPath/hashDockerfile (context.go, v0.0.22), run in Go over
    # filepath.WalkDir and os.Lstat modes, give for this tree: walk order, link and special mode bits,
    # skipped pipes and links to folders.
    provider_hash = "6d887f49d6a3c48307c82bb726532f8a58a9731115f1df55ee9cd3f00ef49cda"
    assert context_hash(tmp_path, tmp_path / "Dockerfile") == provider_hash


def test_prebuilt_image_version_is_its_digest():
    assert image_version("r/p/i@sha256:" + "c" * 64) == "c" * 64


def test_two_images_are_built_from_mlflow_image_and_pushed(stack_runs):
    images = stack_runs["dev"].of_type(IMAGE)
    assert sorted(i.inputs["target"] for i in images) == ["serving", "tracking"]
    for image in images:
        target = image.inputs["target"]
        assert image.inputs["push"] is True
        assert image.inputs["context"]["location"] == "mlflow_image"
        tag = build_tag("mlflow_image", target)[:16]
        assert image.inputs["tags"] == [f"us-central1-docker.pkg.dev/my-mlflow-dev/mlflow-images/mlflow-{target}:{tag}"]
        registry = image.inputs["registries"][0]
        assert registry["username"] == "oauth2accesstoken" and is_secret(registry["password"])


def test_pods_reference_the_built_images_by_digest(stack_runs):
    run = stack_runs["dev"]
    refs = {i.inputs["target"]: i.state["ref"] for i in run.of_type(IMAGE)}
    assert container(run.named("mlflow-deployment"), "mlflow")["image"] == refs["tracking"]
    assert container(run.named("mlflow-serving-deployment"), "serving")["image"] == refs["serving"]
    assert "@sha256:" in refs["tracking"]


def test_prebuilt_images_skip_the_build(run_stack_with):
    tracking = "europe-docker.pkg.dev/p/r/mlflow-tracking@sha256:" + "1" * 64
    serving = "europe-docker.pkg.dev/p/r/mlflow-serving@sha256:" + "2" * 64
    run = run_stack_with("dev", {"tracking.image": tracking, "serving.image": serving})
    assert run.of_type(IMAGE) == []
    assert container(run.named("mlflow-deployment"), "mlflow")["image"] == tracking
    assert container(run.named("mlflow-serving-deployment"), "serving")["image"] == serving


@pytest.mark.parametrize("target", ["tracking", "serving"])
def test_dockerfile_has_the_target_and_runs_as_a_numeric_non_root_user(target):
    dockerfile = open("mlflow_image/Dockerfile").read()
    stage = dockerfile.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
    assert "USER 10001:10001" in stage
    assert "COPY --from=builder-" in stage
    # No build tooling in what runs: serving adds only the OpenMP runtime LightGBM loads, and no apt lists.
    installed = re.findall(r"apt-get install -y --no-install-recommends ([^\\&\n]+)", stage)
    assert [packages.split() for packages in installed] == ([["libgomp1"]] if target == "serving" else [])
    assert stage.count("apt-get update") == len(installed) == stage.count("rm -rf /var/lib/apt/lists/*")


def test_one_source_of_truth_for_the_mlflow_version():
    pins = [line for name in ("common", "tracking", "serving")
            for line in open(f"mlflow_image/requirements-{name}.txt").read().splitlines()
            if line.startswith("mlflow==")]
    assert len(pins) == 1


class ListingRacedStore(ImageStore):
    """A store whose `buildah containers` meets another build removing its container `races` times."""

    def __init__(self, root, races: int, message: str = "Error: reading build containers: container not known"):
        super().__init__(root)
        self.races, self.message, self.removed = races, message, []

    def buildah(self, step, *args, timeout=0):
        if args[0] == "containers":
            if self.races:
                self.races -= 1
                raise ImageBuildError(f"containers failed (exit 125); log x:\n{self.message}")
            return "rootfs-serving-old\nrootfs-other-1\n"
        if args[0] == "images":
            return ""
        self.removed.append(args)
        return ""


def test_a_build_beside_another_lists_again_when_a_container_vanished_meanwhile(tmp_path, monkeypatch):
    # `make test` builds the images side by side: one build's listing may meet another's removed container
    monkeypatch.setattr(images.time, "sleep", lambda seconds: None)
    store = ListingRacedStore(tmp_path, races=2)
    store._evict_other_versions("serving", "localhost/serving:new")
    assert store.removed == [("rm", "rootfs-serving-old")]
    with pytest.raises(ImageBuildError, match="permission denied"):
        ListingRacedStore(tmp_path, races=1, message="permission denied")._evict_other_versions("serving", "x")
