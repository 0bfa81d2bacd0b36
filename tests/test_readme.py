"""README's Python section runs as written, from a folder holding a sub-folder photos/ of images."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, copy_photos

pytestmark = pytest.mark.slow  # the real model on real photos


def _python_block() -> str:
    section = (REPO / "README.md").read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_example_runs_as_written(tuxpaint, tmp_path, model_dir):
    photos = copy_photos(tuxpaint, tmp_path / "sorted", per_class=3, classes=["animals/birds", "food/fruit"])
    (tmp_path / "photos").mkdir()
    for p in photos:
        (tmp_path / "photos" / p.name).write_bytes(p.read_bytes())
    done = subprocess.run(
        [sys.executable, "-c", _python_block()], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{len(photos)} indexed, 0 skipped, {len(photos)} in the workspace"
    first = sorted(p.name for p in photos)[0]
    assert lines[1].startswith("1.000  same") and lines[1].endswith(first)  # the photo finds itself first
    assert f"photos are like {first}" in done.stdout and "photos are tagged bird" in done.stdout
    assert lines[-1] == "1 photo taken out of the index (the file stays)"
    assert (tmp_path / "photos" / first).is_file()
