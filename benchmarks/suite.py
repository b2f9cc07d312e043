"""The suite's driver: run the chosen cases, judge the targets, print the table, write
benchmarks/results/latest.json; with --publish also the committed benchmarks/RESULTS.md and (with
matplotlib) benchmarks/RESULTS.png."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Callable

from .cases import CASES
from .cases import _common as c
from .targets import FAIL, PASS, judge

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")

#: repetitions per case: (full run, --quick). scale: 6, the fewest with which the sign test gives
#: the owner's RSS growth (a difference) a 95 % interval; 5 sizes × 2 pools + the spare each
REPS = {"entry": (300, 20), "pools": (20, 3), "throughput": (11, 2), "unit_start": (30, 5),
        "oneshot": (20, 3), "scale": (6, 1)}
TASKS = 20_000
#: no-op tasks per scale trial: (full run, --quick)
SCALE_TASKS = (5_000, 1_000)


def machine() -> dict:
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:   # noqa: BLE001
            return ""

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "systemd": sh("systemctl", "--version").split("\n")[0],
            "cgroups": "unified" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "hybrid/legacy",
            "loadavg": os.getloadavg()[0], "loadavg_1_5_15": list(os.getloadavg()),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def describe(m: dict) -> str:
    """The machine in one line, printed as a run starts (a shared machine's load says how far
    its figures can be compared with another run's; ratios are taken within one run)."""
    load = " ".join(f"{x:.2f}" for x in m.get("loadavg_1_5_15", [m["loadavg"]]))
    return (f"machine: {m['cpu'] or 'CPU model unknown'}, {m['cpus']} CPUs, Linux {m['kernel']}, "
            f"{m['systemd'] or 'systemd version unknown'} ({m['cgroups']} cgroups), "
            f"Python {m['python']}; load average {load} (1, 5, 15 min) at the start")


def run_suite(cases: list[str], *, quick: bool = False, reps: dict | None = None,
              tasks: int = TASKS, progress: bool = True, log: Callable[[str], None] = print,
              scale_sizes: tuple[int, ...] | None = None, scale_tasks: int | None = None) -> dict:
    """Run ``cases``; return the results dict (also what latest.json holds). ``scale_sizes``
    and ``scale_tasks``: the scale case's pool sizes and no-op tasks (default: all of
    cases.scale.SIZES; SCALE_TASKS)."""
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    reps = {k: v[1 if quick else 0] for k, v in REPS.items()} | (reps or {})
    from .cases import scale
    from .cases.pools import PREPARED
    sizes = tuple(scale_sizes or scale.SIZES)
    scale_tasks = scale_tasks or SCALE_TASKS[1 if quick else 0]
    m = machine()
    log(describe(m))
    contenders = list(c.CONTENDERS)
    why = c.pystemd_unavailable()
    if why:
        log(f"pystemd unavailable: {why}")
        contenders.remove("pystemd")
    else:
        c.ensure_subscribed()
    pools = "cold_start" in cases or "pool_start" in cases
    prepared = sum(base in contenders for base in PREPARED.values())
    total = (reps["entry"] * ("entry" in cases)
             + reps["pools"] * 2 * (len(contenders) + prepared) * pools
             + reps["throughput"] * len(contenders) * ("throughput" in cases)
             + reps["unit_start"] * ("unit_start" in cases)
             + reps["oneshot"] * ("oneshot" in cases)
             + reps["scale"] * (2 * len(sizes) + 1) * ("scale" in cases))
    bar = None
    if progress:
        try:
            import tqdm

            tqdm.tqdm.monitor_interval = 0   # no monitor thread: trials fork
            bar = tqdm.tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    tick = (lambda: bar.update(1)) if bar else (lambda: None)
    say = (lambda m: bar.write(m)) if bar else log
    results: dict[str, Any] = {"machine": m, "quick": quick, "reps": reps,
                               "contenders": contenders, "pystemd_unavailable": why}
    try:
        for case in CASES:
            if case not in cases or case in results:
                continue
            if bar:
                bar.set_description(case)
            try:
                if case == "entry":
                    from .cases import entry
                    results["entry"] = entry.run(reps["entry"], tick, say)
                elif case in ("cold_start", "pool_start"):
                    from .cases import pools
                    both = pools.run(reps["pools"], contenders, tick, say)
                    results.update({k: v for k, v in both.items() if k in cases})
                elif case == "throughput":
                    from .cases import throughput
                    results["throughput"] = throughput.run(reps["throughput"], tasks, contenders,
                                                           tick, say)
                elif case == "unit_start":
                    from .cases import unit_start
                    results["unit_start"] = unit_start.run(reps["unit_start"], tick, say)
                elif case == "oneshot":
                    from .cases import oneshot
                    results["oneshot"] = oneshot.run(reps["oneshot"], tick, say)
                elif case == "scale":
                    results["scale"] = scale.run(reps["scale"], scale_tasks, tick, say, sizes)
            except Exception as e:   # noqa: BLE001 - a broken case must not hide the others
                results[case] = {"error": str(e).strip()[-2000:]}
                say(f"{case} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}")
    finally:
        if bar:
            bar.close()
    m["loadavg_end"] = list(os.getloadavg())
    results["targets"] = judge(results)
    return results


# -- output ----------------------------------------------------------------------------------

def _fmt(s: dict | None, unit: str) -> str:
    if not s:
        return "—"
    d = 0 if unit in ("tasks/s",) or s["median"] >= 100 else 2 if s["median"] < 10 else 1
    return (f"{s['median']:,.{d}f} {unit} (IQR {s['p25']:,.{d}f}–{s['p75']:,.{d}f}, n={s['n']})")


def _ratio(s: dict | float | None) -> str:
    if s is None:
        return "—"
    if isinstance(s, dict):
        return f"{s['median']:.2f}× (IQR {s['p25']:.2f}–{s['p75']:.2f})"
    return f"{s:.2f}×"


def figures(results: dict) -> list[tuple[str, str, str]]:
    """(case, figure, median and spread) rows of every measured figure."""
    rows = []
    e = results.get("entry")
    if e and "error" not in e:
        rows.append(("entry", "Python os.fork (parent side)", _fmt(e["fork"], "µs")))
        rows.append(("entry", "fork in the entered zygote (a pool's worker)",
                     _fmt(e["zygote_fork"], "µs")))
        rows.append(("entry", "entry per worker (that fork − os.fork, paired)",
                     _fmt(e["entry_per_worker"], "µs") + _ci(e.get("entry_per_worker_ci"), "µs")))
        rows.append(("entry", "concurrentd enter(plan), once per pool", _fmt(e["enter"], "µs")))
        for name, s in list(e["steps"].items())[:8]:
            rows.append(("entry", f"  step {name}", _fmt(s, "µs")))
        rows.append(("entry", "pystemd enter_unit",
                     _fmt(e["pystemd_enter_unit"], "µs") if e.get("pystemd_enter_unit")
                     else f"pystemd unavailable: {e.get('pystemd_unavailable', '?')}"))
        rows.append(("entry", "plan build (once per pool)", f"{e['plan_build_ms']:.1f} ms"))
    for case in ("cold_start", "pool_start"):
        r = results.get(case)
        if not r or "error" in r:
            continue
        groups = [("", r["contenders"])] if case == "cold_start" else \
                 [(f", {w} worker{'s' * (w > 1)}", r[f"workers{w}"]) for w in (1, 2)]
        for suffix, per in groups:
            for k, s in per.items():
                rows.append((case, f"{k}{suffix}", _fmt(s, "ms")))
        for k, s in r.get("ratios", {}).items():
            rows.append((case, f"ratio {k}", _ratio(s)))
        if case == "cold_start":
            rows.append((case, "uid the first task saw",
                         ", ".join(f"{k}: {v}" for k, v in r.get("worker_uid", {}).items())))
    t = results.get("throughput")
    if t and "error" not in t:
        for m in ("submit", "map"):
            for k, s in t[m].items():
                if k != "ratios":
                    rows.append(("throughput", f"{m}: {k}", _fmt(s, "tasks/s")))
            for k, s in t[m]["ratios"].items():
                rows.append(("throughput", f"{m}: ratio {k}", _ratio(s)))
    u = results.get("unit_start")
    if u and "error" not in u:
        for k in ("concurrentd connect+start", "concurrentd start (warm)", "systemd-run"):
            rows.append(("unit_start", k, _fmt(u[k], "ms")))
        for k, s in u["ratios"].items():
            rows.append(("unit_start", f"ratio {k}", _ratio(s)))
    o = results.get("oneshot")
    if o and "error" not in o:
        for k in ("run (prepared)", "run (cold)", "run (fresh, prepared)", "systemd-run", "bwrap"):
            if o.get(k):
                rows.append(("oneshot", k, _fmt(o[k], "ms")))
        for k, s in o["ratios"].items():
            rows.append(("oneshot", f"ratio {k}", _ratio(s)))
    sc = results.get("scale")
    if sc and "error" not in sc:
        rows += _scale_rows(sc)
    for case in CASES:
        if isinstance(results.get(case), dict) and "error" in results[case]:
            rows.append((case, "ERROR", results[case]["error"].splitlines()[-1]))
    return rows


def _ci(ci: dict | None, unit: str) -> str:
    """A difference's confidence interval, as a suffix to its figure."""
    if not ci:
        return ""
    d = 2 if max(abs(ci["lo"]), abs(ci["hi"])) < 10 else 1
    if ci["level"] < c.CI_LEVEL - 1e-9:
        return f"; n={ci['n']}: too few for a {c.CI_LEVEL:.0%} interval".replace("%", " %")
    # its coverage is at least CI_LEVEL (the sign test's steps make it a little more)
    return (f"; {c.CI_LEVEL:.0%} CI of the median {ci['lo']:,.{d}f} to {ci['hi']:,.{d}f} {unit}"
            .replace("%", " %"))


def _med(s: dict | None, fmt: str = ",.1f") -> str:
    return "—" if not s else format(s["median"], fmt)


def _scale_rows(sc: dict) -> list[tuple[str, str, str]]:
    """Five rows per pool size: all ran, throughput, worker memory, owner memory, the zygote."""
    rows = []
    ours, theirs = "concurrentd", "ProcessPoolExecutor"
    for n in sc["sizes"]:
        r = sc[f"workers{n}"]
        a, b, ratios = r[ours], r[theirs], r["ratios"]
        head = f"{n} worker{'s' * (n > 1)}"
        rows.append(("scale", f"{head}: all ran a task",
                     f"{ours} {_fmt(a['all_ran'], 'ms')}, PPE {_fmt(b['all_ran'], 'ms')}; "
                     f"ratio {_ratio(ratios['all_ran'])}"))
        rows.append(("scale", f"{head}: no-op submit()",
                     f"{ours} {_fmt(a['submit'], 'tasks/s')}, PPE {_fmt(b['submit'], 'tasks/s')}; "
                     f"time per task, ratio {_ratio(ratios['time_per_task'])}"))
        rows.append(("scale", f"{head}: each worker's USS / PSS",
                     f"{ours} {_med(a['worker_uss'])} / {_med(a['worker_pss'])} MiB, "
                     f"PPE {_med(b['worker_uss'])} / {_med(b['worker_pss'])} MiB; "
                     f"ratio {_ratio(ratios['worker_uss'])} / {_ratio(ratios['worker_pss'])}"))
        rows.append(("scale", f"{head}: owner RSS (its growth over the pool's life)",
                     f"{ours} {_med(a['owner_rss'])} MiB (+{_med(a['owner_growth'], '.2f')}"
                     f"{_ci(a.get('owner_growth_ci'), 'MiB')}), "
                     f"PPE {_med(b['owner_rss'])} MiB (+{_med(b['owner_growth'], '.2f')}"
                     f"{_ci(b.get('owner_growth_ci'), 'MiB')})"))
        rows.append(("scale", f"{head}: {ours}'s zygote, USS / PSS",
                     f"{_med(a['zygote_uss'], '.2f')} / {_med(a['zygote_pss'], '.2f')} MiB"))
    sp = sc.get("spare") or {}
    if sp.get("spare_uss"):
        rows.append(("scale", "the spare (a pool of 2 that ran one task), USS / PSS",
                     f"spare {_med(sp['spare_uss'], '.2f')} / {_med(sp['spare_pss'], '.2f')} MiB, "
                     f"its zygote {_med(sp['zygote_uss'], '.2f')} / {_med(sp['zygote_pss'], '.2f')} "
                     f"MiB, the worker {_med(sp['worker_uss'], '.2f')} / "
                     f"{_med(sp['worker_pss'], '.2f')} MiB (n={sp['spare_uss']['n']})"))
    if sc.get("errors"):
        rows.append(("scale", "failed trials", "; ".join(f"{k}: {v}"
                                                         for k, v in sc["errors"].items())))
    return rows


def target_value(t: dict) -> str:
    """A target row's figure, as measured (with its interval, for a difference)."""
    v, unit = t["value"], t["unit"]
    shown = ("—" if v is None else f"{v:.1f} µs" if unit == "us" else f"{v:.1f} ms"
             if unit == "ms" else f"{v:.2f}×")
    ci = t.get("ci")
    if ci and ci["level"] < c.CI_LEVEL - 1e-9:
        shown += f" ({t['ci_name']}: n={ci['n']}, too few for an interval)"
    elif ci:
        shown += (f" ({t['ci_name']}: {c.CI_LEVEL:.0%} CI of the median {ci['lo']:.1f} to "
                  f"{ci['hi']:.1f})").replace("%", " %")
    return shown


def table(results: dict) -> str:
    lines = ["| case | figure | median (spread) |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {v} |" for a, b, v in figures(results)]
    return "\n".join(lines + ["", targets_table(results)])


def targets_table(results: dict) -> str:
    """Every target with its figure and verdict (RESULTS.md's second table, README's table)."""
    lines = ["| case | target | figure | target | verdict |", "| --- | --- | --- | --- | --- |"]
    for t in results["targets"]:
        target = t["target"].replace(" us", " µs")
        if t.get("basis"):
            target += f" ({t['basis']})"
        verdict = f"**{t['verdict']}**" + (f" ({t['why']})" if t.get("why") else "")
        lines.append(f"| {t['case']} | {t['figure']} | {target_value(t)} | {target} | {verdict} |")
    return "\n".join(lines)


def write_outputs(results: dict, command: str, publish: bool = False) -> list[str]:
    """results/latest.json always; the committed RESULTS.md and RESULTS.png only to ``publish``."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    written = []
    path = os.path.join(RESULTS_DIR, "latest.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
    written.append(path)
    if not publish:
        return written
    m = results["machine"]
    md = ["# Benchmark results\n",
          f"`{command}`, {m['date']}{' (--quick: few repeats, a smoke run)' if results['quick'] else ''}.\n",
          f"Machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}, {m['systemd']} "
          f"({m['cgroups']} cgroups, inside concurrentd.testbed when PID 1 is not systemd), "
          f"Python {m['python']}, load average "
          f"{' / '.join(f'{x:.2f}' for x in m.get('loadavg_1_5_15', [m['loadavg']]))} "
          f"(1 / 5 / 15 min) at the start (shared machine).\n",
          "Medians with the interquartile range over the repetitions; ratios are medians of "
          "per-repetition ratios of contenders run back to back (see benchmarks/README.md).\n",
          table(results), ""]
    chart = _chart(results)
    if chart:
        written.append(chart)
        md.insert(-1, f"\n![medians, with the interquartile range]({os.path.basename(chart)})\n")
    path = os.path.join(HERE, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    written.append(path)
    written += _readme_table(results)
    return written


#: README's targets table sits between these lines, which --publish keeps
TABLE_BEGIN, TABLE_END = "<!-- benchmarks: targets -->", "<!-- /benchmarks: targets -->"


def _readme_table(results: dict) -> list[str]:
    """README's targets table replaced by this run's (where README has the markers). README is
    the one beside HERE, as RESULTS.md is in HERE: a run told to write elsewhere (the tests')
    leaves the tree's alone."""
    readme = os.path.join(os.path.dirname(HERE), "README.md")
    try:
        with open(readme) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    begin, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if begin < 0 or end < begin:
        return []
    m = results["machine"]
    body = (f"\n{m['cpus']} CPUs, {m['systemd']} ({m['cgroups']} cgroups), Python "
            f"{m['python']}, {m['date'][:10]}:\n\n{targets_table(results)}\n")
    with open(readme, "w") as f:
        f.write(text[:begin + len(TABLE_BEGIN)] + body + text[end:])
    return [readme]


def _chart(results: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = []   # (title, {bar: summary}) or (title, {bar: {group: summary}})
    e = results.get("entry")
    if e and "error" not in e:
        panels.append(("entry (µs)", {"os.fork": e["fork"], "worker fork\nin zygote": e["zygote_fork"],
                                      "enter(plan)\nonce per pool": e["enter"],
                                      "pystemd\nenter_unit": e.get("pystemd_enter_unit")}))
    r = results.get("cold_start")
    if r and "error" not in r:
        panels.append(("new worker → ready (ms)", r["contenders"]))
    r = results.get("pool_start")
    if r and "error" not in r:
        panels.append(("pool start → first result (ms)",
                       {k: {"1 worker": r["workers1"].get(k), "2 workers": r["workers2"].get(k)}
                        for k in r["workers1"]}))
    t = results.get("throughput")
    if t and "error" not in t:
        for m in ("submit", "map"):
            panels.append((f"throughput, {m} (tasks/s)",
                           {k: v for k, v in t[m].items() if k != "ratios"}))
    u = results.get("unit_start")
    if u and "error" not in u:
        panels.append(("unit start (ms)", {"connect\n+start": u["concurrentd connect+start"],
                                           "start\n(warm)": u["concurrentd start (warm)"],
                                           "systemd-run": u["systemd-run"]}))
    sc = results.get("scale")
    if sc and "error" not in sc:
        panels.append(("scale: concurrentd / PPE (target ≤ 1.2 from 8 up)",
                       {f"{n}": {"all ran a task": sc[f"workers{n}"]["ratios"]["all_ran"],
                                 "time per task": sc[f"workers{n}"]["ratios"]["time_per_task"]}
                        for n in sc["sizes"]}))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    targets = results.get("targets") or []
    # the panels, then every target with its verdict, one line each
    text_height = 0.16 * len(targets) + 0.3 if targets else 0
    fig = plt.figure(figsize=(4.4 * cols, 3.4 * rows + text_height))
    grid = fig.add_gridspec(rows + bool(targets), cols,
                            height_ratios=[3.4] * rows + ([text_height] if targets else []))
    axes = [fig.add_subplot(grid[r, k]) for r in range(rows) for k in range(cols)]
    if targets:
        _chart_targets(fig.add_subplot(grid[rows, :]), targets)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    # the grid may have more cells than panels: the spare axes are left as they are
    for ax, (title, data) in zip(axes, panels, strict=False):
        data = {k.replace("ProcessPoolExecutor", "PPE").replace(" (", "\n("): v
                for k, v in data.items() if v}
        names = list(data)
        grouped = bool(names) and "median" not in data[names[0]]
        groups = list(data[names[0]]) if grouped else [None]
        width = 0.8 / len(groups)
        for g, group in enumerate(groups):
            got = [(i, data[k][group] if grouped else data[k]) for i, k in enumerate(names)]
            got = [(i, v) for i, v in got if v]
            xs = [i + (g - (len(groups) - 1) / 2) * width for i, _ in got]
            ax.bar(xs, [v["median"] for _, v in got], width=width, capsize=3,
                   yerr=[[v["median"] - v["p25"] for _, v in got], [v["p75"] - v["median"] for _, v in got]],
                   color=colors[g] if grouped else [colors[i % len(colors)] for i, _ in got],
                   label=group)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7 if len(names) <= 4 else 6)
        if title.startswith("scale"):
            ax.axhline(1.2, color="#757575", linewidth=0.8, linestyle="--")
            ax.set_xlabel("max_workers", fontsize=7)
        if grouped:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = os.path.join(HERE, "RESULTS.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chart_targets(ax, targets: list[dict]) -> None:
    """Every target's verdict, figure and limit, one line each (PASS green, FAIL red, not
    measured grey)."""
    ax.axis("off")
    color = {PASS: "#2e7d32", FAIL: "#c62828"}
    step = 1 / max(len(targets), 1)
    for i, t in enumerate(targets):
        line = (f"{t['verdict']:<13} {t['case']}: {t['figure']}  {target_value(t)}  "
                f"{t['target'].replace(' us', ' µs')}" + (f"  ({t['why']})" if t.get("why") else ""))
        ax.text(0, 1 - i * step, line, family="monospace", fontsize=7, va="top",
                color=color.get(t["verdict"], "#757575"), transform=ax.transAxes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated, from: {', '.join(CASES)} (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--publish", action="store_true",
                   help="also rewrite the committed benchmarks/RESULTS.md and RESULTS.png")
    args = p.parse_args(argv)
    cases = [x.strip() for x in args.cases.split(",") if x.strip()]
    if not os.path.isdir("/run/systemd/system"):
        print("benchmarks: needs a running systemd; run inside the testbed:\n"
              "  python -m concurrentd.testbed -- python -m benchmarks", file=sys.stderr)
        return 2
    try:
        results = run_suite(cases, quick=args.quick, progress=not args.no_progress)
    except ValueError as e:
        p.error(str(e))
    print(table(results))
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + \
              ("" if args.cases == ",".join(CASES) else f" --cases {args.cases}")
    for path in write_outputs(results, command, publish=args.publish):
        print(f"wrote {os.path.relpath(path)}")
    return 0
