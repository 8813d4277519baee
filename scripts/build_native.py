"""Compile the scoring domain to C extension modules with mypyc (`make install` runs this).

The scoring domain (services/scoring/domain) is plain, fully typed Python. Compiled by mypyc, the same
source runs about twice as fast (the backtest and the daily sweeps are bound by it). The compiled modules
are written beside their sources (`<module>.cpython-*.so`, ignored by git), with a manifest of the source
hashes they were built from (`services/scoring/domain/native.json`); `services/scoring/domain/native.py`
uses them only while every source still matches, so an edited source is never shadowed by a stale build.

Usage: python scripts/build_native.py [--clean]
  Builds when the sources changed since the last build (quick otherwise). Without a C compiler or mypyc,
  or when the build fails, it says so and leaves the pure Python in place: the domain behaves the same,
  only slower. `--clean` removes the compiled modules and the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "services.scoring.domain"
DOMAIN = ROOT / "services" / "scoring" / "domain"
MANIFEST = DOMAIN / "native.json"
LOG = ROOT / "var" / "build-native.log"
# Not compiled: the package's entry (it decides what to load) and its loader; config.py, whose dataclasses
# take the YAML's values as they come and normalise them after (compiled dataclasses check the declared
# types first), and which is read once. They run as Python beside the compiled modules.
SKIP = {"__init__.py", "native.py", "config.py"}


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (its children's too: the C compiler) to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def sources() -> list[Path]:
    return sorted(p for p in DOMAIN.glob("*.py") if p.name not in SKIP)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_files() -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return sorted(DOMAIN.glob(f"*{suffix}"))


def clean() -> None:
    for path in compiled_files():
        path.unlink()
    MANIFEST.unlink(missing_ok=True)


def up_to_date(files: list[Path]) -> bool:
    if not MANIFEST.is_file():
        return False
    try:
        manifest = json.loads(MANIFEST.read_text())
    except ValueError:
        return False
    return (manifest.get("python") == sys.implementation.cache_tag
            and manifest.get("sources") == {p.name: digest(p) for p in files}
            and all(DOMAIN.joinpath(name).is_file() for name in manifest.get("modules", [])))


def build(files: list[Path]) -> list[str]:
    """Compile `files` in a scratch directory; the names of the extension files put beside the sources."""
    from mypyc.build import mypycify
    from setuptools import setup

    with tempfile.TemporaryDirectory(prefix="churnsignal-native-") as scratch:
        work = Path(scratch)
        # mypyc names modules by their path from the current directory: build from the project root, into
        # the scratch directory, so nothing but the finished modules lands in the tree.
        os.chdir(ROOT)
        # (the modules it imports from shared/ are read for their types, not checked: they stay Python)
        extensions = mypycify(["--follow-imports=silent", *(str(p.relative_to(ROOT)) for p in files)],
                              opt_level="3",
                              group_name=f"{PACKAGE}.native_group", target_dir=str(work / "c"))
        setup(name="churnsignal-native", ext_modules=extensions, script_name="build_native",
              script_args=["build_ext", "--build-lib", str(work / "lib"), "--build-temp", str(work / "tmp"),
                           "--quiet"])
        built = sorted((work / "lib" / "services" / "scoring" / "domain").glob("*.so"))
        if not built:
            raise RuntimeError("mypyc produced no extension module")
        clean()
        for path in built:
            shutil.copy2(path, DOMAIN / path.name)
        return [p.name for p in built]


def main(argv: list[str]) -> int:
    if "--clean" in argv:
        clean()
        print("build_native: compiled scoring domain removed (pure Python)")
        return 0
    if os.environ.get("CHURNSIGNAL_PURE_PYTHON"):
        print("build_native: CHURNSIGNAL_PURE_PYTHON is set; not compiling")
        return 0
    files = sources()
    if up_to_date(files):
        return 0
    started = time.monotonic()
    print(f"build_native: compiling the scoring domain ({len(files)} modules) with mypyc...", flush=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _output_to(LOG):   # (the compiler's lines go to the log, not the terminal)
            modules = build(files)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 (whatever fails, the pure Python still runs)
        clean()
        print(f"build_native: not compiled ({type(exc).__name__}: {exc}; the compiler's output is in "
              f"{LOG.relative_to(ROOT)}); the pure Python runs instead (same results, about half the speed)",
              file=sys.stderr)
        return 0
    MANIFEST.write_text(json.dumps({"python": sys.implementation.cache_tag, "modules": modules,
                                    "sources": {p.name: digest(p) for p in files}}, indent=1) + "\n")
    print(f"build_native: {len(modules)} extension modules in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
