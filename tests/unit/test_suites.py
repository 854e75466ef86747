from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from deblive.host import distroinfo
from deblive.model import suites

CSV = """version,codename,series,created,release,eol,eol-lts,eol-elts
10,Buster,buster,2017-06-17,2019-07-06,2022-09-10,2024-06-30,2029-06-30
11,Bullseye,bullseye,2019-07-06,2021-08-14,2024-08-14,2026-08-31,2031-06-30
12,Bookworm,bookworm,2021-08-14,2023-06-10,2026-07-11,2028-06-30,2033-06-30
13,Trixie,trixie,2023-06-10,2025-08-09,2028-08-09,2030-06-30,2035-06-30
14,Forky,forky,2025-08-09
15,Duke,duke,2027-08-01
,Sid,sid,1993-08-16
,Experimental,experimental,1993-08-16
"""


@pytest.fixture
def table() -> suites.ReleaseTable:
    return suites.ReleaseTable.from_csv(CSV)


@pytest.mark.parametrize(
    ("day", "name", "expected"),
    [
        ("2024-01-01", "stable", "bookworm"),
        ("2024-01-01", "testing", "trixie"),
        ("2024-01-01", "oldstable", "bullseye"),
        ("2025-08-09", "stable", "trixie"),
        ("2025-08-09", "testing", "forky"),
        ("2026-11-26", "unstable", "sid"),
        ("2026-11-26", "bookworm", "bookworm"),
        ("2026-11-26", "forky", "forky"),
    ],
)
def test_resolve(table: suites.ReleaseTable, day: str, name: str, expected: str) -> None:
    assert table.resolve(name, dt.date.fromisoformat(day)) == expected


def test_unknown_and_too_old(table: suites.ReleaseTable) -> None:
    with pytest.raises(suites.SuiteError, match="unknown suite"):
        table.resolve("woody")
    with pytest.raises(suites.SuiteError, match="older than bullseye"):
        table.resolve("buster")
    with pytest.raises(suites.SuiteError, match="unknown suite"):
        table.resolve("experimental")


def test_supported_names_leave_out_future(table: suites.ReleaseTable) -> None:
    names = table.supported_names(dt.date(2026, 11, 26))
    assert names[:4] == ["bullseye", "bookworm", "trixie", "forky"]
    assert "duke" not in names and "sid" in names and "stable" in names


def test_versions_and_order(table: suites.ReleaseTable) -> None:
    assert table.version_of("bookworm") == "12" and table.version_of("sid") == ""
    assert table.is_older("bullseye", "bookworm") and not table.is_older("sid", "bookworm")


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(suites.SuiteError, match="distro-info-data"):
        distroinfo.load(tmp_path / "none.csv")


def test_the_table_is_read_once_per_file(tmp_path: Path) -> None:
    path = tmp_path / "debian.csv"
    path.write_text(CSV)
    first = distroinfo.load(path)
    path.write_text("")
    assert distroinfo.load(path) is first
