"""`deblive plan`: resolve an image's package set against the mirror, without building.

A wrong package name or an image three times the expected size should show
in seconds, not after a half-hour build. So the same package list the
packages stage installs is resolved by the host's own apt-get (install
--print-uris: the resolution without the installation order -s also works
out, a third of its time for a desktop), against the target suite and
architecture, with a private apt configuration:

- APT_CONFIG points at a generated apt.conf, so nothing of the host's apt
  setup (its sources, apt.conf.d, preferences, dpkg status) takes part;
- Dir::State, Dir::Cache and Dir::Etc live in a cache directory per suite,
  architecture and sources, holding the suite's downloaded package lists
  (apt-get update refreshes them; the Release signature is checked against
  Debian's archive keyring, as the build does);
- APT::Architecture is the target's, so foreign architectures resolve the
  same way (apt only reads their Packages indexes, it never runs them);
- two simulated runs mirror the build: first the bootstrap variant's base
  (Essential and Priority: required, plus apt, and important/standard for
  those variants; Recommends off, as mmdebstrap installs it), whose result
  becomes the dpkg status file of the second run, which installs the live
  system, tasks and extras with Recommends on, as the chroot does.

No root is needed (apt runs as the calling user, in the user's cache). The
sizes are those of the Packages indexes: Size (download) and Installed-Size.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from debian import deb822

from deblive.apt import planresults
from deblive.apt.basefetch import BaseFetch, Fetched
from deblive.apt.indexes import PLAN_LOCK, index_digest, newest_release_date
from deblive.apt.keyring import DEBIAN_ARCHIVE_KEYRING
from deblive.apt.packageset import Package, PackageSet
from deblive.apt.repositories import ExtraArchive
from deblive.apt.simoutput import apt_problems, parse_uri_lines, tail, unknown_packages
from deblive.apt.sources import build_sources, extra_sources
from deblive.core.errors import BadInputError
from deblive.core.files import exclusive_lock
from deblive.core.log import BuildLog
from deblive.core.runner import Result, Runner
from deblive.model.config import ImageConfig
from deblive.model.packages import PackageSelection

# Fields a dpkg status entry needs for apt to resolve against it.
STATUS_FIELDS: Final = (
    "Package", "Essential", "Priority", "Section", "Installed-Size", "Maintainer",
    "Architecture", "Multi-Arch", "Source", "Version", "Replaces", "Provides", "Depends",
    "Pre-Depends", "Breaks", "Conflicts", "Description",
)
NETBOOT_RE: Final = re.compile(r"^debian-installer-(?P<version>\d+)-netboot-(?P<arch>[a-z0-9]+)$")


class PlanError(BadInputError):
    """The package set does not resolve: unknown names or broken dependencies."""

    def __init__(self, message: str, unknown: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.unknown = list(unknown)


@dataclass
class Plan:
    name: str
    codename: str
    architecture: str
    variant: str
    requested: list[str]
    base: PackageSet
    added: PackageSet
    installer_package: str | None = None
    indexes: str = ""  # digest of the Packages indexes resolved from (index_digest)
    lists: Path | None = None  # apt's lists it resolved from (read them under indexes.held)
    release_epoch: int | None = None  # the newest Release Date of those lists
    boot: tuple[str, ...] = ()  # boot loader packages: on the medium, never installed
    base_fetch: Fetched | None = None  # the base fetched into the package cache meanwhile

    @property
    def count(self) -> int:
        return self.base.count + self.added.count

    @property
    def requested_names(self) -> tuple[str, ...]:
        """The names asked of apt (tasks, extras, the live system), without versions."""
        return tuple(sorted(set(self.requested)))

    @property
    def versions(self) -> list[str]:
        """name=version of every package the image gets, sorted."""
        return sorted(f"{p.name}={p.version}" for p in [*self.base.packages, *self.added.packages])

    @property
    def download_bytes(self) -> int:
        return self.base.download_bytes + self.added.download_bytes

    @property
    def installed_bytes(self) -> int:
        return self.base.installed_bytes + self.added.installed_bytes

    def to_json(self) -> dict[str, Any]:
        def summary(s: PackageSet) -> dict[str, int]:
            return {"packages": s.count, "download_bytes": s.download_bytes,
                    "installed_bytes": s.installed_bytes}

        return {
            "name": self.name, "codename": self.codename, "architecture": self.architecture,
            "variant": self.variant, "requested": self.requested,
            "base": summary(self.base), "added": summary(self.added),
            "total": {"packages": self.count, "download_bytes": self.download_bytes,
                      "installed_bytes": self.installed_bytes},
            "installer_package": self.installer_package, "boot_packages": list(self.boot),
            "packages": [asdict(p) for p in sorted(
                [*self.base.packages, *self.added.packages], key=lambda p: p.name)],
        }


def human(size: int) -> str:
    """Bytes as MiB or GiB with one decimal, as people compare image sizes."""
    if size >= 2**30:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**20:.1f} MiB"


# -- the private apt ------------------------------------------------------------


def default_cache_dir() -> Path:
    """root: beside the build's package cache; anyone else: their own cache."""
    if os.geteuid() == 0:
        return Path(os.environ.get("DEBLIVE_CACHE", "/var/cache/deblive")) / "plan"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deblive" / "plan"


