"""The JVM packages every Spark entry point needs, pinned in one place.

The session factory, ``spark-submit.sh`` and the Databricks job definitions all read
:data:`JVM_PACKAGES`. ``python -m sales_core.packages fetch`` puts them into ``.cache/jars``
once; afterwards sessions use the cached jars and never download. The jar set is the one
Spark's own Ivy resolver gives for ``--packages``, recorded with each jar's SHA-1 in
``jars.lock.json`` beside this module (``python -m sales_core.packages lock`` writes it):
``fetch`` downloads the locked jars from Maven Central side by side and checks each one,
and falls back to a resolution by Ivy only for packages the lock does not cover.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SPARK_VERSION = "4.2.0"
SCALA_BINARY = "2.13"
DELTA_VERSION = "4.4.0"
POSTGRES_JDBC_VERSION = "42.7.8"
# The Hadoop that pip's pyspark bundles (pyspark/jars/hadoop-client-api-3.5.0.jar): S3A must be
# of the same version, with the AWS SDK v2 bundle its POM names (hadoop-project 3.5.0).
HADOOP_VERSION = "3.5.0"
AWS_SDK_VERSION = "2.35.4"

JVM_PACKAGES: tuple[str, ...] = (
    f"io.delta:delta-spark_{SPARK_VERSION.rsplit('.', 1)[0]}_{SCALA_BINARY}:{DELTA_VERSION}",
    f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}",
    f"org.postgresql:postgresql:{POSTGRES_JDBC_VERSION}",
)

# Object storage (``s3a://``): S3A and the AWS SDK, about 690 MB, used only by a session
# whose lakehouse or landing zone is on S3 (:func:`sales_core.session.get_spark`).
S3_PACKAGES: tuple[str, ...] = (
    f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}",
    f"software.amazon.awssdk:bundle:{AWS_SDK_VERSION}",
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def jar_cache_dir() -> Path:
    """Where the resolved jars live (``LAMBDA_SALES_JAR_CACHE`` overrides)."""
    return Path(os.environ.get("LAMBDA_SALES_JAR_CACHE", PROJECT_ROOT / ".cache" / "jars"))


def _fingerprint(packages: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16]


def _manifest(packages: tuple[str, ...]) -> Path:
    """The list of ``packages``' resolved jars (``MANIFEST`` for :data:`JVM_PACKAGES`)."""
    if packages == JVM_PACKAGES:
        return jar_cache_dir() / "MANIFEST"
    return jar_cache_dir() / f"MANIFEST-{_fingerprint(packages)}"


def _ivy_dir(packages: tuple[str, ...]) -> Path:
    """The Ivy cache ``packages`` are resolved into: one per package set, so that the sets can
    be resolved side by side (two Ivy processes must not write one cache at once)."""
    if packages == JVM_PACKAGES:
        return jar_cache_dir() / "ivy"
    return jar_cache_dir() / f"ivy-{_fingerprint(packages)}"


def cached_jars(packages: tuple[str, ...] = JVM_PACKAGES) -> list[str] | None:
    """The cached jar paths for ``packages``, or None when they were never fetched."""
    manifest = _manifest(packages)
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    if data.get("fingerprint") != _fingerprint(packages):
        return None
    jars = [str(_ivy_dir(packages) / "jars" / name) for name in data["jars"]]
    return jars if all(Path(j).is_file() for j in jars) else None


MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"

# Spark's own resolver chain also asks the local Maven and Ivy caches and Spark's package
# repository (a host this machine may not reach: a warning a package): Maven Central only.
_IVY_SETTINGS = f"""<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="{MAVEN_CENTRAL}"/>
  </resolvers>
</ivysettings>
"""


def ivy_settings() -> Path:
    """The Ivy settings file that resolves from Maven Central alone (written once)."""
    path = jar_cache_dir() / "ivysettings.xml"
    if not path.is_file() or path.read_text() != _IVY_SETTINGS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_IVY_SETTINGS)
    return path


