"""Declared licences of Debian packages, from their DEP-5 copyright files, as SPDX.

Debian's machine-readable copyright format (copyright-format 1.0) names
licences by short names ("GPL-2+", "Expat", "BSD-3-clause") combined with "or",
"and", "with ... exception" and commas for precedence; SPDX has its own ids
and operators. What maps is translated; anything else becomes a LicenseRef
whose text (the file's stand-alone License paragraph, or a note) goes into the
document, so the expression always validates and never claims more than the
file says.

The file comes from the untrusted image: it is read through ImageTree only, at
most MAX_COPYRIGHT bytes, and whatever cannot be read or parsed gives
NOASSERTION: no copyright file can fail the build or name a host file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any

from debian import copyright as dep5

from deblive.host.imagetree import ImageTree, TreeError

NOASSERTION = "NOASSERTION"
# Boost's copyright file, among the largest in Debian, is 2 MiB; parsing takes
# ~0.25 s/MiB. Beyond this a file is not read: NOASSERTION, not a stalled build.
MAX_COPYRIGHT = 4 << 20
MAX_LICENSE_TEXT = 64 << 10  # of one LicenseRef's text in the document

# python-debian logs every lenient fix-up ("Fixing Format URL" for the many
# http:// Format lines) as a warning, which would flood the build's console.
logging.getLogger("debian.copyright").setLevel(logging.ERROR)

_DEP5 = re.compile(r"^Format:[ \t]*\S*copyright-format/1\.0", re.MULTILINE | re.IGNORECASE)
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*\Z")  # Debian policy 5.6.1; others never read
_OPERATORS = ("and", "or")
_REF = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")

# SPDX ids taken as they are (any case), and Debian's short names (copyright-format
# 1.0, "License specification") that differ. The GNU families are computed (_FAMILY).
_SPDX_IDS = (
    "0BSD", "AFL-2.0", "AFL-2.1", "Apache-1.0", "Apache-1.1", "Apache-2.0", "Artistic-1.0",
    "Artistic-1.0-Perl", "Artistic-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSD-4-Clause",
    "BSD-4-Clause-UC", "BSL-1.0", "bzip2-1.0.6", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0",
    "CC-BY-SA-4.0", "CC0-1.0", "CDDL-1.0", "CPL-1.0", "curl", "EPL-1.0", "EPL-2.0", "FSFAP",
    "FSFUL", "FSFULLR", "FTL", "HPND", "IJG", "Info-ZIP", "ISC", "Latex2e", "Libpng",
    "libpng-2.0", "LPPL-1.3c", "MIT", "MIT-0", "MPL-1.1", "MPL-2.0", "NTP", "OFL-1.1",
    "OpenSSL", "PHP-3.01", "PostgreSQL", "PSF-2.0", "Python-2.0", "QPL-1.0", "Ruby",
    "Sleepycat", "TCL", "Unicode-DFS-2016", "Unlicense", "Vim", "W3C", "WTFPL", "X11", "Zlib",
    "ZPL-2.1",
)
_LICENCES = {**{spdx.lower(): spdx for spdx in _SPDX_IDS},
             "expat": "MIT", "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl",
             "artistic-1": "Artistic-1.0-Perl", "artistic-2": "Artistic-2.0",
             "perl": "Artistic-1.0-Perl OR GPL-1.0-or-later", "bsd-0-clause": "0BSD",
             "cc0": "CC0-1.0", "boost-1.0": "BSL-1.0", "sil-ofl-1.1": "OFL-1.1", "psf-2": "PSF-2.0"}
# GPL-2, GPL-2+, GPL-2.0-only, LGPL-2.1+, GFDL-NIV-1.3+ ... and the versions SPDX has.
_FAMILY = re.compile(r"(agpl|lgpl|gpl|gfdl-niv|gfdl)-(\d(?:\.\d)?)(\+|-only|-or-later)?\Z")
_FAMILIES = {
    "gpl": ("GPL-{}", ("1.0", "2.0", "3.0")),
    "lgpl": ("LGPL-{}", ("2.0", "2.1", "3.0")),
    "agpl": ("AGPL-{}", ("1.0", "3.0")),
    "gfdl": ("GFDL-{}", ("1.1", "1.2", "1.3")),
    "gfdl-niv": ("GFDL-{}-no-invariants", ("1.1", "1.2", "1.3")),
}
_EXCEPTION_IDS = (
    "Autoconf-exception-2.0", "Autoconf-exception-3.0", "Bison-exception-2.2",
    "Classpath-exception-2.0", "eCos-exception-2.0", "Font-exception-2.0", "GCC-exception-2.0",
    "GCC-exception-3.1", "Libtool-exception", "Linux-syscall-note", "LLVM-exception",
    "OCaml-LGPL-linking-exception", "openvpn-openssl-exception", "Qt-GPL-exception-1.0",
    "Qt-LGPL-exception-1.1", "u-boot-exception-2.0", "WxWindows-exception-3.1",
)
# "GPL-2+ with Font exception": the phrase after "with", "exception" dropped.
_EXCEPTIONS = {**{e.lower(): e for e in _EXCEPTION_IDS},
               "font": "Font-exception-2.0", "classpath": "Classpath-exception-2.0",
               "libtool": "Libtool-exception", "llvm": "LLVM-exception",
               "bison": "Bison-exception-2.2"}


def idstring(text: str) -> str:
    """Text as SPDX idstring characters (letters, digits, '.', '-'): '+' as 'plus'."""
    return re.sub(r"[^A-Za-z0-9.-]", lambda m: "plus" if m[0] == "+" else "-", text)[:64]


def _group(expression: str) -> str:
    return f"({expression})" if " " in expression else expression


def spdx_license(short: str) -> str | None:
    """The SPDX id (or expression) of a Debian short licence name; None if unknown."""
    key = short.lower()
    if key in _LICENCES:
        return _LICENCES[key]
    match = _FAMILY.match(key)
    if match is None:
        return None
    family, version, suffix = match.groups()
    version = version if "." in version else f"{version}.0"
    template, versions = _FAMILIES[family]
    if version not in versions:
        return None
    return template.format(version) + ("-or-later" if suffix in ("+", "-or-later") else "-only")


def spdx_exception(phrase: str) -> str | None:
    key = " ".join(phrase.lower().split())
    return _EXCEPTIONS.get(key) or _EXCEPTIONS.get(key.removesuffix(" exception"))


class Licences:
    """Declared licences from copyright files, and the LicenseRefs they needed.

    A name SPDX has no id for becomes LicenseRef-<name>-<hash of name and text>:
    "public-domain" or "other" mean different texts in different packages, and
    an id that depends only on its own text stays the same when packages come
    and go, so SBOMs of two builds compare line by line.
    """

    def __init__(self, known: Mapping[str, dict[str, Any]] | None = None) -> None:
        """known: what earlier builds found, by the copyright file's sha256 (sbommemory)."""
        self.refs: dict[str, dict[str, str]] = {}
        self._parsed: dict[str, str | None] = {}  # by digest: -dev packages share files
        self._known = known or {}
        # This document's files: each one's expression and the LicenseRefs it names.
        self.found: dict[str, dict[str, Any]] = {}

    def declared(self, tree: ImageTree, package: str) -> str:
        if not _PACKAGE_NAME.match(package):
            return NOASSERTION
        try:
            with tree.open_read(f"/usr/share/doc/{package}/copyright") as f:
                data = f.read(MAX_COPYRIGHT + 1)
        except (TreeError, OSError):
            return NOASSERTION
        if len(data) > MAX_COPYRIGHT:
            return NOASSERTION
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._parsed:
            kept = self._known.get(digest)
            if kept is not None:
                expression, refs = kept["expression"], kept["refs"]
                self.refs.update(refs)
            else:
                expression = self._copyright(data.decode("utf-8", errors="replace"))
                refs = {ref: self.refs[ref] for ref in _REF.findall(expression or "")}
            self._parsed[digest] = expression
            self.found[digest] = {"expression": expression, "refs": refs}
        return self._parsed[digest] or NOASSERTION

    def _copyright(self, text: str) -> str | None:
        """The licences of a DEP-5 file's Files paragraphs (else its header's), ANDed."""
        if not _DEP5.search(text.split("\n\n", 1)[0]):
            return None
        try:
            parsed: Any = dep5.Copyright(text.splitlines(), strict=False)
            found = [p.license for p in parsed.all_license_paragraphs()]
            files = [p.license for p in parsed.all_files_paragraphs()]
            found += files
            texts = {" ".join(lic.synopsis.lower().split()): lic.text
                     for lic in reversed(found) if lic is not None and lic.text}
            synopses = [lic.synopsis for lic in files if lic is not None and lic.synopsis]
            if not synopses and parsed.header.license is not None:
                synopses = [parsed.header.license.synopsis]
        except Exception:  # a malformed file trips python-debian in many ways
            return None
        expressions: set[str] = set()
        for synopsis in filter(str.strip, synopses):
            expression = self._expression(synopsis, texts) or self._ref(synopsis, texts,
                                                                         self.refs)
            # "A and B" and "B" give "A AND B", not "(A AND B) AND B".
            flat = "(" not in expression and " OR " not in expression
            expressions.update(expression.split(" AND ") if flat else [expression])
        if not expressions:
            return None
        return " AND ".join(sorted(_group(e) for e in expressions)) \
            if len(expressions) > 1 else expressions.pop()

    def _expression(self, synopsis: str, texts: Mapping[str, str]) -> str | None:
        """DEP-5 "A or B, and C" as SPDX "(A OR B) AND C"; None if it does not parse.

        Within a comma-separated part "and" binds tighter than "or" in both syntaxes.
        """
        pending: dict[str, dict[str, str]] = {}
        result = ""
        for index, segment in enumerate(synopsis.split(",")):
            words, joiner = segment.split(), "AND"
            if index and words and words[0].lower() in _OPERATORS:
                joiner = words.pop(0).upper()
            parts: list[str] = []
            atom: list[str] = []
            for word in [*words, "or"]:  # the sentinel closes the last atom
                if word.lower() not in _OPERATORS:
                    atom.append(word)
                    continue
                if not atom:
                    return None
                parts += [self._atom(atom, texts, pending), word.upper()]
                atom = []
            part = parts[0] if len(parts) == 2 else " ".join(_group(p) for p in parts[:-1])
            result = part if not index else f"{_group(result)} {joiner} {_group(part)}"
        self.refs.update(pending)
        return result

    def _atom(self, words: list[str], texts: Mapping[str, str],
              pending: dict[str, dict[str, str]]) -> str:
        """One licence: "GPL-2+" or "GPL-2+ with Font exception"; else a LicenseRef."""
        if len(words) == 1 and (spdx := spdx_license(words[0])):
            return spdx
        if len(words) > 2 and words[1].lower() == "with":
            base, exception = spdx_license(words[0]), spdx_exception(" ".join(words[2:]))
            if base and exception and " " not in base:
                return f"{base} WITH {exception}"
        return self._ref(" ".join(words), texts, pending)

    @staticmethod
    def _ref(name: str, texts: Mapping[str, str], into: dict[str, dict[str, str]]) -> str:
        name = " ".join(name.split())
        text = texts.get(name.lower()) or (
            f'The Debian copyright file names the licence "{name}" without its text.')
        if len(text) > MAX_LICENSE_TEXT:
            text = text[:MAX_LICENSE_TEXT] + "\n[truncated]"
        digest = hashlib.sha256(f"{name}\0{text}".encode()).hexdigest()[:12]
        ref = f"LicenseRef-{idstring(name)}-{digest}"
        into[ref] = {"licenseId": ref, "name": name, "extractedText": text}
        return ref
