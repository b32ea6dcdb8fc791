"""The project's own contracts: CI runs the README's test command with the constraints file, and every package
the package and its tests import is pinned there (a new release cannot break a fresh clone)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def _readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    block = readme.split("**2. Run the tests**", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return block.strip()


def test_ci_runs_the_readme_test_command_with_the_constraints():
    command = _readme_test_command()
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in command
    install, run = command.split("&& ")[-2:]
    assert install.strip().replace("pip install", "python -m pip install -q") in ci
    assert ci.rstrip().splitlines()[-1] == run.strip()


def test_every_dependency_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        required |= {_name(r) for r in extra if not r.startswith("espcn-hf")}
    pins = _pins()
    missing = sorted(name for name in required if name not in pins)
    assert not missing, f"constraints.txt lacks {missing}: run scripts/refresh_constraints.sh"


def test_pins_satisfy_the_declared_ranges():
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if not r.startswith("espcn-hf")]
    pins = _pins()
    for requirement in requirements:
        version = pins[_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} vs =={version}"


def test_opencv_is_bounded_below_the_release_that_cannot_read_the_peers():
    from packaging.requirements import Requirement

    bench = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    opencv = next(Requirement(r) for r in bench if r.startswith("opencv"))
    assert not opencv.specifier.contains("5.1.0.95") and opencv.specifier.contains("5.0.0.93")