LOCK_FILE = Path(__file__).with_name("jars.lock.json")


def locked_jars(packages: tuple[str, ...]) -> list[dict[str, str]] | None:
    """The locked jars of ``packages`` (group, artifact, version, sha1), or None."""
    if not LOCK_FILE.is_file():
        return None
    entry = json.loads(LOCK_FILE.read_text()).get(_fingerprint(packages))
    if entry is None or tuple(entry["packages"]) != packages:
        return None
    jars: list[dict[str, str]] = entry["jars"]
    return jars


def _jar_name(jar: dict[str, str]) -> str:
    """Ivy's name for a jar in its ``jars`` directory (what the manifests list)."""
    return f"{jar['group']}_{jar['artifact']}-{jar['version']}.jar"


def shared_jar_store() -> Path | None:
    """The machine's store of locked jars, by SHA-1, outside any clone: every clone and
    virtualenv of the project links its jars from there instead of downloading them again
    (``LAMBDA_SALES_JAR_STORE`` overrides; ``off``, None: every clone downloads)."""
    override = os.environ.get("LAMBDA_SALES_JAR_STORE", "")
    if override == "off":
        return None
    if override:
        return Path(override)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "lambda-sales" / "jars-by-sha1"


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` with ``source``'s bytes (a hard link where the file system allows one)."""
    tmp = target.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def _download(jar: dict[str, str], target_dir: Path) -> str:
    """One locked jar into ``target_dir``, its SHA-1 checked: from the machine's jar store
    (:func:`shared_jar_store`) when a clone fetched it before, else from Maven Central (and
    then kept in the store)."""
    name = _jar_name(jar)
    target = target_dir / name
    store = shared_jar_store()
    if store is None:
        _fetch_from_central(jar, target)
        return name
    stored = store / f"{jar['sha1']}.jar"
    if stored.is_file():
        _link_or_copy(stored, target)
        return name
    _fetch_from_central(jar, target)
    _keep(target, stored)
    return name


def _fetch_from_central(jar: dict[str, str], target: Path) -> None:
    """One locked jar from Maven Central to ``target``, its SHA-1 checked."""
    url = (
        f"{MAVEN_CENTRAL}{jar['group'].replace('.', '/')}/{jar['artifact']}/{jar['version']}/"
        f"{jar['artifact']}-{jar['version']}.jar"
    )
    tmp = target.with_suffix(".part")
    digest = hashlib.sha1(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=120) as response, tmp.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != jar["sha1"]:
        tmp.unlink()
        raise OSError(f"{url}: SHA-1 {digest.hexdigest()}, the lock says {jar['sha1']}")
    tmp.replace(target)


def _record(packages: tuple[str, ...], names: list[str]) -> list[str]:
    """Write the manifest of ``packages``' jars (named as in their Ivy directory's ``jars``)
    and return their paths, each checked to be there."""
    manifest = {"fingerprint": _fingerprint(packages), "packages": list(packages), "jars": names}
    tmp = _manifest(packages).with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(_manifest(packages))
    jars = cached_jars(packages)
    if jars is None:
        raise RuntimeError(f"jars missing under {_ivy_dir(packages) / 'jars'}")
    return jars


def fetch(packages: tuple[str, ...] = JVM_PACKAGES) -> list[str]:
    """Put ``packages``' jars into the jar cache (once) and return them: the locked jars
    downloaded side by side, or, for packages the lock does not cover, resolved by Ivy."""
    existing = cached_jars(packages)
    if existing is not None:
        return existing
    locked = locked_jars(packages)
    if locked is None:
        return _resolve_with_ivy(packages)
    jars_dir = _ivy_dir(packages) / "jars"
    jars_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = sorted(pool.map(lambda jar: _download(jar, jars_dir), locked))
    return _record(packages, names)


def _resolve_with_ivy(packages: tuple[str, ...]) -> list[str]:
    """Resolve ``packages`` from Maven Central by Spark's own Ivy resolver (the jar set
    ``--packages`` gives) into the jar cache and return the jars."""
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    ivy_dir = _ivy_dir(packages)
    ivy_dir.mkdir(parents=True, exist_ok=True)
    jars_dir = ivy_dir / "jars"
    before = set(os.listdir(jars_dir)) if jars_dir.is_dir() else set()
    # spark-submit resolves the packages when it starts the JVM: no SparkContext is needed
    # (one would copy every jar, 690 MB of AWS SDK included, into its temporary directory).
    conf = (
        SparkConf(loadDefaults=False)
        .set("spark.jars.packages", ",".join(packages))
        .set("spark.jars.ivy", str(ivy_dir))
        .set("spark.jars.ivySettings", str(ivy_settings()))
    )
    gateway = launch_gateway(conf)
    try:
        resolved = str(gateway.jvm.java.lang.System.getProperty("spark.jars") or "")
    finally:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.stdin.close()  # the gateway JVM exits when its stdin closes
            proc.wait(timeout=60)
    names = sorted({Path(p.replace("file:", "")).name for p in resolved.split(",") if p})
    if not names:
        names = sorted(set(os.listdir(jars_dir)) - before)
    return _record(packages, names)


def lock() -> dict[str, Any]:
    """The lock of every package set, from a resolution by Ivy into a scratch cache: each
    jar's coordinates (read off Ivy's cache layout) and SHA-1."""
    import tempfile

    entries: dict[str, Any] = {}
    saved = os.environ.get("LAMBDA_SALES_JAR_CACHE")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LAMBDA_SALES_JAR_CACHE"] = scratch
        try:
            for packages in PACKAGE_SETS.values():
                names = {Path(j).name for j in _resolve_with_ivy(packages)}
                cache = _ivy_dir(packages) / "cache"
                jars = []
                # Ivy keeps a jar as cache/<group>/<artifact>/(jars|bundles)/<artifact>-<version>.jar
                for path in sorted(cache.glob("*/*/*/*.jar")):
                    group, artifact = path.parts[-4], path.parts[-3]
                    version = path.name[len(artifact) + 1 : -len(".jar")]
                    jar = {"group": group, "artifact": artifact, "version": version}
                    if _jar_name(jar) in names:
                        jar["sha1"] = hashlib.sha1(
                            path.read_bytes(), usedforsecurity=False
                        ).hexdigest()
                        jars.append(jar)
                if {_jar_name(j) for j in jars} != names:
                    raise RuntimeError(f"jars not found in Ivy's cache: {sorted(names)}")
                entries[_fingerprint(packages)] = {"packages": list(packages), "jars": jars}
        finally:
            if saved is None:
                os.environ.pop("LAMBDA_SALES_JAR_CACHE", None)
            else:
                os.environ["LAMBDA_SALES_JAR_CACHE"] = saved
    return entries


# The package sets ``fetch`` resolves, each in a process of its own (Spark resolves
# ``spark.jars.packages`` when its JVM starts, once per process), side by side (most of a
# resolution is waiting for Maven Central).
PACKAGE_SETS = {"core": JVM_PACKAGES, "s3": S3_PACKAGES}

# The LogStores of jvm/, compiled into one jar by ``fetch``: the one that commits Delta's log to
# S3 with a conditional PUT, and the one that lists a local log without Hadoop's per-entry
# statuses (a day of one-second micro-batches leaves 174,000 entries).
LOGSTORE_SOURCES = tuple(sorted((PROJECT_ROOT / "jvm").rglob("*.java")))
LOGSTORE_CLASS = "lambdasales.delta.ConditionalPutLogStore"
LOCAL_LOGSTORE_CLASS = "lambdasales.delta.LocalListingLogStore"


def logstore_jar() -> Path:
    """Where the compiled LogStores of :data:`LOGSTORE_SOURCES` live (named by their sources)."""
    digest = hashlib.sha256()
    for source in LOGSTORE_SOURCES:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return jar_cache_dir() / f"lambda-sales-logstore-{digest.hexdigest()[:16]}.jar"


def local_logstore_jar() -> str | None:
    """The jar of :data:`LOCAL_LOGSTORE_CLASS` when it was built, else None."""
    jar = logstore_jar()
    return str(jar) if jar.is_file() else None


def build_logstore() -> Path:
    """Compile the LogStores against pyspark's Hadoop and the pinned delta-storage (once a
    machine: the jar is kept in the machine's jar store by the sources' digest and linked into
    each clone, so that every clone's driver class path is the same files, the class-data
    archive's condition for a machine-wide archive, ``sales_core.jvm_archive``)."""
    import glob
    import subprocess
    import tempfile

    target = logstore_jar()
    store = shared_jar_store()
    stored = store / target.name if store is not None else None
    if target.is_file():
        if stored is not None and not stored.is_file():
            _keep(target, stored)  # a clone's jar from before the store kept it
        return target
    if stored is not None and stored.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(stored, target)
        return target
    import pyspark

    core = cached_jars() or []
    classpath = [
        *glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-*.jar")),
        *(j for j in core if "delta-storage" in j),
    ]
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                "javac",
                "--release",
                "17",
                "-nowarn",
                "-d",
                out,
                "-cp",
                ":".join(classpath),
                *(str(source) for source in LOGSTORE_SOURCES),
            ],
            check=True,
        )
        tmp = target.with_suffix(".tmp")
        subprocess.run(["jar", "cf", str(tmp), "-C", out, "."], check=True)
        tmp.replace(target)
    if stored is not None:
        _keep(target, stored)
    return target


def _keep(jar: Path, stored: Path) -> None:
    """``jar`` linked into the machine's jar store as ``stored``."""
    try:
        stored.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(jar, stored)
    except OSError:
        pass  # a read-only home: the next clone builds or downloads it again


def _artifact(jar_name: str) -> str:
    """A jar's artifact without its version: ``jackson-databind`` for pyspark's
    ``jackson-databind-2.21.2.jar`` and for Ivy's ``com.fasterxml.jackson.core_jackson-databind-2.13.5.jar``."""
    if "_" in jar_name and "." in jar_name.split("_", 1)[0]:
        jar_name = jar_name.split("_", 1)[1]  # Ivy's organisation prefix (no "_" in a group)
    return re.sub(r"-\d[^/]*\.jar$", "", jar_name)


def spark_provides() -> frozenset[str]:
    """The artifacts pip's pyspark ships in its own ``jars`` directory."""
    import pyspark

    return frozenset(
        _artifact(jar.name) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")
    )


def driver_class_path(jars: list[str]) -> list[str]:
    """A driver's own class path (a local master's executors are its threads; a cluster's
    get the jars through ``spark.jars`` too): the pinned ``jars``
    but for the artifacts pyspark already ships (a pinned package's older Jackson, Hadoop or
    Parquet), and the project's LogStores. Given as ``spark.jars``, the same jars load in a
    child of Spark's class loader, where Spark's own version of those artifacts wins: this
    keeps that outcome, on one class path, without a copy of the jars per session
    (:func:`sales_core.session.get_spark` and ``spark-submit.sh`` in client mode)."""
    store = local_logstore_jar()
    project = [store] if store is not None else []
    provided = spark_provides()
    return [*(j for j in jars if _artifact(Path(j).name) not in provided), *project]


def appended_class_path(object_store_jars: list[str]) -> list[str]:
    """The object store's libraries (S3A, the AWS SDK) for a driver, appended to its
    class path after Spark's own jars (``SPARK_DIST_CLASSPATH``, which Spark's launcher puts
    last). They share no class with Spark's jars, and the class path before them stays the
    one the class-data archive was recorded with: the archive still covers Spark, Delta and
    Kafka's classes (a JVM only maps an archive whose class path is a prefix of its own)."""
    project = local_logstore_jar()
    return [j for j in object_store_jars if j != project]


def s3_jars() -> list[str] | None:
    """The jars a session on S3 adds: S3A, the AWS SDK and the conditional-PUT LogStore (None
    when they were never fetched)."""
    jars = cached_jars(S3_PACKAGES)
    if jars is None or not logstore_jar().is_file():
        return None
    return [*jars, str(logstore_jar())]


def _fetch_set(name: str) -> int:
    import time

    from sales_core.logs import redirect_jvm_output

    packages = PACKAGE_SETS[name]
    started = time.monotonic()
    locked = locked_jars(packages) is not None
    how = "fetching the locked jars of" if locked else "resolving"
    store = shared_jar_store() if locked else None
    where = f"{store} or Maven Central" if store is not None else "Maven Central"
    print(
        f"{how} {len(packages)} JVM packages ({name}) from {where} into {jar_cache_dir()} (once)",
        flush=True,
    )
    # Ivy's report (when Ivy resolves): a file, not the terminal
    log = None if locked else redirect_jvm_output(f"fetch-jars-{name}")
    try:
        jars = fetch(packages)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        print(
            f"could not fetch the JVM packages: {type(exc).__name__}"
            + (f": {detail}" if detail else "")
            + (f" (Ivy's report: {log})" if log else ""),
            file=sys.stderr,
        )
        return 1
    print(f"{len(jars)} jars cached in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["fetch-set"] and len(args) == 2 and args[1] in PACKAGE_SETS:
        return _fetch_set(args[1])
    if args[:1] == ["fetch"]:
        import subprocess

        fetching = [
            subprocess.Popen([sys.executable, "-m", "sales_core.packages", "fetch-set", name])
            for name, packages in PACKAGE_SETS.items()
            if cached_jars(packages) is None
        ]
        failed = [code for code in (process.wait() for process in fetching) if code]
        if failed:
            return failed[0]
        try:
            build_logstore()  # or only kept in the machine's store, when built before
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"could not build the LogStores of jvm/: {exc}", file=sys.stderr)
            return 1
        count = sum(len(cached_jars(p) or []) for p in PACKAGE_SETS.values())
        print(f"{count} jars cached in {jar_cache_dir()}")
        return 0
    if args[:1] == ["lock"]:
        LOCK_FILE.write_text(json.dumps(lock(), indent=1) + "\n")
        print(f"locked: {LOCK_FILE}")
        return 0
    if args[:1] == ["local-logstore"]:
        # spark-submit.sh: the setting that makes Delta list a local log with the project's
        # LogStore (its jar goes with ``jars``); exit 1 when the jar was not built.
        if local_logstore_jar() is None:
            return 1
        print(f"spark.delta.logStore.file.impl={LOCAL_LOGSTORE_CLASS}")
        return 0
    if args[:1] == ["class-path"]:
        # spark-submit.sh in client mode: the driver's class path; --appended: the object
        # store's jars, which go after Spark's own (SPARK_DIST_CLASSPATH, appended_class_path).
        core = cached_jars()
        extra = s3_jars() if args[1:] == ["--appended"] else None
        if core is None or (args[1:] == ["--appended"] and extra is None):
            print("jars not fetched: run `python -m sales_core.packages fetch`", file=sys.stderr)
            return 1
        print(
            ":".join(appended_class_path(extra) if extra is not None else driver_class_path(core))
        )
        return 0
    if args[:1] == ["list"]:
        print(",".join(JVM_PACKAGES))
        return 0
    if args[:1] == ["jars"]:
        # --s3: with the object-store jars (spark-submit.sh, for a lakehouse on s3a://).
        cached = cached_jars()
        if cached is not None and args[1:] == ["--s3"]:
            extra = s3_jars()
            cached = None if extra is None else [*cached, *extra]
        local_store = local_logstore_jar()
        if cached is not None and local_store is not None and local_store not in cached:
            cached = [*cached, local_store]
        if cached is None:
            print("jars not fetched: run `python -m sales_core.packages fetch`", file=sys.stderr)
            return 1
        print(",".join(cached))
        return 0
    print(
        "usage: python -m sales_core.packages fetch|lock|list|jars|class-path|local-logstore",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
