"""Source lines for the tracebacks a worker sends, where the unit hides the source files.

A task's exception travels to the owner as text (see _results), formatted in the worker, whose
traceback module reads each frame's source line through linecache. Inside the unit, the owner's
script may be out of reach (a script in /tmp behind PrivateTmp=, in a home directory behind
ProtectHome=, outside RootDirectory=): linecache.checkcache() drops an entry whose file it cannot
stat, and the script's loader reads the same hidden path. ProcessPoolExecutor's workers, which
see what the owner sees, show those lines.

So the zygote reads ``__main__``'s source into linecache before it enters the unit, while it
still sees what the owner sees, as an entry linecache keeps without a stat (no mtime, as for
source a module's loader gave); the workers are forked with it. The owner itself never reads a
file a worker's traceback names: a worker, perhaps the attacker's, would choose what it reads.

Other modules of a hidden sys.path directory are read by the worker, when a traceback goes
through them, from the copy the unit sees (see _pythonpath): nothing is read before. Code first
imported inside the unit, from such a copy, is named by the owner's path, as the owner would
name it.
"""

from __future__ import annotations

import linecache
import os
import stat
import sys
import traceback
from typing import Iterator

#: Inside the unit: (where the owner has a sys.path directory, where the unit has it bound), for
#: those the unit sees elsewhere; the owner's longest first (as _pythonpath orders them). Set by
#: note_bound().
_bound: tuple[tuple[str, str], ...] = ()


def keep_main_source(filename: str | None = None) -> None:
    """Reads ``__main__``'s source (one file: the script, or the module of ``python -m``) into
    linecache, for good. Nothing for a ``__main__`` without a file (``-c``, stdin, the REPL),
    which ProcessPoolExecutor's tracebacks show without source lines too. ``filename``: the
    owner's script, in a zygote whose ``__main__`` is not the owner's (a fresh interpreter)."""
    main = sys.modules.get("__main__")
    module_globals = vars(main) if main is not None and filename is None else None
    if filename is None:
        filename = getattr(main, "__file__", None)
    if not isinstance(filename, str) or not _readable_without_waiting(filename):
        return
    linecache.checkcache(filename)   # the source as it is now, as a traceback would read it
    if not linecache.getlines(filename, module_globals):
        return
    entry = linecache.cache[filename]
    if len(entry) != 4:   # still a lazy loader's (1,): getlines, having read it, replaced it
        return
    size, _, lines, fullname = entry
    linecache.cache[filename] = (size, None, lines, fullname)


def _readable_without_waiting(filename: str) -> bool:
    """A regular file, or no file at all (linecache then asks the module's loader: a zip
    archive's); not a FIFO or a device, whose reading could make the zygote wait for ever."""
    try:
        return stat.S_ISREG(os.stat(filename).st_mode)
    except OSError:
        return True


def note_bound(places: tuple[tuple[str, str], ...]) -> None:
    """Inside the unit, as sys.path is rewritten: the owner's directories bound elsewhere."""
    global _bound
    _bound = places


def format_exception(exc: BaseException) -> str:
    """traceback.format_exception(exc), with the source lines and file names the owner would
    show for frames of a sys.path directory bound elsewhere in the unit."""
    # as format_exception makes it, but with the lines read when formatted: after _mend
    report = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True,
                                          lookup_lines=False)
    if _bound:
        for frame in _frames(report):
            _mend(frame)
    return "".join(report.format())


def _frames(report: traceback.TracebackException) -> Iterator[traceback.FrameSummary]:
    """Every frame of a report: its own, its cause's, its context's, its group's."""
    seen, todo = set(), [report]
    while todo:
        report = todo.pop()
        if id(report) in seen:
            continue
        seen.add(id(report))
        yield from report.stack
        todo += [r for r in (report.__cause__, report.__context__) if r is not None]
        todo += getattr(report, "exceptions", None) or []


def _mend(frame: traceback.FrameSummary) -> None:
    """A frame of the owner's hidden code: its source line from the copy the unit sees; a frame
    of code imported from such a copy: the owner's path for it (its line read first)."""
    for owner, bound in _bound:
        if _under(frame.filename, bound):
            frame.line   # noqa: B018 - read where the worker finds it, before the renaming
            frame.filename = owner + frame.filename[len(bound):]
            return
        if _under(frame.filename, owner):
            _cache_copy(frame.filename, bound + frame.filename[len(owner):])
            return


def _cache_copy(filename: str, copy: str) -> None:
    """linecache's lines for ``filename``, which the unit hides, read from ``copy``."""
    if filename in linecache.cache and len(linecache.cache[filename]) != 1:
        return   # read already (by the zygote, or for an earlier traceback)
    if os.path.exists(filename):
        return   # the unit sees it: linecache reads it as usual
    try:
        with open(copy, encoding="utf-8", errors="replace") as f:
            data = f.read()
    except OSError:
        return
    linecache.cache[filename] = (len(data), None, data.splitlines(keepends=True), filename)


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in ("/", "")
