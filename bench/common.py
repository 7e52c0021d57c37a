"""Shared pieces of the benchmarks: machine facts, timing, synthetic master data, Delta logs.

Nothing here is imported by the pipeline; the benchmarks import the pipeline, never the reverse.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from devtools.processes import stat_fields

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

# Bump when the generator below changes: cached datasets with another tag are regenerated.
GENERATOR_VERSION = "g1"
BASE_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z
SPAN_DAYS = 90
CUSTOMERS = 100_000
PRODUCTS = 5_000
CATEGORIES = ("electronics", "clothing", "home", "garden", "sports", "books", "toys", "beauty")
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("web", "mobile", "store", "partner")


# --------------------------------------------------------------------------- machine, timing

#: (module, attribute, step label): the steps timed, in the order a micro-batch runs them.
STEPS = (
    ("speed_layer.sink", "SpeedSink.write_micro_batch", "micro-batch (all steps)"),
    ("speed_layer.sink", "_summarise", "Kafka read + parse + validate + state, counted (cached)"),
    (
        "speed_layer.sink",
        "SpeedSink._collect",
        "steady state: Kafka read + parse + validate + state, records to the driver (cached)",
    ),
    ("speed_layer.sink", "SpeedSink._quarantine", "quarantine append (only with rejects)"),
    ("speed_layer.sink", "publish_dead_letters", "dead-letter topic (only with rejects)"),
    (
        "speed_layer.sink",
        "SpeedSink._append_direct",
        "steady state: master + increments written from the driver, 2 commits",
    ),
    (
        "speed_layer.sink",
        "SpeedSink._append_master",
        "master append (other cases: with the bounded read)",
    ),
    (
        "speed_layer.sink",
        "SpeedSink._write_increments",
        "view increments (other cases: after the master append)",
    ),
    ("speed_layer.metrics", "append_metrics", "stream_metrics rows (background, off the path)"),
    ("speed_layer.job", "save_run", "run record upserts (per run, not per micro-batch)"),
)


def instrument(times: dict[str, list[float]]) -> None:
    """Wrap every step of :data:`STEPS` with a timer that appends to ``times[label]``."""
    for module_name, attribute, label in STEPS:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return _original(*args, **kwargs)
            finally:
                times[_label].append(time.monotonic() - started)

        setattr(owner, name, functools.wraps(original)(timed))


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _java_version() -> str | None:
    java = shutil.which("java") or (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if "JAVA_HOME" in os.environ else None
    )
    if not java:
        return None
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    mem_kb = _first_line("/proc/meminfo", "MemTotal")
    avail_kb = _first_line("/proc/meminfo", "MemAvailable")
    status = _git("status", "--porcelain")
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": _first_line("/proc/cpuinfo", "model name") or platform.processor(),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "mem_available_gib": round(int(avail_kb.split()[0]) / 2**20, 1) if avail_kb else None,
        "python": platform.python_version(),
        "java": _java_version(),
        "pyspark": _version("pyspark"),
        "delta-spark": _version("delta-spark"),
        "duckdb": _version("duckdb"),
        "pyarrow": _version("pyarrow"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def new_record(bench: str, args: Any, **fields: Any) -> dict[str, Any]:
    """The start of a benchmark's record: its name, when, the machine, its load and its
    arguments (``args``: an argparse namespace), then ``fields``."""
    return {
        "bench": bench,
        "at": datetime.now(timezone.utc).isoformat(),
        "machine": machine_info(),
        "load_before": load_average(),
        "args": vars(args),
        **fields,
    }


def append_result(record: dict[str, Any], out: Path = OUT) -> Path:
    """Append one benchmark's record as a JSON line to ``out/results.jsonl`` (returned)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
    return path


def parse_count(text: str) -> int:
    """An event count as people write it: 1000000, 1_000_000, 500k, 1M, 2.5M."""
    cleaned = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(cleaned[-1:], 1)
    try:
        return int(float(cleaned[:-1] if scale > 1 else cleaned) * scale)
    except ValueError:
        raise ValueError(f"not an event count: {text!r} (use e.g. 500k, 1M or 1000000)") from None


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (0..1), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int | str) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> tuple[float, float]:
    """Machine-wide busy and steal CPU seconds so far (all CPUs)."""
    with open("/proc/stat", encoding="utf-8") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


