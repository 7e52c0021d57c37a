"""A real S3-compatible object store (MinIO) for development and the tests.

MinIO, built from source with Go's own client (``go install``, the Go module proxy) into
``.cache/minio`` once; afterwards starting a server never touches the network. Chosen over
s3proxy and moto's server mode as the closest to S3 of the three: a server written to S3's
API (signature V4, path-style and virtual-host requests, strongly consistent listing) that
implements conditional writes as S3 does, ``PUT`` with ``If-None-Match: *`` answering
``412 Precondition Failed`` when the key exists, which delta-rs 1.x and the project's
LogStore rely on for safe commits (:func:`conditional_put` checks it on a live server).

Each server gets fresh random root credentials; they live only in the returned
:class:`ObjectStore` and in the environment of the processes given :meth:`ObjectStore.env`::

    store = object_store.start(tmp_path / "minio")
    object_store.create_bucket(store, "lakehouse")
    ...
    object_store.stop(store)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from devtools.processes import (
    CACHE_ROOT,
    ServiceError,
    file_lock,
    free_port,
    log_tail,
    stop_group,
)

# MinIO's server, pinned (a pseudo-version of github.com/minio/minio: its release tags are
# not semantic versions, so Go's proxy names commits).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"  # master of 2026-02-12
MINIO_HOME = CACHE_ROOT / "minio"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


def binary() -> Path:
    """Where the built server lives."""
    return MINIO_HOME / "bin" / "minio"


def ensure_installed() -> Path:
    """Build MinIO's server into ``.cache/minio`` (once a checkout).

    The build goes through Go's own module and build caches (``go env GOMODCACHE GOCACHE``,
    under the user's home): the first build on a machine downloads the modules and compiles
    them (5 minutes of CPU; 10 on two busy cores, measured); another checkout on the same
    machine (a CI run's fresh clone) then only links the cached packages, as ``go install``
    does for any Go program."""
    target = binary()
    if target.is_file():
        return target
    with file_lock(MINIO_HOME / ".install.lock"):
        if target.is_file():
            return target
        env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "0"}
        try:
            subprocess.run(
                # -s -w: no symbol table or DWARF (a test server is not debugged), a shorter link
                ["go", "install", "-ldflags=-s -w", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
        except FileNotFoundError:
            raise ServiceError("'go' not found on PATH: MinIO is built with Go") from None
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
            raise ServiceError(f"go install of MinIO failed: {tail[0]}") from None
    return target


@dataclass
class ObjectStore:
    """A running MinIO server and its root credentials (never printed)."""

    endpoint: str  # http://127.0.0.1:<port>
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    data_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def env(self) -> dict[str, str]:
        """The environment a client of this store needs (AWS's standard variables)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }


def start(data_dir: Path, *, port: int | None = None) -> ObjectStore:
    """Start a MinIO server on 127.0.0.1 (a free port unless given) over ``data_dir``;
    returns once it answers its health check."""
    server = ensure_installed()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    access_key, secret_key = "lambda" + secrets.token_hex(6), secrets.token_hex(20)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                str(server),
                "server",
                str(data_dir),
                "--address",
                f"127.0.0.1:{port}",
                "--console-address",
                f"127.0.0.1:{free_port()}",
                "--quiet",
            ],
            env={
                **os.environ,
                "MINIO_ROOT_USER": access_key,
                "MINIO_ROOT_PASSWORD": secret_key,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_REGION": REGION,
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    store = ObjectStore(f"http://127.0.0.1:{port}", access_key, secret_key, data_dir, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"MinIO exited at start: {log_tail(log_path, 3)}")
        try:
            with urllib.request.urlopen(f"{store.endpoint}/minio/health/ready", timeout=2):
                return store
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop(store)
    raise ServiceError(f"MinIO did not answer within {START_TIMEOUT_S:.0f} s")


def stop(store: ObjectStore) -> None:
    """Stop the server (its data directory stays)."""
    stop_group(store.process, term_wait=10.0)


# ------------------------------------------------------------------ signed requests


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def request(
    store: ObjectStore,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> int:
    """One S3 request signed with AWS Signature V4 (path-style); the HTTP status."""
    return exchange(store, method, path, body, headers)[0]


def exchange(
    store: ObjectStore,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One S3 request signed with AWS Signature V4 (path-style): the HTTP status and body."""
    url = urllib.parse.urlsplit(store.endpoint)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items())
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    signed = {
        **{k.lower(): v for k, v in (headers or {}).items()},
        "host": url.netloc,
        "x-amz-content-sha256": payload,
        "x-amz-date": stamp,
    }
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(path),
            canonical_query,
            *(f"{n}:{signed[n]}" for n in names),
            "",
            ";".join(names),
            payload,
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(("AWS4" + store.secret_key).encode(), day)
    for part in (REGION, "s3", "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={store.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    signed.pop("host")
    target = store.endpoint + urllib.parse.quote(path)
    if canonical_query:
        target += "?" + canonical_query
    req = urllib.request.Request(target, data=body, method=method, headers=signed)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def list_keys(store: ObjectStore, bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix`` (ListObjectsV2, page by page)."""
    keys: list[str] = []
    token = ""
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        status, body = exchange(store, "GET", f"/{bucket}", query=query)
        if status != 200:
            raise ServiceError(f"could not list {bucket}/{prefix}: HTTP {status}")
        root = ElementTree.fromstring(body)  # any namespace: {*}
        keys += [c.findtext("{*}Key") or "" for c in root.findall("{*}Contents")]
        token = root.findtext("{*}NextContinuationToken") or ""
        if not token:
            return keys


def get_object(store: ObjectStore, bucket: str, key: str) -> bytes:
    """The bytes of one object."""
    status, body = exchange(store, "GET", f"/{bucket}/{key}")
    if status != 200:
        raise ServiceError(f"could not read {bucket}/{key}: HTTP {status}")
    return body


def upload_tree(store: ObjectStore, local: Path, bucket: str, prefix: str) -> dict[str, int]:
    """Copy every file under ``local`` to ``bucket/prefix/`` with the same relative names
    (hidden files, such as Hadoop's ``.crc`` companions, left out); returns key -> bytes."""
    copied: dict[str, int] = {}
    for path in sorted(local.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        key = f"{prefix}/{path.relative_to(local).as_posix()}"
        body = path.read_bytes()
        status = request(store, "PUT", f"/{bucket}/{key}", body)
        if status != 200:
            raise ServiceError(f"could not upload {bucket}/{key}: HTTP {status}")
        copied[key] = len(body)
    return copied


def create_bucket(store: ObjectStore, bucket: str) -> None:
    """Create ``bucket`` (an existing one of the same owner is fine)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (status := request(store, "PUT", f"/{bucket}")) == 503 and time.monotonic() < deadline:
        time.sleep(0.5)  # a server still initialising its drive
    if status not in (200, 409):
        raise ServiceError(f"could not create bucket {bucket}: HTTP {status}")


def conditional_put(store: ObjectStore, bucket: str, key: str, body: bytes) -> int:
    """``PUT`` with ``If-None-Match: *``: 200 when it created the key, 412 when it existed."""
    return request(store, "PUT", f"/{bucket}/{key}", body, {"If-None-Match": "*"})
