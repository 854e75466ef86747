"""deblive plan: apt's output read right, and a real apt-get run against a local signed repo.

The repo is made here (Packages, Release, InRelease signed with a throwaway
key), so the private apt configuration, the Release signature check, the two
simulated runs and the size sums are all exercised without network or root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from debian import deb822

from deblive.apt import indexes, plan, planview, simoutput
from deblive.apt.packageset import Package, PackageSet
from deblive.apt.plan import PlanError
from deblive.build import basecache
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model import config
from deblive.model.arch import Arch

from . import conftest

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gpg", "gpgv", "apt-get")),
    reason="needs gpg, gpgv and apt-get",
)


# -- apt's output ------------------------------------------------------------------

APT_URIS = """\
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  libc6 wpasupplicant tzdata
Need to get 6,059 kB of archives.
'http://mirror.invalid/debian/pool/main/g/glibc/libc6_2.36-9%2bdeb12u14_arm64.deb' \
libc6_2.36-9+deb12u14_arm64.deb 2546212 SHA256:0123
'http://mirror.invalid/debian/pool/main/w/wpa/wpasupplicant_2.10-12%2bdeb12u3_arm64.deb' \
wpasupplicant_2%3a2.10-12+deb12u3_arm64.deb 1333432 SHA256:4567
'file:/srv/local/tzdata_2025b-0+deb12u2_all.deb' tzdata_2025b-0+deb12u2_all.deb 258356 SHA256:89ab
"""  # a backslash at a line's end joins it to the next, as apt prints it

RUNNER = Runner(BuildLog())


def test_uri_lines_give_name_version_and_arch() -> None:
    assert simoutput.parse_uri_lines(APT_URIS) == [
        Package("libc6", "2.36-9+deb12u14", "arm64"),
        Package("wpasupplicant", "2:2.10-12+deb12u3", "arm64"),  # the epoch's colon quoted
        Package("tzdata", "2025b-0+deb12u2", "all"),
    ]


def test_unknown_packages_in_apt_order_once() -> None:
    text = (
        "E: Unable to locate package nonexistent-foo\n"
        "E: Package 'mail-transport-agent' has no installation candidate\n"
        "E: Unable to locate package other-missing\n"
        "E: Unable to locate package nonexistent-foo\n"
    )
    assert simoutput.unknown_packages(text) == [
        "nonexistent-foo", "mail-transport-agent", "other-missing",
    ]
    assert simoutput.unknown_packages(APT_URIS) == []


def test_apt_problems_keep_the_unmet_dependencies() -> None:
    text = (
        "Reading package lists...\n"
        "The following packages have unmet dependencies:\n"
        " b : Depends: missing-lib but it is not installable\n"
        "E: Unable to correct problems, you have held broken packages.\n"
    )
    out = simoutput.apt_problems(text)
    assert "b : Depends: missing-lib" in out and out.startswith("The following")


def test_netboot_package_takes_the_highest_version_of_the_arch() -> None:
    names = [
        "debian-installer-12-netboot-amd64", "debian-installer-13-netboot-amd64",
        "debian-installer-13-netboot-arm64", "debian-installer-13-netboot-gtk-amd64",
    ]
    assert plan.netboot_package(names, "amd64") == "debian-installer-13-netboot-amd64"
    assert plan.netboot_package(names, "arm64") == "debian-installer-13-netboot-arm64"
    assert plan.netboot_package(names, "riscv64") is None


def test_sizes_come_from_the_chosen_versions() -> None:
    entries = [
        deb822.Packages({"Package": "a", "Version": "1", "Size": "2048",
                         "Installed-Size": "10"}),
        deb822.Packages({"Package": "a", "Version": "2", "Size": "4096",
                         "Installed-Size": "20"}),
    ]
    chosen = plan.with_sizes([Package("a", "2", "all")], entries)
    assert chosen.download_bytes == 4096 and chosen.installed_bytes == 20 * 1024
    with pytest.raises(PlanError):
        plan.with_sizes([Package("a", "3", "all")], entries)


def test_status_text_marks_entries_installed() -> None:
    entry = deb822.Packages({"Package": "a", "Version": "1", "Architecture": "all",
                             "Depends": "b", "Filename": "pool/a.deb", "Size": "1"})
    status = deb822.Deb822(plan.status_text([entry]))
    assert status["Status"] == "install ok installed"
    assert status["Depends"] == "b"
    assert "Filename" not in status  # a status file has no pool paths


def test_format_plan_shows_the_three_numbers() -> None:
    base = PackageSet([Package("a", "1", "all", 2**20, 1024)])
    added = PackageSet([Package("b", "1", "all", 3 * 2**20, 4096)])
    text = planview.format_plan(plan.Plan("demo", "bookworm", "amd64", "minbase", ["b"],
                                      base, added))
    assert "image: 2 packages, download 4.0 MiB, installed 5.0 MiB" in text


# -- a real apt-get against a local signed repo ---------------------------------------


@dataclass
class Repo:
    mirror: str  # file:// URL
    keyring: Path


def _stanza(name: str, arch: str = "amd64", **fields: str) -> str:
    lines = [f"Package: {name}", "Version: 1.0", f"Architecture: {arch}",
             "Maintainer: Test <t@example.org>", f"Filename: pool/{name}_1.0_{arch}.deb",
             "Size: 1000", "Installed-Size: 100", "Priority: optional",
             "Description: test package"]
    head = [line for line in lines if line.split(":")[0] not in fields]
    head += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
    return "\n".join(head) + "\n"


REPO_PACKAGES = [
    _stanza("base-files", Priority="required", Essential="yes", Size="5000"),
    _stanza("apt", Priority="required", Depends="libapt", Size="3000"),
    _stanza("libapt", Priority="optional"),
    _stanza("linux-image-amd64"),
    _stanza("linux-image-arm64"),
    _stanza("live-boot", arch="all"),
    _stanza("systemd-sysv"),
    _stanza("sudo"),
    _stanza("locales", arch="all"),
    _stanza("task-demo", arch="all", Depends="tool", Recommends="extra-tool", Size="7000"),
    _stanza("tool", Installed_Size="2048"),
    _stanza("extra-tool"),
    _stanza("broken", Depends="not-there"),
    # The boot loaders a medium of amd64 or arm64 takes from the suite.
    *(_stanza(name) for name in dict.fromkeys(
        [*Arch.AMD64.boot.packages, *Arch.ARM64.boot.packages])),  # type: ignore[union-attr]
]


def make_key(home: Path) -> Path:
    """A throwaway signing key in home; returns its public keyring file."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "deblive test <test@example.org>", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    keyring = home / "public.gpg"
    exported = subprocess.run(["gpg", "--batch", "--export"], env=env, check=True,
                              capture_output=True).stdout
    keyring.write_bytes(exported)
    return keyring


