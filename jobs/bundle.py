"""The project as one zip for ``spark-submit --py-files``: what executors and a cluster-mode
driver import.

``python -m jobs.bundle [DEST_DIR]`` prints the archive's path. The name carries a hash of
the content, so a submission never rewrites a file that a running application (a speed job
started earlier, say) is still serving to its executors, and an unchanged checkout reuses
the archive it built before. The ``conf/`` layers travel inside it: the configuration loader
reads them from the zip when that is where the code was imported from.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What runs on a cluster. Not devtools/ (local services, the data generator): developers only.
PACKAGES = ("sales_core", "batch_layer", "speed_layer", "serving_layer", "jobs")
DATA_DIRS = ("conf",)
# A fixed timestamp keeps the archive's bytes (and so its name) a function of the content.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _members(root: Path) -> list[tuple[str, Path]]:
    members = []
    for top in PACKAGES + DATA_DIRS:
        base = root / top
        for path in sorted(base.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            if top in PACKAGES and path.suffix != ".py":
                continue
            members.append((path.relative_to(root).as_posix(), path))
    return members


def build_archive(dest_dir: Path, root: Path = PROJECT_ROOT) -> Path:
    """Write (or reuse) ``dest_dir/lambda_sales-<hash>.zip`` and return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    members = _members(root)
    digest = hashlib.sha256()
    for name, path in members:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    archive = dest_dir / f"lambda_sales-{digest.hexdigest()[:16]}.zip"
    if archive.is_file():
        return archive
    handle, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".zip.tmp")
    os.close(handle)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    os.replace(tmp, archive)  # atomic: a concurrent submission sees the whole file or none
    return archive


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dest = Path(args[0]) if args else PROJECT_ROOT / ".cache" / "dist"
    print(build_archive(dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
