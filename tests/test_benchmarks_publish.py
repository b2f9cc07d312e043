"""--publish writes README's table of targets between its markers: README beside the results'
directory (benchmarks.suite.HERE), so a run told to write elsewhere leaves the tree's alone."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

TREE_README = Path(__file__).resolve().parent.parent / "README.md"
RESULTS = {"machine": {"cpus": 2, "systemd": "systemd 999", "cgroups": "unified",
                       "python": "3.x", "date": "2026-01-02T03:04:05"},
           "targets": [{"case": "entry", "figure": "entry per worker median", "value": 9.0,
                        "unit": "us", "target": "<= 25 us", "verdict": "PASS"}]}


def test_the_targets_table_goes_between_the_markers_of_the_readme_beside_the_results(
        tmp_path, monkeypatch):
    from benchmarks import suite

    here = tmp_path / "benchmarks"
    here.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{suite.TABLE_BEGIN}\nold table\n{suite.TABLE_END}\nafter\n")
    tree_before = TREE_README.read_bytes()
    monkeypatch.setattr(suite, "HERE", str(here))
    assert suite._readme_table(RESULTS) == [str(readme)]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| entry | entry per worker median | 9.0 µs | <= 25 µs | **PASS** |" in text
    assert "2 CPUs, systemd 999 (unified cgroups), Python 3.x, 2026-01-02:" in text
    assert TREE_README.read_bytes() == tree_before