def apt_env(conf: Path) -> dict[str, str]:
    """The environment of a private apt: its configuration, the C locale, proxies kept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env.update({"APT_CONFIG": str(conf), "LC_ALL": "C.UTF-8"})
    return env


class PrivateApt:
    """apt-get and apt-cache for one suite, architecture and set of sources, in root."""

    def __init__(self, root: Path, architecture: str, sources: str, runner: Runner,
                 keyring: Path = DEBIAN_ARCHIVE_KEYRING,
                 extras: Sequence[ExtraArchive] = ()) -> None:
        self.root = root
        self.architecture = architecture
        self.runner = runner
        self.keyring = keyring
        self.extras = list(extras)
        self.sources = "\n".join(filter(None, [sources, extra_sources(extras, str(self.keyrings))]))

    @property
    def keyrings(self) -> Path:
        """The extra archives' keys (Debian's come from keyring)."""
        return self.root / "keyrings"

    @property
    def conf(self) -> Path:
        return self.root / "apt.conf"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def nothing(self) -> Path:
        """An archives directory with no packages: --print-uris lists every one."""
        return self.root / "cache/nothing"

    def apt_conf(self) -> str:
        r = self.root
        sandbox = 'APT::Sandbox::User "root";\n' if os.geteuid() == 0 else ""
        return (
            "// deblive plan: a private apt; nothing of the host's apt setup takes part\n"
            'Dir "/";\n'
            f'Dir::Etc "{r}/etc";\n'
            f'Dir::Etc::Parts "{r}/etc/apt.conf.d";\n'
            'Dir::Etc::main "/dev/null";\n'
            f'Dir::Etc::Trusted "{self.keyring}";\n'
            f'Dir::Etc::TrustedParts "{r}/etc/trusted.gpg.d";\n'
            f'Dir::State "{r}/state";\n'
            f'Dir::State::status "{self.status}";\n'
            f'Dir::Cache "{r}/cache";\n'
            f'APT::Architecture "{self.architecture}";\n'
            f'APT::Architectures {{ "{self.architecture}"; }};\n'
            'Acquire::Languages "none";\n'
            'Acquire::Retries "3";\n'
            # gzip'd indexes first (the rest after, if an archive has no .gz): the main
            # index is 3.1 MiB larger than its .xz and half a second faster to
            # update here (1.4-1.5 s against 2.0 s), where unpacking xz is the work.
            'Acquire::CompressionTypes::Order:: "gz";\n'
            'APT::Color "0";\n'
            # Simulation as a normal user must not ask for dpkg's lock.
            'Debug::NoLocking "true";\n'
            + sandbox
        )

    def prepare(self) -> None:
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d",
                    "etc/trusted.gpg.d", "state/lists/partial", "cache/archives/partial",
                    "cache/nothing/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for stray in self.nothing.iterdir():
            if stray.name != "partial":
                stray.unlink()
        self.conf.write_text(self.apt_conf(), encoding="utf-8")
        (self.root / "etc/sources.list").write_text("", encoding="utf-8")
        (self.root / "etc/sources.list.d/build.sources").write_text(
            self.sources, encoding="utf-8")
        self.keyrings.mkdir(exist_ok=True)
        for old in (self.root / "etc/preferences.d").glob("*.pref"):
            old.unlink()
        for extra in self.extras:
            (self.keyrings / f"{extra.name}.gpg").write_bytes(extra.keyring)
            pin = extra.preferences()
            if pin:
                (self.root / "etc/preferences.d" / f"{extra.name}.pref").write_text(pin)

    def env(self) -> dict[str, str]:
        return apt_env(self.conf)

    def run(self, argv: Sequence[str], *, check: bool = True) -> Result:
        """apt with the private configuration: standard output kept apart (parsed)."""
        result = self.runner.run(
            argv, env=self.env(), inherit_env=False, capture=True, quiet=True, check=False,
            stderr="capture",
        )
        if check and result.returncode != 0:
            raise PlanError(
                f"{' '.join(argv[:3])} failed with exit status {result.returncode}:\n"
                + tail(result.output + result.errors)
            )
        return result

    def update(self) -> None:
        """Fetch (or refresh) the suite's lists; apt checks the Release signature."""
        result = self.run(["apt-get", "-q", "update"], check=False)
        text = result.output + result.errors
        problems = [line for line in text.splitlines() if line.startswith(("E:", "W:", "Err:"))]
        if result.returncode != 0 or any(line.startswith(("E:", "Err:")) for line in problems):
            raise PlanError("cannot read the mirror's package lists for the plan:\n"
                            + "\n".join(problems or tail(text).splitlines()))

    def simulate(self, names: Sequence[str], *, recommends: bool) -> list[Package]:
        """Packages apt would install (name, version, arch); PlanError naming unknown ones.

        apt's resolution printed as the files it would fetch (--print-uris, into an
        archives directory kept empty): half the time of -s here, which also orders
        the installation as dpkg would run it.
        """
        proc = self.run(
            ["apt-get", "-q", "--print-uris", "-o", f"Dir::Cache::Archives={self.nothing}/",
             "-o", f"APT::Install-Recommends={str(recommends).lower()}", "install", *names],
            check=False,
        )
        text = proc.output + proc.errors
        unknown = unknown_packages(text)
        if unknown:
            raise PlanError(
                "unknown packages (not in the suite for this architecture): "
                + ", ".join(unknown),
                unknown,
            )
        if proc.returncode != 0:
            raise PlanError("the package set does not resolve:\n" + apt_problems(text))
        return parse_uri_lines(text)

    def show(self, packages: Sequence[Package]) -> list[deb822.Packages]:
        """The index entries of exactly these versions (apt-cache show name:arch=version)."""
        if not packages:
            return []
        proc = self.run(["apt-cache", "show",
                         *(f"{p.name}:{p.architecture}={p.version}" for p in packages)])
        return list(deb822.Packages.iter_paragraphs(proc.output, use_apt_pkg=False))

    def pkgnames(self, prefix: str) -> list[str]:
        return sorted(self.run(["apt-cache", "pkgnames", prefix]).output.split())


