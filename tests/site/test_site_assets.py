"""tools/fetch_site_assets.py: pinned, verified, atomic, and safe with hostile tarballs.

Offline: every tarball here is made by the test, and "downloads" use file:// URLs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import re
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fsa(tmp_path, monkeypatch):
    """The fetch script as a module, writing under tmp_path instead of _build/."""
    spec = importlib.util.spec_from_file_location(
        "fetch_site_assets", REPO / "tools" / "fetch_site_assets.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    assets = tmp_path / "site_assets"
    monkeypatch.setattr(module, "ASSETS_DIR", assets)
    monkeypatch.setattr(module, "DOWNLOADS_DIR", assets / "downloads")
    monkeypatch.setattr(module, "EXTRA_DIR", assets / "html")
    monkeypatch.setattr(module, "STATIC_DIR", assets / "html" / "_static")
    return module


def make_tarball(
    path: Path,
    files: dict[str, bytes],
    links: dict[str, str] | None = None,
) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = {
    "package/package.json": b"{}",
    "package/es5/tex-mml-chtml.js": b"// mathjax",
    "package/es5/tex-svg.js": b"// not needed",
    "package/es5/latest.js": b"// would load from a CDN",
    "package/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff": b"font",
    "package/es5/input/tex/extensions/ams.js": b"// ams",
}


def test_pin_is_the_registry_tarball(fsa) -> None:
    asset = fsa.MATHJAX
    assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256)
    assert asset.url("https://registry.npmjs.org/") == (
        "https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz"
    )
    assert "latest.js" in asset.skip


def test_install_unpacks_what_the_site_needs(fsa, tmp_path) -> None:
    tarball = tmp_path / "mathjax.tgz"
    asset = dataclasses.replace(fsa.MATHJAX, sha256=make_tarball(tarball, GOOD))
    fsa.install(asset, tarball, "unused")
    out = fsa.STATIC_DIR / "mathjax"
    assert (out / "tex-mml-chtml.js").read_bytes() == b"// mathjax"
    assert (out / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
    assert not (out / "tex-svg.js").exists() and not (out / "latest.js").exists()
    assert not (out / "package.json").exists()
    assert fsa.is_current(asset)
    # No staging folders are left behind.
    assert [p.name for p in fsa.STATIC_DIR.iterdir()] == ["mathjax"]


def test_install_is_skipped_when_current_and_redone_when_damaged(fsa, tmp_path) -> None:
    tarball = tmp_path / "mathjax.tgz"
    asset = dataclasses.replace(fsa.MATHJAX, sha256=make_tarball(tarball, GOOD))
    fsa.install(asset, tarball, "unused")
    tarball.unlink()
    fsa.install(asset, None, "unused")  # current: nothing to fetch
    (fsa.STATIC_DIR / "mathjax" / "tex-mml-chtml.js").unlink()
    assert not fsa.is_current(asset)


def test_wrong_checksum_is_refused(fsa, tmp_path) -> None:
    tarball = tmp_path / "mathjax.tgz"
    make_tarball(tarball, GOOD)
    asset = dataclasses.replace(fsa.MATHJAX, sha256="0" * 64)
    with pytest.raises(SystemExit, match="sha256"):
        fsa.install(asset, tarball, "unused")
    assert not (fsa.STATIC_DIR / "mathjax").exists()


def test_download_is_verified_and_atomic(fsa, tmp_path) -> None:
    source = tmp_path / "registry" / "mathjax" / "-" / "mathjax-3.2.2.tgz"
    source.parent.mkdir(parents=True)
    digest = make_tarball(source, GOOD)
    asset = dataclasses.replace(fsa.MATHJAX, sha256=digest)
    registry = (tmp_path / "registry").as_uri()
    fsa.install(asset, None, registry)
    assert (fsa.DOWNLOADS_DIR / "mathjax-3.2.2.tgz").read_bytes() == source.read_bytes()

    bad = dataclasses.replace(fsa.MATHJAX, sha256="f" * 64, version="3.2.2")
    target = tmp_path / "elsewhere" / "x.tgz"
    with pytest.raises(SystemExit, match="refusing"):
        fsa.download(asset.url(registry), target, bad.sha256)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left


@pytest.mark.parametrize(
    "hostile",
    [
        {"files": {"package/es5/../../evil.js": b"x"}},
        {"files": {}, "links": {"package/es5/link.js": "/etc/passwd"}},
    ],
)
def test_unsafe_members_are_refused(fsa, tmp_path, hostile) -> None:
    tarball = tmp_path / "hostile.tgz"
    digest = make_tarball(tarball, {**GOOD, **hostile["files"]}, hostile.get("links"))
    asset = dataclasses.replace(fsa.MATHJAX, sha256=digest)
    with pytest.raises(SystemExit, match=r"unsafe path|link or device"):
        fsa.install(asset, tarball, "unused")
    assert not (tmp_path / "evil.js").exists()
    assert not (fsa.STATIC_DIR / "mathjax").exists()


def test_check_reports_missing_assets(fsa) -> None:
    assert fsa.main(["--check"]) == 1


def test_bad_tarball_argument(fsa) -> None:
    with pytest.raises(SystemExit, match="NAME=PATH"):
        fsa.main(["--tarball", "nonsense"])
