"""Reading conditions from a sysfs-shaped folder tree."""

from __future__ import annotations

from pathlib import Path

from agent.conditions import LinuxConditions, read_power, read_temperature
from agent.config import ConditionsSettings


def supply(root: Path, name: str, **files: str) -> None:
    d = root / name
    d.mkdir(parents=True)
    for k, v in files.items():
        (d / k).write_text(v + "\n")


def test_phone_like_battery_on_usb(tmp_path: Path) -> None:
    supply(tmp_path, "battery", type="Battery", capacity="67", status="Discharging", present="1")
    supply(tmp_path, "usb", type="USB", online="1")
    assert read_power(tmp_path) == (67.0, True)


def test_laptop_unplugged_two_batteries_lowest_counts(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", capacity="80", status="Discharging")
    supply(tmp_path, "BAT1", type="Battery", capacity="35", status="Discharging")
    supply(tmp_path, "AC", type="Mains", online="0")
    assert read_power(tmp_path) == (35.0, False)


def test_battery_reporting_full_counts_as_charging(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", capacity="100", status="Full")
    assert read_power(tmp_path) == (100.0, True)


def test_no_power_supply_at_all(tmp_path: Path) -> None:
    assert read_power(tmp_path / "absent") == (None, False)


def test_hottest_zone_in_celsius(tmp_path: Path) -> None:
    for i, milli in enumerate(["41500", "63250", "garbage"]):
        supply(tmp_path, f"thermal_zone{i}", temp=milli)
    assert read_temperature(tmp_path) == 63.25
    assert read_temperature(tmp_path / "none") is None


def test_linux_source_reads_and_caches(tmp_path: Path) -> None:
    power, thermal, metered = tmp_path / "p", tmp_path / "t", tmp_path / "metered"
    supply(power, "BAT0", type="Battery", capacity="90", status="Charging")
    supply(thermal, "thermal_zone0", temp="50000")
    now = [0.0]
    src = LinuxConditions(
        ConditionsSettings(power_supply_dir=power, thermal_dir=thermal, metered_file=metered),
        min_period_s=1.0,
        clock=lambda: now[0],
    )
    first = src.read()
    assert (first.battery_percent, first.charging, first.temperature_c, first.metered) == (
        90.0,
        True,
        50.0,
        False,
    )
    assert 0.0 <= first.cpu_percent <= 100.0
    metered.touch()
    assert src.read() is first  # cached within min_period_s
    now[0] = 2.0
    assert src.read().metered
