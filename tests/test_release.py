"""A tag would publish a checked release: the distributions and the GitHub workflows."""

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from pipecat_grafana import __version__
from pipecat_grafana.pricing import DEFAULT_PRICES
from tests.test_docs import docs_tool

pytestmark = pytest.mark.slow  # builds the sdist and wheel, checks the workflows

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SHIPPED = (
    "pipecat_grafana/prices.toml",
    "pipecat_grafana/grafana/pipecat-voice-bot.json",
    "pipecat_grafana/grafana/pipecat-voice-bot-rules.yml",
    "pipecat_grafana/py.typed",
)
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, built as the release workflow builds them."""
    docs_tool("twine")  # the build module comes with the same extra
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out


def wheel(dist: Path) -> Path:
    (path,) = dist.glob("pipecat_grafana-*.whl")
    return path


def test_build_makes_an_sdist_and_a_wheel_of_this_version_that_twine_accepts(dist):
    assert wheel(dist).name == f"pipecat_grafana-{__version__}-py3-none-any.whl"
    (sdist,) = dist.glob("pipecat_grafana-*.tar.gz")
    assert sdist.name == f"pipecat_grafana-{__version__}.tar.gz"
    run = subprocess.run(
        [str(docs_tool("twine")), "check", "--strict", str(wheel(dist)), str(sdist)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (*SHIPPED, "README.md", "CHANGELOG.md", "pyproject.toml"):
        assert needed in names, f"the sdist lacks {needed}"


def test_the_wheel_ships_the_data_files(dist):
    with zipfile.ZipFile(wheel(dist)) as archive:
        names = set(archive.namelist())
        for needed in SHIPPED:
            assert needed in names, f"the wheel lacks {needed}"
        dashboard = json.loads(archive.read("pipecat_grafana/grafana/pipecat-voice-bot.json"))
        rules = yaml.safe_load(archive.read("pipecat_grafana/grafana/pipecat-voice-bot-rules.yml"))
        metadata = archive.read(f"pipecat_grafana-{__version__}.dist-info/METADATA").decode()
    assert dashboard["panels"] and rules["groups"]
    assert f"Version: {__version__}" in metadata
    assert not any(name.startswith(("tests/", "docs/", "benchmarks/")) for name in names)


def test_the_wheel_reads_its_own_price_table(dist, tmp_path):
    with zipfile.ZipFile(wheel(dist)) as archive:
        archive.extractall(tmp_path / "site")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pipecat_grafana.pricing import DEFAULT_PRICE_FILE, PriceTable;"
        "assert DEFAULT_PRICE_FILE.is_relative_to(sys.argv[1]), DEFAULT_PRICE_FILE;"
        "print(PriceTable().lookup('llm', 'gpt-4o-2024-08-06').input)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) == DEFAULT_PRICES["gpt-4o"].input


# ------------------------------------------------------------------ workflows


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as true
    return workflow


def test_workflows_match_githubs_schema():
    run = subprocess.run(
        [str(docs_tool("check-jsonschema")), "--builtin-schema", "vendor.github-workflows"]
        + [str(path) for path in sorted(WORKFLOWS.glob("*.yml"))],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_zizmor_finds_nothing_of_high_severity():
    run = subprocess.run(
        [str(docs_tool("zizmor")), "--offline", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip().startswith("["), run.stderr[-2000:]
    findings = json.loads(run.stdout)
    high = [(f["ident"], f["desc"]) for f in findings if f["determinations"]["severity"] == "High"]
    assert not high, high


def test_ci_runs_the_test_script_on_every_push_and_pull_request_on_each_python():
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    # The whole suite, and the install tests at the dependencies' floors on their own.
    runs = {"test": "scripts/test.sh", "floor": "scripts/test.sh -m install -k floor"}
    assert set(ci["jobs"]) == set(runs)
    for name, run in runs.items():
        job = ci["jobs"][name]
        assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"], name
        assert any(step.get("run") == run for step in job["steps"]), name


def test_release_tests_builds_checks_then_publishes_with_trusted_publishing():
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["build"]["needs"] == "test" and jobs["publish"]["needs"] == "build"
    build = "\n".join(step.get("run", "") for step in jobs["build"]["steps"])
    for command in ("python -m build", "twine check --strict", "CHANGELOG.md", "__version__"):
        assert command in build, command
    publish = jobs["publish"]
    assert publish["environment"]["name"] == "pypi"
    assert publish["steps"][-1]["uses"].startswith("pypa/gh-action-pypi-publish@")
    assert "with" not in publish["steps"][-1], "trusted publishing takes no password or token"


def test_least_privilege_and_every_action_pinned_to_a_commit():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = load(path.name)
        assert workflow["permissions"] == {}, f"{path.name}: no default permissions"
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions")
            assert granted is not None, f"{path.name}: job {name} must say what it may do"
            wanted = {"id-token": "write"} if name == "publish" else {"contents": "read"}
            assert granted == wanted, (path.name, name, granted)
            for step in job.get("steps", ()):
                uses = step.get("uses")
                if uses:
                    assert PINNED.match(uses), f"{path.name}: {uses} is not pinned to a commit"
                    assert step.get("with", {}).get("persist-credentials") is not True


@pytest.mark.parametrize(
    ("tag", "heading", "passes"),
    [
        (f"v{__version__}", f"## [{__version__}] - 2027-01-15", True),
        (f"v{__version__}", f"## [{__version__}] - Unreleased", False),
        ("v9.9.9", f"## [{__version__}] - 2027-01-15", False),
    ],
)
def test_release_refuses_a_tag_the_version_and_the_changelog_do_not_agree_on(
    tmp_path, tag, heading, passes
):
    (step,) = [
        step
        for step in load("release.yml")["jobs"]["build"]["steps"]
        if "CHANGELOG.md" in step.get("run", "")
    ]
    (tmp_path / "pipecat_grafana").mkdir()
    init = (ROOT / "pipecat_grafana" / "__init__.py").read_text()
    (tmp_path / "pipecat_grafana" / "__init__.py").write_text(init)
    (tmp_path / "CHANGELOG.md").write_text(f"# Changelog\n\n{heading}\n\n### Added\n\n- x\n")
    run = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "TAG": tag,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )
    assert (run.returncode == 0) is passes, run.stdout + run.stderr
