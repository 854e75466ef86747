"""Extra signed archives: a distribution's own packages beside Debian's.

Each repository of the config is checked like the mirror before anything is
touched: its Release must verify with the key the config names (a missing
or wrong signature ends the run with exit status 2 naming the repository;
no archive is ever marked trusted). Its key is kept in binary form (apt's
and gpgv's keyring format), its sources are deb822 paragraphs with
Signed-By, and an optional pin priority goes into apt's preferences.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from debian import deb822

from deblive.apt import archive
from deblive.apt.keyring import SignatureError, verify_clearsigned
from deblive.core import http
from deblive.core.errors import BadInputError
from deblive.core.runner import Runner
from deblive.model.config import ImageConfig
from deblive.model.sections import Repository

ARMOUR_BEGIN = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
PIN_VALUE_RE = re.compile(r"[A-Za-z0-9._+~-]{1,64}")
MAX_KEY_BYTES = 1 << 20


class RepositoryError(BadInputError):
    """An extra repository is unreachable, unsigned, wrongly signed or lacks the suite."""


def dearmour(data: bytes) -> bytes:
    """An OpenPGP key as binary packets (RFC 4880 section 6): gpgv and apt take only those
    in a keyring file; ValueError when it is neither armoured nor binary OpenPGP."""
    if len(data) > MAX_KEY_BYTES:
        raise ValueError("larger than 1 MiB: not a public key")
    if data.lstrip().startswith(ARMOUR_BEGIN):
        text = data.decode("ascii", errors="strict").strip().splitlines()
        try:
            blank = next(i for i, line in enumerate(text) if not line.strip())
        except StopIteration:
            raise ValueError("armoured key without a body") from None
        body = []
        for line in text[blank + 1:]:
            if line.startswith(("=", "-----END")):
                break
            body.append(line.strip())
        try:
            data = base64.b64decode("".join(body), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the armoured key's body is not base64") from None
    if not data or not data[0] & 0x80:
        raise ValueError("not an OpenPGP key (armoured or binary)")
    return data


def _slug(uri: str) -> str:
    host = urlsplit(uri).hostname or "local"
    return re.sub(r"[^a-z0-9.-]+", "-", host.lower()).strip(".-") or "local"


@dataclass(frozen=True)
class ExtraArchive:
    """One extra archive as apt is told about it: sources, key, pin."""

    name: str  # deblive-<n>-<host>: names its key, sources and preferences files
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]  # empty for a flat archive (Suites: ./)
    keyring: bytes
    ship: bool = True
    priority: int | None = None
    # apt_preferences(5) release terms from its verified Release (o=Origin,l=Label):
    # a pin for this archive only, not for everything its host serves.
    pin_release: str | None = None

    @property
    def namespace(self) -> str:
        """The purl namespace of its packages (pkg:deb/<namespace>/...): its host."""
        return _slug(self.uri)

    def paragraph(self, keyring_dir: str) -> deb822.Deb822:
        para = deb822.Deb822()
        para["Types"] = "deb"
        para["URIs"] = self.uri
        para["Suites"] = " ".join(self.suites)
        if self.components:
            para["Components"] = " ".join(self.components)
        para["Signed-By"] = f"{keyring_dir}/{self.name}.gpg"
        return para

    def preferences(self) -> str | None:
        """An apt pin for this archive's packages (apt_preferences(5)), by the Origin and
        Label of its Release."""
        if self.priority is None or self.pin_release is None:
            return None
        return (f"Explanation: deblive: {self.name}\nPackage: *\n"
                f"Pin: release {self.pin_release}\nPin-Priority: {self.priority}\n")


def extra_archive(config: ImageConfig, index: int, repo: Repository) -> ExtraArchive:
    """The config's repository with its key read (RepositoryError for a bad key)."""
    key = config.base_dir / repo.key
    where = f"{config.where}: repositories[{index}].key"
    try:
        if not key.is_file():
            raise RepositoryError(f"{where}: {key} is not a regular file")
        with key.open("rb") as f:
            keyring = dearmour(f.read(MAX_KEY_BYTES + 1))
    except OSError as exc:
        raise RepositoryError(f"{where}: cannot read {key}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{where}: {key}: {exc}") from None
    return ExtraArchive(f"deblive-{index + 1}-{_slug(repo.uri)}", repo.uri,
                        config.repository_suites(repo), repo.components, keyring,
                        repo.ship, repo.priority)