@dataclass
class CpuSample:
    wall_s: float
    own_cpu_s: float  # this process (Python + DuckDB threads) and the JVM, if any
    others_busy: float  # share of the machine's CPUs used by other processes meanwhile (0..1)
    steal: float  # share of the machine's CPUs stolen by the hypervisor meanwhile (0..1)


class CpuMeter:
    """Wall time, CPU time of this process (+ the Spark JVM), and what everyone else used."""

    def __init__(self, jvm_pid: int | None = None) -> None:
        self.jvm_pid = jvm_pid
        self.ncpu = os.cpu_count() or 1

    def _read(self) -> tuple[float, float, float, float]:
        own = _proc_cpu("self") + (_proc_cpu(self.jvm_pid) if self.jvm_pid else 0.0)
        busy, steal = _machine_busy()
        return time.perf_counter(), own, busy, steal

    @contextmanager
    def measure(self) -> Iterator[list[CpuSample]]:
        result: list[CpuSample] = []
        t0, own0, busy0, steal0 = self._read()
        yield result
        t1, own1, busy1, steal1 = self._read()
        wall = t1 - t0
        capacity = max(wall * self.ncpu, 1e-9)
        result.append(
            CpuSample(
                wall,
                own1 - own0,
                max(0.0, (busy1 - busy0) - (own1 - own0)) / capacity,
                (steal1 - steal0) / capacity,
            )
        )

    def others_busy(self, seconds: float = 2.0) -> float:
        with self.measure() as sample:
            time.sleep(seconds)
        return sample[0].others_busy

    def wait_quiet(self, max_wait_s: float, threshold: float = 0.25) -> tuple[float, float]:
        """Wait (up to ``max_wait_s``) until other processes use < ``threshold`` of the CPUs.
        Returns (seconds waited, their last measured share)."""
        start = time.perf_counter()
        share = self.others_busy()
        while share >= threshold and time.perf_counter() - start < max_wait_s:
            share = self.others_busy(5.0)
        return time.perf_counter() - start, share


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...``; ``elapsed()`` is the seconds so far / in total."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def reset_peak_rss(pid: int | str = "self") -> None:
    """Start a new peak-RSS window for process ``pid`` (Linux: ``clear_refs`` 5 resets
    ``VmHWM`` to the current RSS); nothing where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib(pid: int | str = "self") -> float:
    """The peak resident memory of process ``pid`` since its window began (MiB; 0 unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Samples:
    """Repeated measurements of one thing (seconds), with the load average at each."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    steal: list[float] = field(default_factory=list)
    load1: list[float] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)
    extra: list[dict[str, float]] = field(default_factory=list)

    def add(self, sample: CpuSample, *, warm: bool, extra: dict[str, float] | None = None) -> None:
        if warm:
            self.warmup.append(sample.wall_s)
            return
        self.seconds.append(sample.wall_s)
        self.cpu.append(sample.own_cpu_s)
        self.others.append(sample.others_busy)
        self.steal.append(sample.steal)
        self.load1.append(os.getloadavg()[0])
        if extra is not None:
            self.extra.append(extra)

    @property
    def last(self) -> float:
        return (self.seconds or self.warmup)[-1]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def median_extra(self) -> dict[str, float]:
        keys = list(dict.fromkeys(k for e in self.extra for k in e))
        return {k: statistics.median([e.get(k, 0.0) for e in self.extra]) for k in keys}

    def as_json(self) -> dict[str, Any]:
        return {
            "median_s": round(self.median, 4),
            "median_cpu_s": round(self.median_cpu, 4),
            "runs_s": [round(s, 4) for s in self.seconds],
            "cpu_s": [round(s, 4) for s in self.cpu],
            "others_busy": [round(x, 3) for x in self.others],
            "steal": [round(x, 3) for x in self.steal],
            "warmup_s": [round(s, 4) for s in self.warmup],
            "load1": [round(x, 2) for x in self.load1],
            **(
                {
                    "phases_median_s": {k: round(v, 4) for k, v in self.median_extra().items()},
                    "phases_runs_s": [{k: round(v, 3) for k, v in e.items()} for e in self.extra],
                }
                if self.extra
                else {}
            ),
        }


# --------------------------------------------------------------------------- Delta log reading


@dataclass(frozen=True)
class DataFile:
    path: str  # absolute local path
    partition_values: dict[str, str | None]
    num_records: int | None


def _local_path(table: Path, path: str) -> str:
    from urllib.parse import unquote, urlparse

    if "://" in path or path.startswith("file:"):
        return unquote(urlparse(path).path)
    return str(table / unquote(path))


def delta_active_files(table: str | os.PathLike[str]) -> list[DataFile]:
    """The data files of the latest version of a local Delta table, read from its log.

    Enough of the protocol for the tables Spark writes here: a single-part checkpoint (if
    any) plus the JSON commits after it. Deletion vectors are refused rather than ignored.
    """
    table = Path(table)
    log = table / "_delta_log"
    active: dict[str, DataFile] = {}
    start = -1
    last = log / "_last_checkpoint"
    if last.is_file():
        info = json.loads(last.read_text())
        start = int(info["version"])
        if info.get("parts"):
            raise RuntimeError(f"{table}: multi-part checkpoints are not supported by the bench")
        import pyarrow.parquet as pq

        checkpoint = pq.read_table(log / f"{start:020d}.checkpoint.parquet", columns=["add"])
        for row in checkpoint.column("add").to_pylist():
            if row is None:
                continue
            _add(table, active, row)
    for commit in sorted(log.glob("*.json")):
        if int(commit.stem) <= start:
            continue
        with commit.open(encoding="utf-8") as handle:
            for line in handle:
                action = json.loads(line)
                if "add" in action:
                    _add(table, active, action["add"])
                elif "remove" in action:
                    active.pop(_local_path(table, action["remove"]["path"]), None)
    return sorted(active.values(), key=lambda f: f.path)


def _add(table: Path, active: dict[str, DataFile], add: dict[str, Any]) -> None:
    if add.get("deletionVector"):
        raise RuntimeError(f"{table}: deletion vectors are not supported by the bench")
    stats = add.get("stats")
    records = json.loads(stats).get("numRecords") if isinstance(stats, str) and stats else None
    values = add.get("partitionValues") or {}
    if isinstance(values, list):  # a map read from a checkpoint by pyarrow
        values = dict(values)
    path = _local_path(table, add["path"])
    active[path] = DataFile(path, dict(values), records)


# --------------------------------------------------------------------------- synthetic master data


def generated_marker(table: Path) -> Path:
    return table.parent / f"_bench_generated_{table.name}.json"


def cached_master(table: Path, n: int) -> dict[str, Any] | None:
    """The generation record of a cached dataset of ``n`` events, if it is usable."""
    marker = generated_marker(table)
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    if info.get("events") != n or info.get("generator") != GENERATOR_VERSION:
        return None
    if not delta_holds(table, n):
        return None
    return info


def delta_holds(table: str | os.PathLike[str], n: int) -> bool:
    """True when the local Delta table at ``table`` holds exactly ``n`` rows, every file present."""
    files = delta_active_files(table)
    return sum(f.num_records or 0 for f in files) == n and all(
        Path(f.path).is_file() for f in files
    )


def generate_master(
    spark: Any, lakehouse: Any, n: int, *, rows_per_file: int, seed: int = 7
) -> dict[str, Any]:
    """Write ``n`` synthetic valid events as the master dataset (MASTER_SCHEMA) of ``lakehouse``.

    Deterministic (hash of the row number and ``seed``): 90 days of event times, 8 categories,
    5 regions, 4 channels, ~100k customers (1% anonymous), 5k products, quantity 1..5, amounts
    0.01..4999.99 log-uniform (so low / medium / high revenue categories all occur), 10% of the
    rows inserted by the speed layer (micro-batches of 10k events), the rest by batch epochs.
    One Delta commit; files of ``rows_per_file`` rows, like a master dataset appended by runs.
    """
    from pyspark.sql import functions as F

    from sales_core.lakehouse import MASTER_SCHEMA, ensure_master_dataset
    from sales_core.rules import MONEY

    table = Path(lakehouse.master_dataset)
    if table.exists():
        shutil.rmtree(table)
    generated_marker(table).unlink(missing_ok=True)

    def uniform(salt: int, modulus: int):  # type: ignore[no-untyped-def]
        return F.pmod(F.xxhash64(F.col("id"), F.lit(seed * 1000 + salt)), F.lit(modulus))

    def pick(salt: int, values: tuple[str, ...]):  # type: ignore[no-untyped-def]
        return F.element_at(
            F.array(*[F.lit(v) for v in values]), (uniform(salt, len(values)) + 1).cast("int")
        )

    cents = F.floor(F.pow(F.lit(500_000.0), uniform(5, 1_000_000) / F.lit(1_000_000.0)))
    amount = (cents.cast("decimal(18,0)") / F.lit(100)).cast(MONEY)
    event_time = F.timestamp_seconds(F.lit(BASE_EPOCH) + uniform(1, SPAN_DAYS * 86_400))
    speed = uniform(8, 10) == 0
    files = max(1, -(-n // rows_per_file))
    events = (
        spark.range(0, n, 1, files)
        .withColumns(
            {
                "event_id": F.format_string("evt-%012d", F.col("id")),
                "order_id": F.format_string("ord-%010d", F.floor(F.col("id") / 3)),
                "product_id": F.format_string("prd-%05d", uniform(7, PRODUCTS)),
                "customer_id": F.when(uniform(3, 100) == 0, F.lit("anonymous")).otherwise(
                    F.format_string("cus-%06d", uniform(4, CUSTOMERS))
                ),
                "category": pick(2, CATEGORIES),
                "region": pick(6, REGIONS),
                "channel": pick(9, CHANNELS),
                "quantity": (uniform(10, 5) + 1).cast("int"),
                "amount": amount,
                "event_time": event_time,
            }
        )
        .withColumns(
            {
                "event_date": F.to_date(F.col("event_time")),
                "event_hour": F.date_trunc("hour", F.col("event_time")),
                "month": F.date_format(F.col("event_time"), "yyyy-MM"),
                "revenue_category": F.when(F.col("amount") > 1000, "high")
                .when(F.col("amount") > 100, "medium")
                .otherwise("low"),
                "source": F.when(speed, F.lit("kafka")).otherwise(F.lit("file")),
                "source_name": F.when(speed, F.lit("sales-events")).otherwise(
                    F.format_string("landing/sales-%04d.jsonl", F.spark_partition_id())
                ),
                "source_partition": F.when(speed, uniform(11, 3).cast("int")),
                "source_offset": F.col("id"),
                "source_key": F.when(speed, F.format_string("evt-%012d", F.col("id"))),
                "ingest_layer": F.when(speed, F.lit("speed")).otherwise(F.lit("batch")),
                "ingest_run": F.when(speed, F.lit("speed")).otherwise(
                    F.format_string("batch-%08d", F.floor(F.col("id") / 1_000_000) + 1)
                ),
                "ingest_batch": F.when(speed, F.floor(F.col("id") / 10_000).cast("long")),
                "ingested_at": F.col("event_time") + F.expr("INTERVAL 6 HOURS"),
            }
        )
        .select(*[F.col(f.name).cast(f.dataType) for f in MASTER_SCHEMA.fields])
    )
    ensure_master_dataset(spark, lakehouse)
    with stopwatch() as elapsed:
        events.write.format("delta").mode("append").save(lakehouse.master_dataset)
    written = delta_active_files(table)
    info = {
        "events": n,
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "files": len(written),
        "bytes": sum(Path(f.path).stat().st_size for f in written),
        "generate_s": round(elapsed(), 2),
    }
    if sum(f.num_records or 0 for f in written) != n:
        raise RuntimeError(
            f"generated {sum(f.num_records or 0 for f in written)} events, expected {n}"
        )
    generated_marker(table).write_text(json.dumps(info) + "\n")
    return info
