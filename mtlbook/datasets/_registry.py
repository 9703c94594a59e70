"""Reading and checking the dataset registry (``data/datasets.toml``)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REGISTRY_ENV = "MTLBOOK_REGISTRY"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SOURCE_KINDS = ("url", "wheel", "manual")


class RegistryError(ValueError):
    """The dataset registry is missing or malformed."""


@dataclass(frozen=True)
class Source:
    """One place a file can come from.

    ``sha256`` is the hash of the bytes this source delivers (``member_sha256`` for a wheel);
    ``None`` means the source has no hash of its own and is checked against the file's hashes.
    A ``manual`` source is never downloaded: its ``instructions`` tell the reader how to obtain
    the file (for example from a site that needs a login).
    """

    kind: str
    sha256: str | None
    url: str | None = None
    package: str | None = None
    version: str | None = None
    wheel: str | None = None
    wheel_sha256: str | None = None
    member: str | None = None
    instructions: str = ""
    note: str = ""

    def describe(self) -> str:
        """A one-line human description, used in error messages."""
        if self.kind == "url":
            return f"url {self.url}"
        if self.kind == "manual":
            return f"manual download: {self.instructions}"
        return f"wheel {self.package}=={self.version} ({self.wheel}) member {self.member}"


@dataclass(frozen=True)
class FileEntry:
    """One raw file of a dataset: its name in the cache, its hashes and its sources.

    A file is verified by ``sha256`` when it is known, else by the ``md5`` its publisher lists.
    A file with neither has ``unverified`` set to the reason; it is used only when the reader
    trusts it explicitly, and its sha256 is then recorded on first use and checked afterwards.
    """

    name: str
    sha256: str | None
    sources: tuple[Source, ...]
    size: int | None = None
    md5: str | None = None
    unverified: str = ""

    @property
    def accepted_sha256(self) -> frozenset[str]:
        """Every sha256 accepted for this file (the canonical one and those of its sources)."""
        own = {self.sha256} if self.sha256 is not None else set()
        return frozenset(own | {s.sha256 for s in self.sources if s.sha256})

    @property
    def has_hash(self) -> bool:
        """Whether the registry knows a published hash (sha256 or md5) of this file."""
        return bool(self.accepted_sha256 or self.md5)

    def describe_hash(self) -> str:
        """How the file is checked, for error messages."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.md5:
            return f"md5 {self.md5}"
        return f"no published hash ({self.unverified})"


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of the registry."""

    name: str
    description: str
    licence: str
    citation: str
    construction: str
    files: tuple[FileEntry, ...]
    homepage: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def default_registry_path() -> Path:
    """Where the registry is read from when no ``registry`` argument is given.

    Order: the environment variable ``MTLBOOK_REGISTRY``; ``data/datasets.toml`` of the
    source tree the package was imported from; ``<sys.prefix>/share/mtlbook/datasets.toml``
    (an installed copy).

    Raises:
        RegistryError: if none of them exists.
    """
    env = os.environ.get(REGISTRY_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise RegistryError(f"{REGISTRY_ENV}={env!r} does not name an existing file")
        return path
    candidates = [
        Path(__file__).resolve().parents[2] / "data" / "datasets.toml",
        Path(sys.prefix) / "share" / "mtlbook" / "datasets.toml",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise RegistryError(
        "the dataset registry datasets.toml was not found; looked at "
        + ", ".join(str(p) for p in candidates)
        + f". Set {REGISTRY_ENV} to its path or pass registry=..."
    )


def _need(table: Mapping[str, Any], key: str, where: str, kind: type = str) -> Any:
    if key not in table:
        raise RegistryError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind):
        raise RegistryError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _hash(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise RegistryError(f"{where}: expected a lowercase hex sha256, got {value!r}")
    return value


def _md5(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MD5.match(value):
        raise RegistryError(f"{where}: expected a lowercase hex md5, got {value!r}")
    return value


_FILE_KEYS = frozenset({"sha256", "md5", "unverified", "size", "sources", "hash_source", "note"})
_SOURCE_KEYS = {
    "url": frozenset({"kind", "url", "sha256", "note"}),
    "wheel": frozenset(
        {"kind", "package", "version", "wheel", "wheel_sha256", "member", "member_sha256", "note"}
    ),
    "manual": frozenset({"kind", "instructions", "note"}),
}


def _no_unknown_keys(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")


def _parse_source(raw: Mapping[str, Any], where: str) -> Source:
    kind = _need(raw, "kind", where)
    if kind not in _SOURCE_KINDS:
        raise RegistryError(f"{where}: unknown source kind {kind!r}; expected {_SOURCE_KINDS}")
    _no_unknown_keys(raw, _SOURCE_KEYS[kind], where)
    note = str(raw.get("note", ""))
    if kind == "url":
        sha = raw.get("sha256")
        return Source(
            kind="url",
            url=_need(raw, "url", where),
            sha256=None if sha is None else _hash(sha, f"{where}.sha256"),
            note=note,
        )
    if kind == "manual":
        return Source(
            kind="manual", sha256=None, instructions=_need(raw, "instructions", where), note=note
        )
    return Source(
        kind="wheel",
        package=_need(raw, "package", where),
        version=_need(raw, "version", where),
        wheel=_need(raw, "wheel", where),
        wheel_sha256=_hash(_need(raw, "wheel_sha256", where), f"{where}.wheel_sha256"),
        member=_need(raw, "member", where),
        sha256=_hash(_need(raw, "member_sha256", where), f"{where}.member_sha256"),
        note=note,
    )


def _parse_file(
    name: str, table: Mapping[str, Any], sources: tuple[Source, ...], where: str
) -> FileEntry:
    _no_unknown_keys(table, _FILE_KEYS, where)
    sha = table.get("sha256")
    md5 = table.get("md5")
    reason = table.get("unverified", "")
    if not isinstance(reason, str):
        raise RegistryError(f"{where}: 'unverified' must be a string (the reason), got {reason!r}")
    if sha is None and md5 is None and not reason.strip():
        raise RegistryError(
            f"{where}: give 'sha256', 'md5' or, when no hash is published, "
            "'unverified' with the reason"
        )
    if (sha is not None or md5 is not None) and reason:
        raise RegistryError(f"{where}: a file with a hash cannot also be 'unverified'")
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise RegistryError(f"{where}: 'size' must be a positive integer, got {size!r}")
    return FileEntry(
        name=name,
        sha256=None if sha is None else _hash(sha, f"{where}.sha256"),
        md5=None if md5 is None else _md5(md5, f"{where}.md5"),
        unverified=reason.strip(),
        sources=sources,
        size=size,
    )


def parse_registry(raw: Mapping[str, Any]) -> dict[str, DatasetEntry]:
    """Check a parsed registry and turn it into :class:`DatasetEntry` objects.

    Raises:
        RegistryError: naming the offending entry and key.
    """
    datasets = raw.get("datasets")
    if not isinstance(datasets, Mapping) or not datasets:
        raise RegistryError("registry: expected a non-empty [datasets] table")
    out: dict[str, DatasetEntry] = {}
    for name, table in datasets.items():
        where = f"datasets.{name}"
        if not isinstance(table, Mapping):
            raise RegistryError(f"{where}: expected a table")
        files_raw = _need(table, "files", where, Mapping)
        files = []
        for fname, ftable in files_raw.items():
            fwhere = f"{where}.files.{fname}"
            if "/" in fname or "\\" in fname or fname in ("", ".", ".."):
                raise RegistryError(f"{fwhere}: a file name must be a plain name")
            sources_raw = _need(ftable, "sources", fwhere, list)
            sources = tuple(
                _parse_source(s, f"{fwhere}.sources[{i}]") for i, s in enumerate(sources_raw)
            )
            files.append(_parse_file(fname, ftable, sources, fwhere))
        known = {"description", "licence", "citation", "construction", "homepage", "files"}
        out[name] = DatasetEntry(
            name=name,
            description=_need(table, "description", where),
            licence=_need(table, "licence", where),
            citation=_need(table, "citation", where),
            construction=str(table.get("construction", "")).strip(),
            homepage=str(table.get("homepage", "")),
            files=tuple(files),
            extra={k: v for k, v in table.items() if k not in known},
        )
    return out


def read_registry(
    registry: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> dict[str, DatasetEntry]:
    """Read the registry from ``registry`` (a path, an already parsed mapping or ``None``).

    Example:
        >>> entries = read_registry()          # doctest: +SKIP
        >>> entries["adult"].licence           # doctest: +SKIP
        'CC BY 4.0 (UCI Machine Learning Repository)'
    """
    if registry is None:
        registry = default_registry_path()
    if isinstance(registry, Mapping):
        return parse_registry(registry)
    path = Path(registry)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as err:
        raise RegistryError(f"registry file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise RegistryError(f"registry file {path} is not valid TOML: {err}") from err
    return parse_registry(raw)