def extra_archives(config: ImageConfig) -> list[ExtraArchive]:
    return [extra_archive(config, i, repo) for i, repo in enumerate(config.repositories)]


def _get(url: str) -> bytes | None:
    """url's content, or None when it is not there (HTTP 403, 404, 410)."""
    try:
        return http.get(url, timeout=20)
    except http.HttpStatusError as exc:
        if exc.code not in (403, 404, 410):
            raise
        return None


def _signed_release(uri: str, suite: str) -> tuple[bytes, bytes | None]:
    """(InRelease, None), or (Release, Release.gpg or b"" when unsigned)."""
    base = f"{uri}/dists/{suite}"
    inline = _get(f"{base}/InRelease")
    if inline is not None:
        return inline, None
    release = _get(f"{base}/Release")
    if release is None:
        raise http.HttpStatusError(f"{base}/Release", 404)
    return release, _get(f"{base}/Release.gpg") or b""


def verified_release(runner: Runner, archive_: ExtraArchive, suite: str) -> deb822.Release:
    """The suite's Release, its signature verified with the archive's own key."""
    with tempfile.TemporaryDirectory(prefix="deblive-key-") as tmp:
        keyring = Path(tmp) / "key.gpg"
        keyring.write_bytes(archive_.keyring)
        signed, detached = _signed_release(archive_.uri, suite)
        if detached is None:
            return deb822.Release(verify_clearsigned(runner, signed, keyring))
        if not detached:
            raise SignatureError("no InRelease and no Release.gpg: the archive is not signed")
        (Path(tmp) / "Release").write_bytes(signed)
        (Path(tmp) / "Release.gpg").write_bytes(detached)
        result = runner.run(["gpgv", "--keyring", str(keyring), str(Path(tmp) / "Release.gpg"),
                             str(Path(tmp) / "Release")], capture=True, quiet=True, check=False,
                            stderr="capture", what="checking a signature")
        if result.returncode != 0:
            detail = result.errors.strip().splitlines()[-1:] or ["?"]
            raise SignatureError(f"Release.gpg not valid with the key: {detail[0]}")
        return deb822.Release(signed.decode("utf-8", errors="replace"))


def release_terms(release: deb822.Release) -> str | None:
    """o=Origin,l=Label of a Release, for a pin; None when it has neither, or one that a
    pin line cannot hold (anything but letters, digits and . _ + ~ -)."""
    terms = [f"{key}={release[field]}" for key, field in (("o", "Origin"), ("l", "Label"))
             if field in release]
    if not terms or not all(PIN_VALUE_RE.fullmatch(t.split("=", 1)[1]) for t in terms):
        return None
    return ",".join(terms)


def check_repositories(config: ImageConfig, runner: Runner) -> list[ExtraArchive]:
    """Every extra repository reachable, signed by its key and carrying what is asked."""
    archives = extra_archives(config)
    checked = []
    for index, extra in enumerate(archives):
        where = f"{config.where}: repositories[{index}] ({extra.uri})"
        pins: set[str | None] = set()
        for suite in extra.suites:
            try:
                release = verified_release(runner, extra, suite)
            except SignatureError as exc:
                raise RepositoryError(f"{where}: suite {suite}: {exc}; deblive builds only "
                                      "from archives signed by the key given") from None
            except http.HttpStatusError as exc:
                raise RepositoryError(f"{where}: {exc.url} answered HTTP {exc.code}: "
                                      f"no suite {suite} there") from None
            except http.UnreachableError as exc:
                raise RepositoryError(f"{where} is unreachable: {exc.reason}") from None
            archive.check_release_carries(release, config, f"{where}: suite {suite}",
                                          extra.components, flat_ok=True)
            pins.add(release_terms(release))
        pin = pins.pop() if len(pins) == 1 else None
        if extra.priority is not None and pin is None:
            raise RepositoryError(f"{where}: priority: its Release names no Origin or Label "
                                  "(the same in every suite, of letters, digits and . _ + ~ -) "
                                  "to pin it by")
        checked.append(dataclasses.replace(extra, pin_release=pin))
    return checked
