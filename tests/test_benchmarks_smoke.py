"""Smoke test of the benchmark suite (python -m benchmarks): its cheapest paths run, the JSON it
writes has the expected keys and positive numbers, and every target row has its verdict. No
timing assertions."""

from __future__ import annotations

import json
import os

import pytest

from entry_helpers import needs_systemd

pytestmark = needs_systemd


VERDICTS = ("PASS", "FAIL", "not measured")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


@pytest.mark.slow
def test_quick_entry_and_unit_start(tmp_path, monkeypatch):
    from benchmarks import suite

    monkeypatch.setattr(suite, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "HERE", str(tmp_path))   # RESULTS.md goes there too, not into the tree
    results = suite.run_suite(["entry", "unit_start"], quick=True, progress=False,
                              reps={"entry": 3, "unit_start": 2}, log=lambda m: None)
    # without publish, the committed RESULTS.md is left alone
    assert suite.write_outputs(results, "pytest") == [os.path.join(str(tmp_path), "latest.json")]
    written = suite.write_outputs(results, "pytest", publish=True)
    with open(os.path.join(tmp_path, "latest.json")) as f:
        data = json.load(f)
    assert os.path.join(str(tmp_path), "RESULTS.md") in written

    assert {"machine", "reps", "contenders", "entry", "unit_start", "targets"} <= set(data)
    e = data["entry"]
    assert "error" not in e, e.get("error")
    for key in ("fork", "zygote_fork", "enter"):
        assert e[key]["n"] == 3 and _positive(e[key]["median"]), (key, e[key])
    assert e["entry_per_worker"]["n"] == 3   # a difference of forks: may be below zero
    ci = e["entry_per_worker_ci"]   # 3 values are too few for a 95 % interval: their range
    assert ci["n"] == 3 and ci["lo"] <= ci["hi"] and ci["level"] < 0.95
    assert e["steps"] and all(_positive(s["median"]) for s in e["steps"].values())
    assert _positive(e["ratios"]["enter/fork"])
    if data["pystemd_unavailable"] is None:
        assert _positive(e["pystemd_enter_unit"]["median"])

    u = data["unit_start"]
    assert "error" not in u, u.get("error")
    for key in ("concurrentd connect+start", "concurrentd start (warm)", "systemd-run"):
        assert u[key]["n"] == 2 and _positive(u[key]["median"]), (key, u[key])
    assert _positive(u["ratios"]["concurrentd connect+start/systemd-run"]["median"])

    targets = {(t["case"], t["figure"]): t for t in data["targets"]}
    assert ("entry", "entry per worker median") in targets
    assert all(t["verdict"] in VERDICTS for t in targets.values())
    assert {t["case"] for t in data["targets"]} == {"entry", "unit_start"}
    # a difference whose interval does not have 95 % coverage is not measured, whatever its sign
    for figure in ("entry per worker median", "entry per worker / Python fork",
                   "pystemd enter_unit / entry per worker"):
        if ("entry", figure) in targets:
            assert targets[("entry", figure)]["verdict"] == "not measured", targets[("entry", figure)]

