"""Wheels of the pinned dependencies PyPI publishes as source only, built once per machine.

pyspark is a 450 MB source distribution on PyPI. uv builds its wheel on every install into a
new virtualenv (the cached build is revalidated as a new revision each time): 20-30 s of every
``make setup`` on a fresh clone. ``python -m devtools.wheels ensure DIR`` builds the wheel of
each pinned source-only dependency into ``DIR`` (outside the clone: ``make setup`` passes
``~/.cache/lambda-sales/wheels``) unless it is there, and ``uv pip install --find-links DIR``
then installs it in seconds. Run with the new virtualenv's own Python (its pip builds the
wheel); the standard library only: nothing of the project is installed yet.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Dependencies without a wheel on PyPI (uv's cache shows what it builds: only these).
SOURCE_ONLY = ("pyspark",)


def pinned_source_only(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[tuple[str, str]]:
    """``(name, version)`` of each source-only dependency pinned with ``==`` in pyproject.toml
    (read as text: ``tomllib`` is not in Python 3.10's standard library)."""
    text = pyproject.read_text()
    pins = []
    for name in SOURCE_ONLY:
        match = re.search(rf'^\s*"{re.escape(name)}==([^";]+)"', text, re.MULTILINE | re.IGNORECASE)
        if match:
            pins.append((name, match.group(1).strip()))
    return pins


def ensure(target: Path, pins: list[tuple[str, str]] | None = None) -> list[Path]:
    """The wheel of each pin in ``target``, built (pip, from PyPI) when missing. A build goes to
    a scratch folder beside ``target`` and is renamed into place whole: a killed build leaves
    no wheel, and two clones building at once both end with the same file."""
    wheels = []
    for name, version in pinned_source_only() if pins is None else pins:
        found = sorted(target.glob(f"{name}-{version}-*.whl"))
        if not found:
            target.mkdir(parents=True, exist_ok=True)
            print(f"building the wheel of {name}=={version} into {target} (once)", flush=True)
            with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as scratch:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "wheel",
                        "--quiet",
                        "--no-deps",
                        "--disable-pip-version-check",
                        "--wheel-dir",
                        scratch,
                        f"{name}=={version}",
                    ],
                    check=True,
                )
                for built in Path(scratch).glob(f"{name}-{version}-*.whl"):
                    built.replace(target / built.name)
            found = sorted(target.glob(f"{name}-{version}-*.whl"))
            if not found:
                raise RuntimeError(f"pip built no wheel of {name}=={version}")
        wheels.append(found[-1])
    return wheels


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "ensure":
        print("usage: python -m devtools.wheels ensure DIR", file=sys.stderr)
        return 2
    try:
        ensure(Path(args[1]).expanduser())
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"could not build the source-only dependencies' wheels: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
