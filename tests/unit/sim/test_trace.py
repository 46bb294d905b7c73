from __future__ import annotations

from pathlib import Path

import pytest

from fleet.sim.trace import load_trace, parse_trace
from protocol.errors import DataError


def test_parses_merges_and_keeps_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("device,start,end\nb,10,20\na,0,5\nb,15,30\n\nb,40,50\n")
    devices, windows = load_trace(path)
    assert devices == ["b", "a"]
    assert windows[0].intervals == ((10.0, 30.0), (40.0, 50.0))
    assert windows[1].intervals == ((0.0, 5.0),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dev,start,end\na,0,1\n", "line 1: header"),
        ("", "line 1: header"),
        ("device,start,end\na,0\n", "line 2: expected 3 fields"),
        ("device,start,end\na,0,1\n,0,1\n", "line 3: empty device id"),
        ("device,start,end\na,zero,1\n", "line 2: start/end must be numbers"),
        ("device,start,end\na,0,nan\n", "line 2: start/end must be finite"),
        ("device,start,end\na,5,5\n", "line 2: need 0 <= start < end"),
        ("device,start,end\na,-1,5\n", "line 2: need 0 <= start < end"),
        ("device,start,end\n", "no windows"),
    ],
)
def test_refusals_name_the_file_and_line(text: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        parse_trace(text, "fleet.csv")
    assert "fleet.csv" in str(info.value)


def test_missing_and_binary_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_trace(tmp_path / "nope.csv")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="UTF-8"):
        load_trace(bad)
