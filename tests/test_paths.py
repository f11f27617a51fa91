"""Windows <-> POSIX path spelling (dtf.paths): drives, UNC shares, relative paths, mixed
separators, both directions and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.errors import DtfError
from dtf.paths import convert_path, to_posix, to_windows


@pytest.mark.parametrize(
    ("windows", "posix"),
    [
        ("C:\\Users\\ann\\models\\bert.onnx", "/c/Users/ann/models/bert.onnx"),
        ("D:\\", "/d"),
        ("\\\\server\\share\\models\\x.bin", "//server/share/models/x.bin"),
        ("models\\bert", "models/bert"),
        ("..\\up\\there", "../up/there"),
        ("\\opt\\dtf", "/opt/dtf"),
    ],
)
def test_windows_and_posix_spellings_convert_both_ways(windows: str, posix: str) -> None:
    assert to_posix(windows) == posix
    assert to_windows(posix) == windows


def test_wsl_style_mounts_drives_under_mnt() -> None:
    assert to_posix("C:\\data\\x", style="wsl") == "/mnt/c/data/x"
    assert to_windows("/mnt/c/data/x", style="wsl") == "C:\\data\\x"


def test_msys_style_leaves_mnt_paths_alone() -> None:
    assert to_windows("/mnt/c/data") == "\\mnt\\c\\data"


def test_mixed_separators_are_both_read_as_separators() -> None:
    assert to_windows("C:/work\\dtf/logs") == "C:\\work\\dtf\\logs"
    assert to_posix("C:/work\\dtf/logs") == "/c/work/dtf/logs"
    assert to_windows("a/b\\c") == "a\\b\\c"


def test_drive_letters_are_upper_case_on_windows_and_lower_case_on_posix() -> None:
    assert to_windows("c:\\x") == "C:\\x"
    assert to_windows("/e/x") == "E:\\x"
    assert to_posix("E:\\x") == "/e/x"


def test_extended_length_prefix_is_dropped() -> None:
    assert to_posix("\\\\?\\C:\\very\\long") == "/c/very/long"
    assert to_posix("\\\\?\\UNC\\server\\share\\x") == "//server/share/x"


def test_repeated_separators_collapse() -> None:
    assert to_windows("/c//x///y/") == "C:\\x\\y"
    assert to_posix("C:\\\\x\\\\y\\") == "/c/x/y"


def test_empty_path_is_the_current_directory() -> None:
    assert to_windows("") == "."
    assert to_posix("") == "."


def test_drive_relative_paths_are_refused() -> None:
    with pytest.raises(DtfError, match="current directory of drive"):
        to_posix("C:relative")


def test_a_colon_inside_a_name_is_refused_for_windows() -> None:
    with pytest.raises(DtfError, match="':'"):
        to_windows("/opt/dtf/logs/run:1")


def test_conversion_is_idempotent() -> None:
    for path in ("C:\\x\\y", "\\\\srv\\share\\a", "rel\\p"):
        assert to_windows(to_windows(path)) == to_windows(path)
    for path in ("/c/x/y", "//srv/share/a", "rel/p", "/opt/dtf"):
        assert to_posix(to_posix(path)) == to_posix(path)


def test_convert_path_picks_the_spelling_of_the_platform() -> None:
    assert convert_path("/c/dtf", "windows") == "C:\\dtf"
    for platform in ("linux", "macos", "docker", "kubernetes"):
        assert convert_path("C:\\dtf", platform) == "/c/dtf"


def test_convert_path_refuses_an_unknown_platform() -> None:
    with pytest.raises(DtfError, match="unknown platform 'amiga'"):
        convert_path("/x", "amiga")


# Names that are valid on both systems: no separators, no ':', not '.' (which both drop).
_NAME = st.text(
    alphabet=st.characters(exclude_characters="/\\:\x00"),
    min_size=1,
    max_size=12,
).filter(lambda name: name != ".")
_RELATIVE = st.lists(_NAME, min_size=1, max_size=6)
_DRIVE = st.sampled_from("ACDZ")


@given(_RELATIVE)
def test_relative_posix_paths_survive_a_round_trip(parts: list[str]) -> None:
    posix = "/".join(parts)
    assert to_posix(to_windows(posix)) == posix


@given(_RELATIVE)
def test_relative_windows_paths_survive_a_round_trip(parts: list[str]) -> None:
    windows = "\\".join(parts)
    assert to_windows(to_posix(windows)) == windows


@given(_DRIVE, _RELATIVE, st.sampled_from(["msys", "wsl"]))
def test_absolute_drive_paths_survive_a_round_trip(drive: str, parts: list[str], style: str) -> None:
    windows = f"{drive}:\\" + "\\".join(parts)
    assert to_windows(to_posix(windows, style=style), style=style) == windows  # type: ignore[arg-type]


@given(_RELATIVE)
def test_unc_paths_survive_a_round_trip(parts: list[str]) -> None:
    windows = "\\\\server\\share\\" + "\\".join(parts)
    assert to_windows(to_posix(windows)) == windows
