"""Step 7: clean the tree for shipping and write its package list.

What a live system regenerates or must not carry goes: apt caches and lists,
logs (kept in the output first), temporary files, the machine id (emptied, so
systemd makes a new one per boot), ssh host keys (made at first boot instead).
Everything goes through the image tree: a log or key the packages or the
hook turned into a symlink to a host file is removed as a symlink, and the
copies of apt's and dpkg's logs are regular files of the image or nothing.
"""

from __future__ import annotations

import stat
from pathlib import Path

from debian import deb822

from deblive.build import origins, sbom, sbommemory
from deblive.build.context import BuildContext
from deblive.build.kernels import kernel_images
from deblive.build.sbomlicences import Licences
from deblive.build.stage import Stage
from deblive.host.imagetree import ImageTree, TreeError

SSH_KEYGEN_UNIT = """\
[Unit]
Description=Create SSH host keys for this live session (deblive)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""
UNIT_DIR = "/etc/systemd/system"
BUILD_LOGS = ("/var/log/apt/term.log", "/var/log/apt/history.log", "/var/log/dpkg.log")


def installed_packages(tree: ImageTree) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of every installed package, from dpkg's status."""
    text = tree.read_text("/var/lib/dpkg/status")
    out = []
    for para in deb822.Packages.iter_paragraphs(text, use_apt_pkg=False):
        if para.get("Status", "").split()[-1:] == ["installed"]:
            out.append((para["Package"], para["Version"], para.get("Architecture", "")))
    return sorted(out)


def format_packages(installed: list[tuple[str, str, str]]) -> str:
    """filesystem.packages in live-build's format: name, tab, version."""
    return "".join(f"{name}\t{version}\n" for name, version, _ in installed)


def packages_list(tree: ImageTree) -> str:
    return format_packages(installed_packages(tree))


def keep_build_logs(tree: ImageTree, dest: Path, prefix: str = "") -> list[str]:
    """apt's and dpkg's logs of the build go to the output, not the image.

    Only regular files are copied; returns the paths that were something else
    (a link the hook or a package left, a FIFO) and so were not kept.
    """
    dest.mkdir(parents=True, exist_ok=True)
    skipped = []
    for path in BUILD_LOGS:
        if tree.lstat(path) is None:
            continue
        if tree.is_file(path) and not tree.is_symlink(path):
            try:
                tree.copy_out(path, dest / (prefix + path.rsplit("/", 1)[1]))
                continue
            except TreeError:
                pass
        skipped.append(path)
    return skipped


def _remove_matching(tree: ImageTree, directory: str, pattern: str) -> list[str]:
    """Remove the non-directories in directory whose names match; returns them."""
    removed = []
    for path in tree.glob(directory, pattern):
        st = tree.lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            tree.unlink(path)
            removed.append(path)
    return removed


def clean_tree(tree: ImageTree) -> None:
    for directory in ("/var/cache/apt/archives/partial", "/var/lib/apt/lists/partial",
                      "/tmp", "/var/tmp", "/var/cache/debconf/tmp"):
        tree.empty_dir(directory)
    _remove_matching(tree, "/var/cache/apt", "*.bin")
    _remove_matching(tree, "/var/cache/apt/archives", "*.deb")
    _remove_matching(tree, "/var/cache/debconf", "*-old")
    # ldconfig's auxiliary cache records inode numbers and times: it differs on every
    # build (a reproducible image must not) and ldconfig remakes it when needed.
    _remove_matching(tree, "/var/cache/ldconfig", "aux-cache")
    # Log files go, their directories stay (packages expect them).
    tree.empty_dir("/var/log", keep_dirs=True)
    machine_id = tree.lstat("/etc/machine-id")
    if machine_id is not None:
        if stat.S_ISREG(machine_id.st_mode):
            tree.truncate("/etc/machine-id")
        else:
            tree.write("/etc/machine-id", "", 0o444)
    if tree.lexists("/var/lib/dbus/machine-id") and not tree.is_dir("/var/lib/dbus/machine-id"):
        tree.unlink("/var/lib/dbus/machine-id")
    keys = _remove_matching(tree, "/etc/ssh", "ssh_host_*")
    if keys or tree.exists("/usr/sbin/sshd"):
        unit = "deblive-ssh-hostkeys.service"
        tree.mkdir(f"{UNIT_DIR}/ssh.service.wants")
        tree.write(f"{UNIT_DIR}/{unit}", SSH_KEYGEN_UNIT)
        tree.symlink(f"{UNIT_DIR}/{unit}", f"{UNIT_DIR}/ssh.service.wants/{unit}")


class Clean(Stage):
    name = "clean"

    def run(self, ctx: BuildContext) -> None:
        tree = ctx.tree
        for path in keep_build_logs(tree, ctx.work.logs):
            ctx.log.warn(f"{path} in the image is not a regular file: not kept in logs/")
        clean_tree(tree)
        manifest = ctx.work.output / "filesystem.packages"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        ctx.installed = installed_packages(tree)
        listing = format_packages(ctx.installed)
        manifest.write_text(listing)
        ctx.outputs += [manifest, write_sbom(ctx)]
        ctx.facts.package_count = len(listing.splitlines())
        ctx.facts.kernels = sorted(kernel_images(tree))


def write_sbom(ctx: BuildContext) -> Path:
    """<name>-<suite>-<arch>.spdx.json: every installed package, with its archive's purl."""
    assert ctx.installed is not None
    by_name: dict[str, sbom.Origin] = {}
    for name, version, _arch in ctx.installed:
        namespace = ctx.package_origins.get(f"{name}={version}")
        if namespace == origins.LOCAL:
            by_name[name] = sbom.LOCAL
        elif namespace is not None:
            by_name[name] = sbom.Origin(namespace=namespace)
    config = ctx.config
    memory = sbommemory.memory_file(ctx.cache)
    known = sbommemory.load(memory)
    licences = Licences(known)
    document = sbom.sbom_document(
        ctx.tree, name=config.image_basename, namespace_seed=ctx.build_id,
        created_epoch=ctx.source_date_epoch, origins=by_name, distro=config.codename,
        licences=licences)
    try:
        sbommemory.save(memory, known, licences.found)
    except OSError as exc:  # only the next build's time is lost
        ctx.log.warn(f"could not keep the copyright files' licences in {memory}: {exc}")
    path = ctx.work.output / f"{config.image_basename}.spdx.json"
    sbom.write_sbom(path, document)
    return path
