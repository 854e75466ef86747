"""The installer: the mirror's checksum chain (local signed files), the preseed initrd,
the medium layout and the boot menu entries."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from deblive.build import installer, menus
from deblive.build.installer import InstallerError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import preflight
from deblive.model import bootmenu, config
from deblive.model.arch import Arch

from . import conftest
from .test_plan import make_key, release_text, sign_release

needs_gpg = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv")), reason="needs gpg and gpgv"
)

RUNNER = Runner(BuildLog())
IMAGES = "main/installer-amd64/current/images"
FILES = {
    "netboot/debian-installer/amd64/linux": b"text kernel",
    "netboot/debian-installer/amd64/initrd.gz": b"text initrd",
    "netboot/gtk/debian-installer/amd64/linux": b"gtk kernel",
    "netboot/gtk/debian-installer/amd64/initrd.gz": b"gtk initrd",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_mirror(base: Path, home: Path, files: dict[str, bytes],
                sums_override: dict[str, str] | None = None,
                release_sums: bytes | None = None) -> str:
    """A file:// mirror holding installer images, SHA256SUMS and a signed InRelease."""
    dists = base / "debian/dists/bookworm"
    images = dists / IMAGES
    listed = {**{rel: sha(data) for rel, data in files.items()}, **(sums_override or {})}
    sums = "".join(f"{digest}  ./{rel}\n" for rel, digest in listed.items()).encode()
    for rel, data in files.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(data)
    (images / "SHA256SUMS").write_bytes(sums)
    release = release_text("bookworm", {f"{IMAGES}/SHA256SUMS": release_sums or sums})
    (dists / "InRelease").write_bytes(sign_release(home, release))
    return f"file://{base / 'debian'}"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("gnupg")
    return home, make_key(home)


