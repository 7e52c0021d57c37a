"""The lakehouse on an S3-compatible object store: one place for the URLs and settings.

Spark reaches S3 through Hadoop's S3A (``s3a://bucket/key``), delta-rs through its own client
(``s3://bucket/key``); both take their endpoint, region and addressing style from
``[lakehouse.s3]`` and their credentials from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, or any other source of each client's standard
provider chain): nothing here ever holds a credential, so no configuration, log line or run
record can show one.

Commits: Spark's ``_delta_log`` writes to ``s3a://`` go through
:data:`sales_core.packages.LOGSTORE_CLASS`, a conditional PUT (``If-None-Match: *``), as
delta-rs 1.x commits on S3: every writer of a table, Spark or delta-rs, in any process, is
refused a version another one took, and retries after Delta's conflict check.
"""

from __future__ import annotations

from sales_core.config import Config, ConfigError, S3Conf
from sales_core.packages import LOGSTORE_CLASS

SPARK_SCHEME = "s3a://"
DELTA_RS_SCHEME = "s3://"
_SCHEMES = (SPARK_SCHEME, DELTA_RS_SCHEME, "s3n://")


def is_s3(location: str) -> bool:
    """Whether ``location`` is on S3 (``s3a://``, ``s3://`` or ``s3n://``)."""
    return location.startswith(_SCHEMES)


def spark_uri(location: str) -> str:
    """``location`` as Spark (S3A) names it: ``s3a://`` for any S3 URL, others unchanged."""
    for scheme in _SCHEMES:
        if location.startswith(scheme):
            return SPARK_SCHEME + location[len(scheme) :]
    return location


def delta_rs_uri(location: str) -> str:
    """``location`` as delta-rs names it: ``s3://`` for any S3 URL, others unchanged."""
    for scheme in _SCHEMES:
        if location.startswith(scheme):
            return DELTA_RS_SCHEME + location[len(scheme) :]
    return location


def check_s3(s3: S3Conf) -> None:
    """Refuse settings that cannot work, in one line naming the key."""
    endpoint = s3.endpoint.strip()
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"configuration key 'lakehouse.s3.endpoint' must be an http:// or https:// URL "
            f"(or empty for AWS), got {endpoint!r}"
        )
    if not s3.region.strip():
        raise ConfigError("configuration key 'lakehouse.s3.region' must not be empty")


def storage_options(s3: S3Conf, location: str) -> dict[str, str] | None:
    """delta-rs's storage options for ``location`` (None for a location not on S3).

    Credentials are not among them: delta-rs reads them from the environment itself.
    """
    if not is_s3(location):
        return None
    check_s3(s3)
    options = {"AWS_REGION": s3.region.strip()}
    endpoint = s3.endpoint.strip()
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if s3.path_style:
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    # delta-rs 1.x commits with a conditional PUT on S3 by default; said here so that a
    # change of default cannot make its commits unsafe next to Spark's.
    options["conditional_put"] = "etag"
    return options


def spark_settings(s3: S3Conf) -> dict[str, str]:
    """Spark settings for S3A and Delta's commits on S3, from ``[lakehouse.s3]``.

    S3A's default credential chain reads the environment (then the instance profile), so no
    credential is ever a Spark setting.
    """
    check_s3(s3)
    endpoint = s3.endpoint.strip()
    settings = {
        "spark.hadoop.fs.s3a.endpoint.region": s3.region.strip(),
        "spark.hadoop.fs.s3a.path.style.access": "true" if s3.path_style else "false",
        "spark.hadoop.fs.s3a.create.conditional.enabled": "true",
        "spark.delta.logStore.s3a.impl": LOGSTORE_CLASS,
        "spark.delta.logStore.s3.impl": LOGSTORE_CLASS,
    }
    if endpoint:
        settings["spark.hadoop.fs.s3a.endpoint"] = endpoint
        settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = (
            "true" if endpoint.startswith("https://") else "false"
        )
    return settings


def session_s3(config: Config) -> S3Conf | None:
    """``[lakehouse.s3]`` when the lakehouse or the landing zone is on S3 (a Spark session
    then needs S3A), else None."""
    if is_s3(config.lakehouse.root) or is_s3(config.sources.files.landing):
        return config.lakehouse.s3
    return None


def delta_rs_table(s3: S3Conf, location: str) -> tuple[str, dict[str, str] | None]:
    """What delta-rs needs to open the table or root at ``location``: its URL and storage
    options (the one function the speed layer's appends, the alerts log and the serving
    layer's readers use)."""
    return delta_rs_uri(location), storage_options(s3, location)


def main(argv: list[str] | None = None) -> int:
    """``python -m sales_core.object_store spark-conf``: the Spark settings (``key=value``, one
    a line) a job on this configuration needs for S3, none off S3 (``spark-submit.sh``)."""
    import sys

    from sales_core.config import load_config

    args = sys.argv[1:] if argv is None else argv
    if args != ["spark-conf"]:
        print("usage: python -m sales_core.object_store spark-conf", file=sys.stderr)
        return 2
    try:
        s3 = session_s3(load_config())
        settings = spark_settings(s3) if s3 is not None else {}
    except ConfigError as exc:
        print(f"spark-submit.sh: {exc}", file=sys.stderr)
        return 2
    for key, value in settings.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
