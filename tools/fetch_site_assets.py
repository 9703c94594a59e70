"""Fetch the third-party JavaScript that the website serves itself, pinned and verified.

The built site loads nothing from a CDN: MathJax is served from the site's own ``_static``
folder. This script brings it in from the npm registry at build time (it is not committed):

1. download the pinned tarball (or reuse one already downloaded) and check its sha256;
2. unpack the files the site needs into ``_build/site_assets/html/_static/<name>/``;
3. write a stamp (``_build/site_assets/<name>.sha256``) holding the tarball's sha256, so
   that later runs return at once.

``_config.yml`` lists ``_build/site_assets/html`` in ``html_extra_path``, so Sphinx copies
its contents into ``_build/html`` (``_static/mathjax/...``); ``mathjax_path`` points there.
``tools/build_book.sh`` runs this script before every build.

Usage::

    python tools/fetch_site_assets.py                 # fetch what is missing
    python tools/fetch_site_assets.py --check         # exit 1 if anything is missing
    python tools/fetch_site_assets.py --tarball mathjax=/path/to/mathjax-3.2.2.tgz
                                                      # use a local copy (still verified)

Environment: ``MTLBOOK_NPM_REGISTRY`` replaces ``https://registry.npmjs.org`` (a mirror);
the usual ``https_proxy`` variables are honoured. Downloads and unpacked folders are
written under temporary names and renamed into place only once complete and verified.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = ROOT / "_build" / "site_assets"
DOWNLOADS_DIR = ASSETS_DIR / "downloads"
# html_extra_path in _config.yml: Sphinx copies the contents of this folder into _build/html.
EXTRA_DIR = ASSETS_DIR / "html"
STATIC_DIR = EXTRA_DIR / "_static"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
TIMEOUT_S = 60
CHUNK = 1 << 16


@dataclass(frozen=True)
class Asset:
    """One npm package unpacked into ``_static/<name>``.

    Attributes:
        name: folder under ``_static`` (and the key of ``--tarball``).
        package: npm package name.
        version: pinned version.
        sha256: hex sha256 of the registry tarball.
        prefix: folder inside the tarball whose contents are unpacked.
        skip: file names directly under ``prefix`` that the site does not need.
        required: files (relative to ``prefix``) that must exist after unpacking.
    """

    name: str
    package: str
    version: str
    sha256: str
    prefix: str
    skip: frozenset[str]
    required: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"{self.package.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.package}/-/{self.filename}"


# MathJax 3.2.2, the "es5" folder of the npm package (the packaged components). The site
# uses the combined component tex-mml-chtml.js (Sphinx's default choice); the other
# combined components are left out. Everything it may load later (fonts, TeX extensions,
# accessibility and menu components, the speech-rule engine) stays, under the same layout,
# so that MathJax finds it relative to its own script.
# sha256 of https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz; the file also matches
# the registry's published integrity sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/
# O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==.
MATHJAX = Asset(
    name="mathjax",
    package="mathjax",
    version="3.2.2",
    sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
    prefix="package/es5/",
    skip=frozenset(
        {
            "mml-chtml.js",
            "mml-svg.js",
            "tex-chtml.js",
            "tex-chtml-full.js",
            "tex-chtml-full-speech.js",
            "tex-svg.js",
            "tex-svg-full.js",
            "tex-mml-svg.js",
            "node-main.js",
            "latest.js",  # would load MathJax from a CDN
        }
    ),
    required=(
        "tex-mml-chtml.js",
        "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "input/tex/extensions/ams.js",
    ),
)

ASSETS = (MATHJAX,)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, expected_sha256: str) -> None:
    """Download ``url`` to ``target`` atomically, failing unless the sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "mtlbook-site-assets"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
            for block in iter(lambda: r.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise SystemExit(
                f"error: {url} has sha256 {actual}, expected {expected_sha256}; refusing to use it"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates it private; it is a public package
        os.replace(tmp, target)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SystemExit(f"error: could not download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def tarball_for(asset: Asset, local: Path | None, registry: str) -> Path:
    """Return a verified tarball of ``asset``: a local copy, the cached one, or a download."""
    if local is not None:
        if not local.is_file():
            raise SystemExit(f"error: --tarball {asset.name}={local}: no such file")
        actual = sha256_of(local)
        if actual != asset.sha256:
            raise SystemExit(
                f"error: --tarball {asset.name}={local} has sha256 {actual}, "
                f"expected {asset.sha256} ({asset.package} {asset.version})"
            )
        return local
    cached = DOWNLOADS_DIR / asset.filename
    if cached.is_file() and sha256_of(cached) == asset.sha256:
        return cached
    url = asset.url(registry)
    print(f"[site-assets] downloading {url}", file=sys.stderr)
    download(url, cached, asset.sha256)
    return cached


def unpack(asset: Asset, tarball: Path, dest: Path) -> int:
    """Unpack the files under ``asset.prefix`` into ``dest`` (a new folder); return a count."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.name.startswith(asset.prefix):
                continue
            rel = PurePosixPath(member.name[len(asset.prefix) :])
            if not rel.parts or (len(rel.parts) == 1 and rel.name in asset.skip):
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise SystemExit(f"error: {tarball} holds an unsafe path: {member.name}")
            if member.isdir():
                continue
            if not member.isfile():
                raise SystemExit(f"error: {tarball} holds a link or device: {member.name}")
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise SystemExit(f"error: cannot read {member.name} from {tarball}")
            with source, out.open("wb") as handle:
                shutil.copyfileobj(source, handle)
            count += 1
    missing = [name for name in asset.required if not (dest / name).is_file()]
    if missing:
        raise SystemExit(f"error: {tarball} lacks {missing} under {asset.prefix}")
    return count


def stamp_of(asset: Asset) -> Path:
    return ASSETS_DIR / f"{asset.name}.sha256"


def is_current(asset: Asset) -> bool:
    stamp = stamp_of(asset)
    return (
        stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == asset.sha256
        and all((STATIC_DIR / asset.name / name).is_file() for name in asset.required)
    )


def install(asset: Asset, local: Path | None, registry: str) -> None:
    """Put ``asset`` into ``_build/site_assets/html/_static/<name>`` unless it is there."""
    if is_current(asset):
        print(f"[site-assets] {asset.package} {asset.version}: up to date", file=sys.stderr)
        return
    tarball = tarball_for(asset, local, registry)
    STATIC_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=STATIC_DIR))
    final = STATIC_DIR / asset.name
    try:
        count = unpack(asset, tarball, staging)
        stamp_of(asset).unlink(missing_ok=True)
        if final.exists():
            # Only this script writes here (under _build/); an outdated copy is replaced.
            shutil.rmtree(final)
        os.replace(staging, final)
        stamp_of(asset).write_text(asset.sha256 + "\n", encoding="utf-8")
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    shown = final.relative_to(ROOT) if final.is_relative_to(ROOT) else final
    print(
        f"[site-assets] {asset.package} {asset.version}: {count} files in {shown}", file=sys.stderr
    )


def parse_tarballs(values: list[str]) -> dict[str, Path]:
    names = {asset.name for asset in ASSETS}
    tarballs: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or name not in names or not path:
            raise SystemExit(
                f"error: --tarball expects NAME=PATH with NAME one of {sorted(names)}, "
                f"got {value!r}"
            )
        tarballs[name] = Path(path)
    return tarballs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing")
    parser.add_argument(
        "--tarball",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="use a local tarball instead of downloading (its sha256 is still checked)",
    )
    args = parser.parse_args(argv)
    tarballs = parse_tarballs(args.tarball)
    if args.check:
        missing = [a.name for a in ASSETS if not is_current(a)]
        for name in missing:
            print(f"[site-assets] missing or outdated: {name}", file=sys.stderr)
        return 1 if missing else 0
    registry = os.environ.get("MTLBOOK_NPM_REGISTRY", DEFAULT_REGISTRY)
    for asset in ASSETS:
        install(asset, tarballs.get(asset.name), registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
