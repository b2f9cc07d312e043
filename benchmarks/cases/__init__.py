"""The benchmark cases (issues 6 and 19); each module's ``run`` returns a JSON-able dict."""

#: name -> what it measures (the order in which they run)
CASES = {
    "entry": "the C entry call, total and per step, vs os.fork and pystemd's enter_unit",
    "cold_start": "worker fork → ready inside the unit, vs ProcessPoolExecutor and pystemd",
    "pool_start": "pool start → first result, max_workers 1 and 2, vs ProcessPoolExecutor and pystemd",
    "throughput": "20,000 no-op tasks, submit() and map(chunksize=100), max_workers=2",
    "unit_start": "call → running anchor, vs systemd-run for the same unit",
    "oneshot": "run(f) again and again (a prepared unit; cold), vs systemd-run --pipe and bwrap",
    "scale": "max_workers 1 to 64: all workers ran a task, throughput, memory, vs ProcessPoolExecutor",
}
