"""environment.yml installs what pyproject.toml declares (dependencies, the extras `make env` installs and the
`notebooks` extra `make lab` adds)."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in ("torchvision", "tensorflow", "test", "bench", "notebooks"):
        declared |= {_name(r) for r in project["optional-dependencies"][extra]}
    listed = {_name(line.split("- ", 1)[1]) for line in (ROOT / "environment.yml").read_text().splitlines()
              if re.match(r"^\s+- ", line)}
    assert declared <= listed, f"missing from environment.yml: {sorted(declared - listed)}"
