"""Settings are documented in one place (lookalike/settings.py), and README's table follows it."""

from __future__ import annotations

import re

import pytest

from lookalike.settings import SETTINGS, markdown_table, setting

from conftest import REPO


def test_readme_settings_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert markdown_table() in section, "regenerate it: lookalike settings --markdown"
    documented = set(re.findall(r"^\| `(LOOKALIKE_[A-Z0-9_]+)`", section, re.M))
    assert documented == {s.env for s in SETTINGS}


def test_the_cli_takes_its_defaults_and_help_from_the_settings():
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    search_help = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    serve_help = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for env, text in (("LOOKALIKE_TOP_K", search_help), ("LOOKALIKE_PORT", serve_help)):
        s = setting(env)
        assert s.flag in text and s.env in text and s.help[1:] in text
        assert f"default: {s.default}" in text
    from lookalike.server.schemas import SearchBody
    from lookalike.settings import Options

    # The API's default is the server's own top_k (its options: the variable, else the table's default).
    assert SearchBody.model_fields["top_k"].default is None
    assert Options().top_k == int(setting("LOOKALIKE_TOP_K").default)
    assert "LOOKALIKE_TOP_K" in (SearchBody.model_fields["top_k"].description or "")


def test_every_environment_variable_the_code_reads_is_a_setting():
    used: set[str] = set()
    for path in [*(REPO / "lookalike").rglob("*.py"), *(REPO / "lookalike").rglob("*.yml")]:
        used |= set(re.findall(r"LOOKALIKE_[A-Z0-9_]+", path.read_text()))
    assert used == {s.env for s in SETTINGS}


def test_options_take_flags_then_variables_then_defaults(monkeypatch):
    from lookalike.errors import ConfigError
    from lookalike.settings import Options

    monkeypatch.setenv("LOOKALIKE_TOP_K", "7")
    monkeypatch.setenv("LOOKALIKE_INDEX_MEMORY", "512MB")
    monkeypatch.delenv("LOOKALIKE_MAX_BATCH", raising=False)
    options = Options.from_env(top_k=3)
    assert (options.top_k, options.index_memory, options.max_batch) == (3, 512 << 20, 16)
    assert Options.from_env().top_k == 7 and Options().top_k == 10  # a plain Options reads no variable
    assert Options.from_env(ray_address="127.0.0.1:6379").runtime == "ray"
    monkeypatch.setenv("LOOKALIKE_TOP_K", "lots")
    with pytest.raises(ConfigError, match="LOOKALIKE_TOP_K='lots' is not a whole number"):
        Options.from_env()
    monkeypatch.setenv("LOOKALIKE_TOP_K", "5000")
    with pytest.raises(ConfigError, match="LOOKALIKE_TOP_K=5000 is out of range 1..1000"):
        Options.from_env()


def test_settings_lists_values_in_effect_and_never_the_token():
    import json
    import os
    import subprocess

    from conftest import lookalike_cmd

    env = {**os.environ, "LOOKALIKE_TOKEN": "s3cret", "LOOKALIKE_TOP_K": "7"}
    done = subprocess.run([*lookalike_cmd(), "settings", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout
    rows = {r["env"]: r for r in json.loads(done.stdout)}
    assert rows["LOOKALIKE_TOKEN"]["value"] == "(set)" and rows["LOOKALIKE_TOP_K"]["value"] == "7"
