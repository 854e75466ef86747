"""Which archive each package came from: for the SBOM's purls and the report.

dpkg does not record where a package came from, apt's lists do: while the
build's lists are still in the image (before the sources stage deletes
them), each extra repository's Packages indexes are read there, so a
package whose installed version one of them carries is that repository's.
The local packages are known from their own control data.
"""

from __future__ import annotations

from debian import deb822

from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext

LOCAL = "local"


def _index_files(chroot: Chroot, uri: str) -> list[str]:
    result = chroot.run(["apt-get", "indextargets", "--format", "$(FILENAME)",
                         "Created-By: Packages", f"Repo-URI: {uri}/"],
                        capture=True, quiet=True, check=False,
                        what="finding a repository's package lists")
    return [line for line in result.output.splitlines() if line.startswith("/var/lib/apt/lists/")]


def _versions(chroot: Chroot, index: str) -> set[str]:
    """name=version of every entry of one Packages index (apt-helper uncompresses it)."""
    result = chroot.run(["/usr/lib/apt/apt-helper", "cat-file", index], capture=True,
                        quiet=True, check=False, what="reading a repository's package list")
    if result.returncode != 0:
        return set()
    return {f"{para.get('Package')}={para.get('Version')}"
            for para in deb822.Packages.iter_paragraphs(result.output, use_apt_pkg=False)}


def package_origins(ctx: BuildContext) -> dict[str, str]:
    """'name=version' -> purl namespace, for packages not from Debian's archive."""
    found: dict[str, str] = {}
    if ctx.extras:
        chroot = Chroot(ctx.tree, ctx.runner)
        for extra in ctx.extras:
            for index in _index_files(chroot, extra.uri):
                for key in _versions(chroot, index):
                    found.setdefault(key, extra.namespace)
    for package in ctx.local_packages:
        found[f"{package.name}={package.version}"] = LOCAL
    return found