def sign_release(home: Path, release: str) -> bytes:
    env = {**os.environ, "GNUPGHOME": str(home)}
    return subprocess.run(["gpg", "--batch", "--clearsign"], input=release.encode(),
                          env=env, check=True, capture_output=True).stdout


def release_text(codename: str, files: dict[str, bytes], arch: str = "amd64") -> str:
    lines = [f"Origin: Debian\nLabel: Debian\nSuite: {codename}\nCodename: {codename}",
             "Date: Sat, 01 Jan 2000 00:00:00 UTC", f"Architectures: {arch}",
             "Components: main", "SHA256:"]
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d)} {n}" for n, d in files.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    base = tmp_path_factory.mktemp("repo")
    home = base / "gnupg"
    keyring = make_key(home)
    dists = base / "debian" / "dists" / "bookworm"
    indexes = {}
    for arch in ("amd64", "arm64"):
        stanzas = [s.replace("Architecture: amd64", f"Architecture: {arch}")
                   for s in REPO_PACKAGES]
        indexes[f"main/binary-{arch}/Packages"] = "\n".join(stanzas).encode()
    for rel, data in indexes.items():
        (dists / rel).parent.mkdir(parents=True)
        (dists / rel).write_bytes(data)
    (dists / "InRelease").write_bytes(
        sign_release(home, release_text("bookworm", indexes, arch="amd64 arm64"))
    )
    return Repo(f"file://{base / 'debian'}", keyring)


def repo_config(repo: Repo, **data: object) -> config.ImageConfig:
    return conftest.parse({"name": "demo", "suite": "bookworm", "mirror": repo.mirror,
                         "security": False, "updates": False, **data}, None)