def with_sizes(packages: Sequence[Package], entries: Sequence[deb822.Packages]) -> PackageSet:
    """Sizes from the index entries; PlanError if apt's chosen version has no entry."""
    by_key = {(e["Package"], e["Version"]): e for e in entries}
    result = []
    for p in packages:
        entry = by_key.get((p.name, p.version))
        if entry is None:
            raise PlanError(f"no index entry for {p.name} {p.version} ({p.architecture})")
        result.append(Package(p.name, p.version, p.architecture,
                              int(entry.get("Size", 0)), int(entry.get("Installed-Size", 0))))
    return PackageSet(result)


def status_text(entries: Sequence[deb822.Packages]) -> str:
    """A dpkg status file claiming these index entries installed."""
    paragraphs = []
    for entry in entries:
        para = deb822.Deb822()
        for key in STATUS_FIELDS:
            if key in entry:
                para[key] = entry[key]
            if key == "Package":
                para["Status"] = "install ok installed"
        paragraphs.append(para.dump())
    return "\n".join(paragraphs)


def cache_key(config: ImageConfig, sources: str, extras: Sequence[ExtraArchive] = ()) -> str:
    # A flat (local) archive is left out: each set of local packages would otherwise
    # get a fresh copy of the whole mirror's lists; apt updates its one list in place.
    parts = [sources, *(f"{e.name} {e.uri} {e.suites} {e.components} {e.priority} "
                        f"{hashlib.sha256(e.keyring).hexdigest()}" for e in extras
                        if e.components)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    return f"{config.codename}-{config.architecture}-{digest}"


def private_apt(config: ImageConfig, runner: Runner, cache_dir: Path | None = None,
                keyring: Path = DEBIAN_ARCHIVE_KEYRING,
                extras: Sequence[ExtraArchive] = ()) -> PrivateApt:
    """The private apt of config's suite, architecture and build sources (not yet updated),
    with the extra archives (the config's repositories, the local packages)."""
    sources = build_sources(config, keyring)
    # Absolute: apt reads the paths of its private configuration from "/".
    root = (cache_dir or default_cache_dir()).absolute() / cache_key(config, sources, extras)
    return PrivateApt(root, str(config.architecture), sources, runner, keyring, extras)


def make_plan(config: ImageConfig, runner: Runner, cache_dir: Path | None = None, *,
              update: bool = True, keyring: Path = DEBIAN_ARCHIVE_KEYRING,
              extras: Sequence[ExtraArchive] = (), local: Sequence[str] = (),
              fetch_base_into: Path | None = None) -> Plan:
    """Resolve config's package set; PlanError (exit 2) for unknown names or conflicts.

    keyring: the keys the suite's Release must be signed with (Debian's archive keys).
    fetch_base_into: a shared package cache the base's packages are downloaded into
    while the rest is resolved (apt.basefetch).
    """
    selection = PackageSelection.from_config(config)
    apt = private_apt(config, runner, cache_dir, keyring, extras)
    root = apt.root
    requested = [*selection.install,
                 *(n for n in local if n.split("=")[0] not in selection.install)]
    root.mkdir(parents=True, exist_ok=True)
    # One plan at a time per cache directory (apt's own list lock would fail the second).
    with exclusive_lock(root / PLAN_LOCK, wait=True):
        apt.prepare()
        if update or not any((root / "state/lists").glob("*_Packages*")):
            apt.update()
        indexes = index_digest(root / "state/lists", str(config.architecture))
        release_epoch = newest_release_date(root / "state/lists")
        # The boot loaders are checked with each resolution (so they are in its key).
        key = planresults.result_key(indexes, str(config.architecture), selection.base_request,
                                     [*requested, *(f"boot:{b}" for b in selection.boot)],
                                     selection.netboot_installer)
        resolved, fetched = planresults.load(root, key), None
        if resolved is None:
            names = set(apt.pkgnames("")) if selection.boot else set()
            missing = [name for name in selection.boot if name not in names]
            if missing:  # a suite without the architecture's boot loaders
                raise PlanError(f"boot loader packages not in {config.codename} for "
                                f"{config.architecture}: {', '.join(missing)}", missing)
            resolved, fetched = _resolve(apt, selection, requested, fetch_base_into)
            planresults.save(root, key, *resolved)
        base, added, installer_package = resolved
    return Plan(config.name, config.codename, str(config.architecture), selection.variant,
                requested, base, added, installer_package, indexes, root / "state/lists",
                release_epoch, selection.boot, fetched)


def _resolve(apt: PrivateApt, selection: PackageSelection, requested: list[str],
             fetch_base_into: Path | None
             ) -> tuple[tuple[PackageSet, PackageSet, str | None], Fetched | None]:
    """The base (without Recommends, from nothing), then what goes on it (with them);
    the base's packages fetched meanwhile into fetch_base_into, if given."""
    apt.status.write_text("", encoding="utf-8")
    base_pkgs = apt.simulate(list(selection.base_request), recommends=False)
    base_entries = apt.show(base_pkgs)
    fetch = (BaseFetch(base_entries, fetch_base_into, apt.env(), apt.runner).start()
             if fetch_base_into is not None else None)
    try:
        apt.status.write_text(status_text(base_entries), encoding="utf-8")
        added_pkgs = apt.simulate(requested, recommends=True)
        added = with_sizes(added_pkgs, apt.show(added_pkgs))
        installer = (netboot_package(apt.pkgnames("debian-installer-"), apt.architecture)
                     if selection.netboot_installer else None)
    finally:  # the lists stay held (the plan's lock) until the fetch ends
        fetched = fetch.wait() if fetch is not None else None
    return (with_sizes(base_pkgs, base_entries), added, installer), fetched


def netboot_package(names: Sequence[str], architecture: str) -> str | None:
    """debian-installer-<version>-netboot-<arch> of the suite: the highest version listed."""
    best: tuple[int, str] | None = None
    for name in names:
        match = NETBOOT_RE.match(name)
        if match and match["arch"] == architecture:
            candidate = (int(match["version"]), name)
            best = candidate if best is None or candidate > best else best
    return best[1] if best else None


def precheck(config: ImageConfig, cache: Path, log: BuildLog,
             extras: Sequence[ExtraArchive] = (), local: Sequence[str] = ()) -> Plan:
    """The build's early stop: the same resolution as `deblive plan`, logged in one line.

    cache is the build's cache directory; the plan's lists live in cache/plan.
    """
    plan = make_plan(config, Runner(log), cache / "plan", extras=extras, local=local,
                     fetch_base_into=cache / "archives")
    log.info(
        f"plan: {plan.count} packages, download {human(plan.download_bytes)}, "
        f"installed {human(plan.installed_bytes)}"
    )
    if plan.base_fetch is not None:
        log.info(f"plan: {plan.base_fetch.summary()}")
    return plan
