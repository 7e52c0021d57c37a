"""The local Spark driver's class-data-sharing archive (JDK CDS): where it lives, when it fits.

A cold local Spark driver spends seconds loading and verifying the same ~20,000 classes of
Spark, Delta and their libraries on every start. ``make archive`` (run by ``make demo`` and ``make test``) records them once into a
dynamic CDS archive (``devtools.jvm_archive``, a short real run of the pipeline with
``-XX:ArchiveClassesAtExit``); every later local session maps it with
``-XX:SharedArchiveFile``. An archive that does not fit (another JDK, another class path) is
ignored by the JVM itself (``-Xshare:auto``, the default), so the worst case is the old start
time, never a failure.

One archive serves every clone of the project on a machine. JDK 17 maps an archive when each
entry of the driver's class path is the file the archive was recorded with: the same path, or
a hard link to the same file (``os::same_files`` compares device and inode), and when each
recorded path still exists. Every clone's jars are hard links of the same files (pyspark's
from uv's cache, the pinned jars and the LogStores from the machine's jar store,
``sales_core.packages``), so the archive is named by those files' identities and recorded
with the class path laid out in a directory of hard links beside it, outside any clone
(``devtools.jvm_archive``): a fresh clone maps it with no recording of its own. Where the
files are not linked (a clone on another file system), the clone records its own archive
under ``.cache/jvm``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sales_core.packages import PROJECT_ROOT, driver_class_path, shared_jar_store

ARCHIVE_VAR = "LAMBDA_SALES_JVM_ARCHIVE"  # a path, or "off"
# How sales_core.session lays out a local driver's class path (the archive records one layout):
# the pinned jars on the driver's own class path, not in spark.jars.
CLASS_PATH_LAYOUT = "driver-class-path"
# CDS reports a mismatched or stale archive as warnings on stdout; the archive is only a speed-up.
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off", "-Xlog:class+path=off")


def archive_path(jars: list[str] | None) -> Path:
    """The archive of this JDK, pyspark's jars and the given jar set: the machine's when it
    was recorded, else the clone's (where :func:`devtools.jvm_archive.build` records one)."""
    override = os.environ.get(ARCHIVE_VAR, "")
    if override and override != "off":
        return Path(override)
    name = f"spark-{_fingerprint(jars)}.jsa"
    shared = shared_dir()
    if shared is not None and (shared / name).is_file():
        return shared / name
    return clone_dir() / name


def shared_dir() -> Path | None:
    """The machine's archives, beside its jar store (None: the store is off)."""
    store = shared_jar_store()
    return store.parent / "jvm" if store is not None else None


def clone_dir() -> Path:
    return PROJECT_ROOT / ".cache" / "jvm"


def spark_jars_dir() -> Path:
    """The ``jars`` directory of the Spark a local driver starts (``SPARK_HOME``'s, else pip's)."""
    home = os.environ.get("SPARK_HOME")
    if home:
        return Path(home) / "jars"
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def class_path_files(jars: list[str] | None) -> list[Path]:
    """The files of a local driver's class path, in its order: the driver's own class path,
    then Spark's jars (the JVM lists their directory in this same order)."""
    own = [Path(j) for j in driver_class_path(jars)] if jars is not None else []
    spark = spark_jars_dir()
    # the JVM expands ``jars/*`` to the directory's .jar files, in the order it lists them
    names = os.listdir(spark) if spark.is_dir() else []
    listed = [spark / name for name in names if name.lower().endswith(".jar")]
    return [*own, *listed]


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
    """The JDK, the class path layout and the identity of every class path file (device,
    inode, size, time: a hard link of a file is that file, a copy is not)."""
    import pyspark

    java_home = os.environ.get("JAVA_HOME", "")
    java = Path(java_home, "bin", "java") if java_home else Path(shutil.which("java") or "java")
    parts = [pyspark.__version__, str(java.resolve()), CLASS_PATH_LAYOUT]
    for path in class_path_files(jars):
        try:
            st = path.stat()
        except OSError:
            parts.append(f"{path.name} missing")
            continue
        parts.append(f"{path.name} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
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
