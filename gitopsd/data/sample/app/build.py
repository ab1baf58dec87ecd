#!/usr/bin/env python3
"""Build the sample app once: dist/app.tar.gz holds the app's files, byte-for-byte reproducible.

The built-in CI runs this as its `build` step and keeps dist/app.tar.gz as an artifact: every
environment then deploys these very bytes (gitopsd_artifacts), not files copied again from Git.
Stdlib only; the archive has fixed owners, modes and times, so one tree always builds one sha256.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("app.py", "launch.py", "settings.json")   # what runs on a host; settings.<env>.json are added when present


def build(source: Path, dest: Path) -> str:
    """Write dest (a .tar.gz of the app files in `source`) and return its sha256."""
    names = list(FILES) + sorted(p.name for p in source.glob("settings.*.json"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (source / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def main() -> int:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "dist" / "app.tar.gz"
    digest = build(HERE, dest)
    print(f"built {dest} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