@needs_gpg
def test_mirror_images_checked_along_the_chain(signer: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    home, keyring = signer
    mirror = make_mirror(tmp_path / "m", home, FILES)
    images = installer.from_mirror(RUNNER, mirror, "bookworm", Arch.AMD64, tmp_path / "out",
                                   graphical=True, keyring=keyring)
    assert images.text_kernel.read_bytes() == b"text kernel"
    assert images.gtk_initrd is not None and images.gtk_initrd.read_bytes() == b"gtk initrd"
    assert "installer-amd64" in images.origin


@needs_gpg
def test_a_tampered_image_is_refused(signer: tuple[Path, Path], tmp_path: Path) -> None:
    home, keyring = signer
    bad = {**FILES, "netboot/debian-installer/amd64/initrd.gz": b"evil initrd"}
    mirror = make_mirror(tmp_path / "m", home, bad,
                         sums_override={"netboot/debian-installer/amd64/initrd.gz":
                                        sha(b"text initrd")})
    with pytest.raises(InstallerError, match="does not match"):
        installer.from_mirror(RUNNER, mirror, "bookworm", Arch.AMD64, tmp_path / "out",
                              graphical=False, keyring=keyring)


@needs_gpg
def test_a_sha256sums_the_release_does_not_vouch_for_is_refused(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    home, keyring = signer
    mirror = make_mirror(tmp_path / "m", home, FILES, release_sums=b"other content")
    with pytest.raises(InstallerError, match="SHA256SUMS: sha256"):
        installer.from_mirror(RUNNER, mirror, "bookworm", Arch.AMD64, tmp_path / "out",
                              graphical=False, keyring=keyring)


@needs_gpg
def test_an_inrelease_signed_by_another_key_is_refused(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    home, _keyring = signer
    other = make_key(tmp_path / "other")
    mirror = make_mirror(tmp_path / "m", home, FILES)
    with pytest.raises(InstallerError, match="signature not valid"):
        installer.from_mirror(RUNNER, mirror, "bookworm", Arch.AMD64, tmp_path / "out",
                              graphical=False, keyring=other)


@needs_gpg
def test_a_mirror_without_images_says_so(signer: tuple[Path, Path], tmp_path: Path) -> None:
    home, keyring = signer
    mirror = make_mirror(tmp_path / "m", home, FILES)
    shutil.rmtree(tmp_path / "m/debian/dists/bookworm" / IMAGES / "netboot")
    with pytest.raises(InstallerError, match="does not serve the installer images"):
        installer.from_mirror(RUNNER, mirror, "bookworm", Arch.AMD64, tmp_path / "out",
                              graphical=False, keyring=keyring)


def test_sha256sums_parsing() -> None:
    sums = installer.parse_sha256sums("ABC  ./netboot/x\ndef  ./y\n\n")
    assert sums == {"netboot/x": "abc", "y": "def"}


def write_tree(base: Path, graphical: bool = True) -> Path:
    for flavour in ("text", "gtk") if graphical else ("text",):
        (base / flavour).mkdir(parents=True)
        (base / flavour / "linux").write_bytes(f"{flavour} kernel".encode())
        (base / flavour / "initrd.gz").write_bytes(f"{flavour} initrd".encode())
    return base


def test_directory_source_names_a_missing_file(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "d", graphical=False)
    assert installer.from_directory(tree, "dir", graphical=False).gtk_initrd is None
    with pytest.raises(InstallerError, match="gtk/linux missing"):
        installer.from_directory(tree, "dir", graphical=True)


def test_netboot_package_layout_is_found(tmp_path: Path) -> None:
    for flavour in ("text", "gtk"):
        d = tmp_path / f"usr/lib/debian-installer/images/12/amd64/{flavour}/debian-installer/amd64"
        d.mkdir(parents=True)
        (d / "linux").write_bytes(b"k")
        (d / "initrd.gz").write_bytes(flavour.encode())
    images = installer.from_unpacked(tmp_path, Arch.AMD64, tmp_path / "out", "pkg",
                                     graphical=True)
    assert images.gtk_initrd is not None and images.gtk_initrd.read_bytes() == b"gtk"
    assert images.gtk_initrd.parent.parent == tmp_path / "out"


def test_a_package_image_that_is_a_symlink_to_a_host_file_is_not_taken(tmp_path: Path) -> None:
    secret = tmp_path / "host-initrd"
    secret.write_bytes(b"host")
    d = tmp_path / "pkg/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"
    d.mkdir(parents=True)
    (d / "linux").write_bytes(b"k")
    (d / "initrd.gz").symlink_to(secret)
    with pytest.raises(InstallerError, match=r"initrd\.gz missing"):
        installer.from_unpacked(tmp_path / "pkg", Arch.AMD64, tmp_path / "out", "pkg",
                                graphical=False)


def test_preseed_initrd_is_a_cpio_holding_preseed_cfg(tmp_path: Path) -> None:
    data = installer.preseed_cpio(b"d-i debian-installer/locale string en_US\n", epoch=0)
    assert data == installer.preseed_cpio(b"d-i debian-installer/locale string en_US\n", 0)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-i", "--quiet"], input=gzip.decompress(data), cwd=out, check=True)
    assert (out / "preseed.cfg").read_text() == "d-i debian-installer/locale string en_US\n"


def make_config(tmp_path: Path, **inst: object) -> config.ImageConfig:
    return conftest.parse({"name": "demo", "installer": inst}, tmp_path / "demo.yaml")


def test_medium_layout_with_preseed(tmp_path: Path) -> None:
    (tmp_path / "preseed.cfg").write_text("d-i netcfg/get_hostname string live\n")
    cfg = make_config(tmp_path, preseed="preseed.cfg")
    images = installer.from_directory(write_tree(tmp_path / "imgs"), "dir", graphical=True)
    medium = tmp_path / "medium"
    files = installer.place_on_medium(medium, cfg, images, epoch=0)
    assert files == [
        "/install.amd/gtk/initrd.gz", "/install.amd/gtk/vmlinuz", "/install.amd/initrd.gz",
        "/install.amd/preseed.cpio.gz", "/install.amd/vmlinuz", "/preseed.cfg",
    ]
    assert (medium / "install.amd/vmlinuz").read_bytes() == b"text kernel"
    # Every file the menu entries name is on the medium.
    menu = bootmenu.build_menu(cfg)
    for entry in menu.entries():
        for path in (entry.kernel, *entry.initrds):
            if path.startswith("/install"):
                assert (medium / path.lstrip("/")).is_file(), path


def test_config_refuses_a_missing_preseed(tmp_path: Path) -> None:
    with pytest.raises(preflight.PreflightError, match=r"installer\.preseed"):
        preflight.check_paths(make_config(tmp_path, preseed="nope.cfg"))
    with pytest.raises(config.ConfigError, match="directory"):
        make_config(tmp_path, sources=["directory"])


def test_menu_has_debian_installer_entries_in_both_loaders(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    menu = bootmenu.build_menu(cfg)
    labels = [item.label for item in menu.items]
    assert labels == ["Live system", "Live system (failsafe)", "Graphical install", "Install",
                      "Advanced options"]
    advanced = menu.items[-1]
    assert isinstance(advanced, bootmenu.Submenu)
    sub = {e.id: e for e in advanced.items if isinstance(e, bootmenu.Entry)}
    assert "priority=low" in sub["expert"].cmdline
    assert "speakup.synth=soft" in sub["speech"].cmdline
    install = next(e for e in menu.entries() if e.id == "install")
    assert install.cmdline == ("vga=788", "---", "quiet")
    assert install.initrds == ("/install.amd/initrd.gz",)
    assert not any("ttyS0" in a for a in install.cmdline)  # d-i's UI stays on the screen
    grub = menus.render_grub(menu)
    assert "menuentry \"Graphical install\" --id installgui {" in grub
    assert "linux /install.amd/gtk/vmlinuz vga=788 --- quiet" in grub
    assert "submenu \"Advanced options\" --id advanced {" in grub
    iso = menus.render_isolinux(menu)["menu.cfg"]
    assert "LABEL install\n\tMENU LABEL Install\n\tLINUX /install.amd/vmlinuz\n" in iso
    assert "MENU BEGIN advanced" in iso


def test_preseed_is_a_second_initrd_in_both_loaders(tmp_path: Path) -> None:
    (tmp_path / "p.cfg").write_text("")
    cfg = make_config(tmp_path, preseed="p.cfg", graphical=False)
    menu = bootmenu.build_menu(cfg)
    assert "installgui" not in {e.id for e in menu.entries()}
    iso = menus.render_isolinux(menu)["menu.cfg"]
    assert "INITRD /install.amd/initrd.gz,/install.amd/preseed.cpio.gz" in iso
    grub = menus.render_grub(menu)
    assert "initrd /install.amd/initrd.gz /install.amd/preseed.cpio.gz" in grub
    # Live entries keep their single initrd.
    assert "INITRD /live/initrd.img\n" in iso


def test_no_installer_no_entries(tmp_path: Path) -> None:
    cfg = conftest.parse({"name": "demo"}, tmp_path / "demo.yaml")
    assert [e.id for e in bootmenu.build_menu(cfg).entries()] == ["live", "failsafe"]


def test_installer_test_takes_the_entry_from_the_menu_model(tmp_path: Path) -> None:
    (tmp_path / "p.cfg").write_text("")
    menu = bootmenu.build_menu(make_config(tmp_path, preseed="p.cfg"))
    entry = menu.entry("install")
    assert entry.kernel == "/install.amd/vmlinuz"
    assert entry.initrds == ("/install.amd/initrd.gz", "/install.amd/preseed.cpio.gz")
    assert entry.cmdline_text == "vga=788 --- quiet"
    assert menu.entry("expert").cmdline_text == "priority=low vga=788 ---"  # in the submenu
    with pytest.raises(bootmenu.MenuError):
        menu.entry("advanced")  # a submenu, not an entry
