"""Which scoring domain runs: the modules compiled by mypyc (`scripts/build_native.py`, run by
`make install`) or the Python source beside them.

The compiled modules are used only while every source they were built from is unchanged (the manifest
`native.json` keeps their hashes) and `CHURNSIGNAL_PURE_PYTHON` is not set; otherwise the package imports
its modules from source, so an edited module is never shadowed by a stale build. Both behave the same
(the test suite runs on the compiled one, the domain tests also on the source: `make test`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = __name__.rpartition(".")[0]
HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "native.json"

COMPILED = False     # whether the compiled modules run
REASON = "not selected yet"


def _check() -> tuple[bool, str]:
    if os.environ.get("CHURNSIGNAL_PURE_PYTHON"):
        return False, "CHURNSIGNAL_PURE_PYTHON is set"
    try:
        manifest: dict[str, Any] = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False, "not compiled (scripts/build_native.py)"
    if manifest.get("python") != sys.implementation.cache_tag:
        return False, f"compiled for {manifest.get('python')}, not {sys.implementation.cache_tag}"
    for name, sha in manifest.get("sources", {}).items():
        try:
            if hashlib.sha256((HERE / name).read_bytes()).hexdigest() != sha:
                return False, f"{name} changed since it was compiled (make install compiles it again)"
        except OSError:
            return False, f"{name} is missing"
    if not all((HERE / name).is_file() for name in manifest.get("modules", [])):
        return False, "a compiled module is missing"
    return True, "compiled by mypyc"


class _SourceFirst:
    """Finds the package's modules as source, ahead of the compiled ones."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, leaf = fullname.rpartition(".")
        if package != PACKAGE:
            return None
        source = HERE / f"{leaf}.py"
        return importlib.util.spec_from_file_location(fullname, source) if source.is_file() else None


def select() -> None:
    """Decide once, before the package imports its modules."""
    global COMPILED, REASON
    COMPILED, REASON = _check()
    if not COMPILED and any(HERE.glob("*.so")) and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())
