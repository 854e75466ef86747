from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

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
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "debian.csv"
    path.write_text(CSV)
    return path


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
def test_resolve(csv_path: Path, day: str, name: str, expected: str) -> None:
    assert suites.resolve(name, dt.date.fromisoformat(day), csv_path) == expected


def test_unknown_and_too_old(csv_path: Path) -> None:
    with pytest.raises(suites.SuiteError, match="unknown suite"):
        suites.resolve("woody", path=csv_path)
    with pytest.raises(suites.SuiteError, match="older than bullseye"):
        suites.resolve("buster", path=csv_path)
    with pytest.raises(suites.SuiteError, match="unknown suite"):
        suites.resolve("experimental", path=csv_path)


def test_supported_names_leave_out_future(csv_path: Path) -> None:
    names = suites.supported_names(dt.date(2026, 11, 26), csv_path)
    assert names[:4] == ["bullseye", "bookworm", "trixie", "forky"]
    assert "duke" not in names and "sid" in names and "stable" in names


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(suites.SuiteError, match="distro-info-data"):
        suites.resolve("stable", path=tmp_path / "none.csv")
