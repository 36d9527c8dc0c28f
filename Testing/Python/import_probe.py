"""Source of a fresh interpreter's import blocker, shared by the tests that import modules with packages blocked.

``BLOCKER.format(blocked=("torch", ...))`` is Python source that makes every import of those top-level
packages raise ``ImportError("blocked import of <name>")`` in the interpreter that runs it.
"""

BLOCKER = r"""
import importlib, importlib.abc, sys

BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {{name}}")
        return None

sys.meta_path.insert(0, Blocker())
"""
