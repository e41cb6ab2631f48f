"""terminal_hecate: a drop-in for the original Python terminal tool, backed by Hecate.

The same names and signatures as the original ``terminal_hecate`` module::

    from terminal_hecate import terminal_hecate_tool

    result = terminal_hecate_tool("ls -la")                              # JSON string
    result = terminal_hecate_tool("python server.py", background=True)

Commands run through one Hecate runtime per process, on a background thread
started on the first call. Like the original, commands run on MorphCloud VMs
(``MORPH_API_KEY``) unless ``HECATE_BACKEND`` names another backend. Calls
release the GIL while they wait; Ctrl-C raises ``KeyboardInterrupt`` and
stops the task's instance (killing the running command); a forked child gets
a runtime of its own; at interpreter exit every instance is stopped.
"""

import atexit as _atexit
import os as _os

from . import _native
from ._native import (
    TERMINAL_HECATE_DESCRIPTION,
    check_hecate_requirements,
    cleanup_vm,
    shutdown,
    terminal_hecate_tool,
)

__all__ = [
    "TERMINAL_HECATE_DESCRIPTION",
    "check_hecate_requirements",
    "cleanup_vm",
    "shutdown",
    "terminal_hecate_tool",
]

# A forked child never uses (or stops) its parent's runtime or instances.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(
        before=_native._before_fork,
        after_in_parent=_native._after_fork_in_parent,
        after_in_child=_native._after_fork_in_child,
    )

# Stop every instance when the interpreter exits (the original left its VMs
# to their server-side TTL).
_atexit.register(shutdown)
