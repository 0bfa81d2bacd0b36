"""Settings are documented in one place (lookalike/settings.py), and README's table follows it."""

from __future__ import annotations

import re

from lookalike.settings import SETTINGS

from conftest import REPO


def test_readme_settings_table_matches_the_code():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(LOOKALIKE_[A-Z0-9_]+)`", section, re.M))
    assert documented == {s.env for s in SETTINGS}


def test_every_environment_variable_the_code_reads_is_a_setting():
    used: set[str] = set()
    for path in [*(REPO / "lookalike").rglob("*.py"), *(REPO / "lookalike").rglob("*.yml")]:
        used |= set(re.findall(r"LOOKALIKE_[A-Z0-9_]+", path.read_text()))
    assert used == {s.env for s in SETTINGS}
