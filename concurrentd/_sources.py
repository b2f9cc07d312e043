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
"""

from __future__ import annotations

import linecache
import sys


def keep_main_source() -> None:
    """Reads ``__main__``'s source (one file: the script, or the module of ``python -m``) into
    linecache, for good. Nothing for a ``__main__`` without a file (``-c``, stdin, the REPL),
    which ProcessPoolExecutor's tracebacks show without source lines too."""
    main = sys.modules.get("__main__")
    filename = getattr(main, "__file__", None)
    if not isinstance(filename, str):
        return
    linecache.checkcache(filename)   # the source as it is now, as a traceback would read it
    if not linecache.getlines(filename, vars(main)):
        return
    size, _, lines, fullname = linecache.cache[filename]
    linecache.cache[filename] = (size, None, lines, fullname)