@needs_tools
def test_plan_resolves_base_then_tasks_with_recommends(repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, tasks=["task-demo"])
    result = plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)
    assert sorted(p.name for p in result.base.packages) == ["apt", "base-files", "libapt"]
    added = sorted(p.name for p in result.added.packages)
    # Recommends on (extra-tool), the base not counted twice, broken never asked for.
    assert added == ["extra-tool", "linux-image-amd64", "live-boot", "locales", "sudo",
                     "systemd-sysv", "task-demo", "tool"]
    assert result.count == 11
    assert result.base.download_bytes == 5000 + 3000 + 1000
    assert result.added.installed_bytes == (7 * 100 + 2048) * 1024


@needs_tools
def test_a_failed_base_fetch_never_fails_the_plan(repo: Repo, tmp_path: Path) -> None:
    """The repository has indexes and no packages: the fetch fails, the plan stands."""
    cfg = repo_config(repo, tasks=["task-demo"])
    result = plan.make_plan(cfg, RUNNER, tmp_path / "plan", keyring=repo.keyring,
                            fetch_base_into=tmp_path / "archives")
    assert result.count == 11
    assert result.base_fetch is not None and result.base_fetch.files == 0
    assert "apt-get download exited with status 100" in (result.base_fetch.problem or "")
    assert list((tmp_path / "archives").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "plan"]  # scratch gone


@needs_tools
def test_plan_names_every_unknown_package(repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, packages=["no-such-thing", "tool", "nor-this"])
    with pytest.raises(PlanError) as err:
        plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)
    assert err.value.unknown == ["no-such-thing", "nor-this"]
    assert err.value.exit_code == 2


@needs_tools
def test_plan_reports_unresolvable_dependencies(repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, packages=["broken"])
    with pytest.raises(PlanError, match="not-there"):
        plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)


@needs_tools
def test_plan_refuses_a_release_signed_by_an_unknown_key(
    repo: Repo, tmp_path: Path
) -> None:
    other = make_key(tmp_path / "other-gnupg")
    cfg = repo_config(repo, tasks=["task-demo"])
    with pytest.raises(PlanError, match="cannot read the mirror"):
        plan.make_plan(cfg, RUNNER, tmp_path / "cache", keyring=other)


@needs_tools
def test_plan_for_a_foreign_architecture_reads_its_index(repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, architecture="arm64", tasks=["task-demo"])
    result = plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)
    arches = {p.architecture for p in [*result.base.packages, *result.added.packages]}
    assert arches == {"arm64", "all"}
    assert result.count == 11


@needs_tools
def test_a_suite_without_the_boot_loaders_is_refused_by_the_plan(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    keyring = make_key(home)
    dists = tmp_path / "debian" / "dists" / "bookworm"
    stanzas = [s for s in REPO_PACKAGES if not s.startswith("Package: shim-signed\n")]
    indexes = {"main/binary-amd64/Packages": "\n".join(stanzas).encode()}
    (dists / "main/binary-amd64").mkdir(parents=True)
    (dists / "main/binary-amd64/Packages").write_bytes(indexes["main/binary-amd64/Packages"])
    (dists / "InRelease").write_bytes(sign_release(home, release_text("bookworm", indexes)))
    cfg = repo_config(Repo(f"file://{tmp_path / 'debian'}", keyring))
    with pytest.raises(PlanError, match="boot loader packages not in bookworm for amd64: "
                                        r"shim-signed$") as caught:
        plan.make_plan(cfg, RUNNER, tmp_path / "plan", keyring=keyring)
    assert caught.value.unknown == ["shim-signed"]


@needs_tools
def test_plan_for_an_architecture_the_suite_lacks(repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, architecture="s390x")
    # No s390x index: apt must not quietly fall back to another architecture's.
    with pytest.raises(PlanError, match=r"unknown packages.*apt"):
        plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)


