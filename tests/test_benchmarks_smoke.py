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


@pytest.mark.slow
def test_quick_pool_start_and_scale(tmp_path, monkeypatch):
    """pool_start's prepared contenders and §1 targets, the scale case (two sizes) and its
    targets, with unit_start for the cold floors: each figure and target row is there."""
    from benchmarks import suite
    from benchmarks.cases.scale import SIZES

    monkeypatch.setattr(suite, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "HERE", str(tmp_path))
    results = suite.run_suite(["pool_start", "unit_start", "scale"], quick=True, progress=False,
                              reps={"pools": 1, "unit_start": 2, "scale": 1},
                              scale_sizes=(1, 8), scale_tasks=200, log=lambda m: None)
    written = suite.write_outputs(results, "pytest", publish=True)   # the chart, with matplotlib
    with open(os.path.join(tmp_path, "latest.json")) as f:
        data = json.load(f)
    assert os.path.join(str(tmp_path), "RESULTS.md") in written
    assert _positive(data["machine"]["cpus"]) and len(data["machine"]["loadavg_1_5_15"]) == 3

    p = data["pool_start"]
    assert "error" not in p, p.get("error")
    for w in (1, 2):
        for k in ("concurrentd", "concurrentd (prepared)", "concurrentd (fresh, prepared)",
                  "ProcessPoolExecutor"):
            assert p[f"workers{w}"][k]["n"] == 1 and _positive(p[f"workers{w}"][k]["median"]), (k, w)
        for k in ("concurrentd (prepared)", "concurrentd (fresh, prepared)"):
            assert _positive(p["ratios"][f"{k}/ProcessPoolExecutor workers{w}"]["median"])

    sc = data["scale"]
    assert "error" not in sc, sc.get("error")
    assert sc["sizes"] == [1, 8] and not sc["errors"], sc["errors"]
    for n in (1, 8):
        row = sc[f"workers{n}"]
        for k in ("concurrentd", "ProcessPoolExecutor"):
            for m in ("all_ran", "submit", "owner_rss", "worker_uss", "worker_pss"):
                assert row[k][m]["n"] == 1 and _positive(row[k][m]["median"]), (n, k, m)
            assert row[k]["owner_growth_ci"]["n"] == 1
        assert _positive(row["concurrentd"]["zygote_uss"]["median"])
        assert row["ProcessPoolExecutor"]["zygote_uss"] is None
        for m in ("all_ran", "time_per_task", "worker_uss", "worker_pss"):
            assert _positive(row["ratios"][m]["median"]), (n, m)
    for m in ("spare_uss", "spare_pss", "zygote_uss", "worker_uss"):
        assert _positive(sc["spare"][m]["median"]), m

    targets = {(t["case"], t["figure"]): t for t in data["targets"]}
    assert {t["case"] for t in data["targets"]} == {"pool_start", "unit_start", "scale"}
    assert all(t["verdict"] in VERDICTS for t in targets.values())
    for w, s in ((1, ""), (2, "s")):
        cold = targets[("pool_start", f"cold, concurrentd, {w} worker{s}")]
        # the floor is set from this run's unit start and ProcessPoolExecutor's pool start
        assert cold["verdict"] in ("PASS", "FAIL") and _positive(cold["limit"]), cold
        assert "unit start (connected)" in cold["basis"]
        for k in ("concurrentd (prepared)", "concurrentd (fresh, prepared)"):
            t = targets[("pool_start", f"{k} / ProcessPoolExecutor, {w} worker{s}")]
            assert t["verdict"] in ("PASS", "FAIL") and t["limit"] == 2, t
    floor = targets[("scale", "1 worker: all ran a task, concurrentd (cold floor)")]
    assert floor["verdict"] in ("PASS", "FAIL") and _positive(floor["limit"]), floor
    for figure in ("all ran a task", "time per no-op task"):
        t = targets[("scale", f"8 workers: {figure}, concurrentd / ProcessPoolExecutor")]
        assert t["verdict"] in ("PASS", "FAIL") and t["limit"] == 1.2, t
    # the sizes not run this time are there, not measured
    skipped = [t for t in data["targets"] if t["case"] == "scale"
               and not t["figure"].startswith(("1 worker:", "8 workers:"))]
    assert len(skipped) == sum(2 if n >= 8 else 1 for n in SIZES if n not in (1, 8)), skipped
    assert all(t["verdict"] == "not measured" and t["why"] for t in skipped), skipped

    table = suite.table(results)
    for t in data["targets"]:
        assert f"| {t['case']} | {t['figure']} |" in table
    assert "| scale | 8 workers: all ran a task |" in table
    assert "| scale | the spare (a pool of 2 that ran one task), USS / PSS |" in table
