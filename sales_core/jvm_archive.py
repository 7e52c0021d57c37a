"""The local Spark driver's class-data-sharing archive (JDK CDS): where it lives, when it fits.

A cold local Spark driver spends seconds loading and verifying the same ~20,000 classes of
Spark, Delta and their libraries on every start. ``make archive`` (run by ``make demo`` and ``make test``) records them once into a
dynamic CDS archive (``devtools.jvm_archive``, a short real run of the pipeline with
``-XX:ArchiveClassesAtExit``); every later local session maps it with
``-XX:SharedArchiveFile``. An archive that does not fit (another JDK, another class path) is
ignored by the JVM itself (``-Xshare:auto``, the default), so the worst case is the old start
time, never a failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sales_core.packages import PROJECT_ROOT

ARCHIVE_VAR = "LAMBDA_SALES_JVM_ARCHIVE"  # a path, or "off"
# How sales_core.session lays out a local driver's class path (the archive records one layout):
# the pinned jars on the driver's own class path, not in spark.jars.
CLASS_PATH_LAYOUT = "driver-class-path"
# CDS reports a mismatched or stale archive as warnings on stdout; the archive is only a speed-up.
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off", "-Xlog:class+path=off")


def archive_path(jars: list[str] | None) -> Path:
    """The archive of this Python's pyspark, this JDK and the given jar set."""
    override = os.environ.get(ARCHIVE_VAR, "")
    if override and override != "off":
        return Path(override)
    return PROJECT_ROOT / ".cache" / "jvm" / f"spark-{_fingerprint(jars)}.jsa"


def disabled() -> bool:
    return os.environ.get(ARCHIVE_VAR, "") == "off"


def java_options(jars: list[str] | None) -> list[str]:
    """The driver JVM's options that map the archive, or none when there is no archive."""
    if disabled():
        return []
    path = archive_path(jars)
    return [f"-XX:SharedArchiveFile={path}", *QUIET] if path.is_file() else []


def recording_options(target: Path) -> list[str]:
    """The driver JVM's options that write the archive when the JVM exits."""
    return [f"-XX:ArchiveClassesAtExit={target}", *QUIET]


def _fingerprint(jars: list[str] | None) -> str:
    import pyspark

    java_home = os.environ.get("JAVA_HOME", "")
    java = Path(java_home, "bin", "java") if java_home else Path(shutil.which("java") or "java")
    parts = [
        pyspark.__version__,
        str(Path(pyspark.__file__).parent),
        str(java.resolve()),
        CLASS_PATH_LAYOUT,
        *(jars or []),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """``python -m sales_core.jvm_archive options``: the driver options (``spark-submit.sh``)."""
    import sys

    from sales_core.packages import cached_jars

    args = sys.argv[1:] if argv is None else argv
    if args != ["options"]:
        print("usage: python -m sales_core.jvm_archive options", file=sys.stderr)
        return 2
    print(" ".join(java_options(cached_jars())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