@needs_tools
def test_a_new_mirror_index_is_a_base_cache_miss_a_new_date_is_not(tmp_path: Path) -> None:
    """The layered builds' base key follows the mirror's indexes (apt, a signed repo)."""
    home = tmp_path / "gnupg"
    keyring = make_key(home)
    dists = tmp_path / "debian" / "dists" / "bookworm"

    def publish(stanzas: list[str], date: str) -> None:
        indexes = {"main/binary-amd64/Packages": "\n".join(stanzas).encode()}
        for rel, data in indexes.items():
            (dists / rel).parent.mkdir(parents=True, exist_ok=True)
            (dists / rel).write_bytes(data)
        release = release_text("bookworm", indexes).replace(
            "Sat, 01 Jan 2000 00:00:00 UTC", date)
        (dists / "InRelease").write_bytes(sign_release(home, release))

    def inputs() -> basecache.BaseInputs:
        cfg = repo_config(Repo(f"file://{tmp_path / 'debian'}", keyring), tasks=["task-demo"])
        made = plan.make_plan(cfg, RUNNER, tmp_path / "plan", keyring=keyring)
        return basecache.base_inputs(cfg, made.versions, made.indexes, made.requested_names)

    publish(REPO_PACKAGES, "Sat, 01 Jan 2000 00:00:00 UTC")
    first = inputs()
    publish(REPO_PACKAGES, "Sun, 02 Jan 2000 00:00:00 UTC")
    assert inputs().key == first.key  # the same indexes under a new Date
    newer = [s.replace("Version: 1.0", "Version: 1.1") if s.startswith("Package: tool\n")
             else s for s in REPO_PACKAGES]
    publish(newer, "Mon, 03 Jan 2000 00:00:00 UTC")
    changed = inputs()
    assert changed.key != first.key
    assert changed.changed_from(first.as_dict(), list(first.packages)) == [
        "indexes", "packages ~tool"]


@needs_tools
def test_the_plans_lists_are_lent_only_while_they_are_the_ones_it_resolved_from(
        repo: Repo, tmp_path: Path) -> None:
    """A layered build copies these lists into its overlay instead of fetching them."""
    cfg = repo_config(repo, tasks=["task-demo"])
    made = plan.make_plan(cfg, RUNNER, tmp_path, keyring=repo.keyring)
    assert made.lists is not None
    with indexes.held(made.lists, made.architecture, made.indexes) as lists:
        assert lists == made.lists
        assert any(p.name.endswith("_InRelease") for p in lists.iterdir())
        assert any(p.name.endswith("_main_binary-amd64_Packages") for p in lists.iterdir())
    release = next(made.lists.glob("*_InRelease"))
    release.write_text(release.read_text().replace("main/binary-amd64/Packages",
                                                   "main/binary-amd64/Gone"))
    with indexes.held(made.lists, made.architecture, made.indexes) as lists:
        assert lists is None  # replaced since: the build fetches its own
    made.lists = None
    with indexes.held(made.lists, made.architecture, made.indexes) as lists:
        assert lists is None


class CountingRunner(Runner):
    """A real runner that remembers the programs it ran."""

    def __init__(self) -> None:
        super().__init__(BuildLog())
        self.commands: list[str] = []

    def run(self, argv: Any, **kwargs: Any) -> Any:
        self.commands.append(" ".join(map(str, argv[:2])))
        return super().run(argv, **kwargs)


@needs_tools
def test_a_second_plan_of_the_same_inputs_reads_the_kept_resolution(
        repo: Repo, tmp_path: Path) -> None:
    cfg = repo_config(repo, tasks=["task-demo"])
    first_runner, second_runner, other_runner = CountingRunner(), CountingRunner(), CountingRunner()
    first = plan.make_plan(cfg, first_runner, tmp_path, keyring=repo.keyring)
    second = plan.make_plan(cfg, second_runner, tmp_path, keyring=repo.keyring)
    assert "apt-get -q" in first_runner.commands and len(first_runner.commands) > 1
    assert second_runner.commands == ["apt-get -q"]  # the update only: no simulation
    assert second.versions == first.versions and second.count == first.count
    assert second.added.installed_bytes == first.added.installed_bytes
    # Other names asked for: resolved anew; so is a kept result of another shape.
    other = plan.make_plan(repo_config(repo, tasks=["task-demo"], packages=["tool"]),
                           other_runner, tmp_path, keyring=repo.keyring)
    assert len(other_runner.commands) > 1 and other.versions == first.versions
    for kept in (first.lists.parents[1] / "results").glob("*.json"):  # type: ignore[union-attr]
        kept.write_text('{"base": 1}')
    again = CountingRunner()
    assert plan.make_plan(cfg, again, tmp_path, keyring=repo.keyring).versions == first.versions
    assert len(again.commands) > 1


def test_a_relative_cache_directory_gives_apt_absolute_paths(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    apt = plan.private_apt(repo_config(repo), RUNNER, Path("cache/plan"), repo.keyring)
    assert apt.root.is_absolute() and apt.root.is_relative_to(tmp_path)
    assert f'Dir::State "{tmp_path}/cache/plan/' in apt.apt_conf()
