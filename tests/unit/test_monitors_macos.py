"""The macOS parsers on real published outputs (tests/unit/fixtures/macos/README.md says where each
came from), and on one malformed input each."""

from __future__ import annotations

from pathlib import Path

import pytest

from w4tui.monitors import macos

FIXTURES = Path(__file__).parent / "fixtures" / "macos"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_ioreg_apple_silicon_gpu_utilisation_and_memory():
    (gpu,) = macos.parse_ioreg_accelerators(fixture("ioreg_m1pro.txt"))
    assert gpu.name == "AGXAcceleratorG13X"
    assert gpu.utilization == 2.0
    assert gpu.in_use == 340983808  # "In use system memory", not "Alloc system memory"
    assert gpu.allocated == 1214005248
    assert (gpu.renderer, gpu.tiler) == (2.0, 2.0)


def test_ioreg_takes_the_bare_in_use_key_not_the_driver_variant():
    # Constructed: newer macOS versions add "In use system memory (driver)" beside the key that counts.
    text = (
        "+-o AGXAcceleratorG16G  <class AGXAcceleratorG16G>\n"
        '      "PerformanceStatistics" = {"In use system memory (driver)"=0,"Alloc system memory"=1574862848,'
        '"Device Utilization %"=21,"In use system memory"=351141888}\n      "model" = "Apple M4"\n'
    )
    (gpu,) = macos.parse_ioreg_accelerators(text)
    assert (gpu.name, gpu.utilization, gpu.in_use) == ("Apple M4", 21.0, 351141888)


@pytest.mark.parametrize("text", [fixture("ioreg_intel_no_perfstats.txt"), "", "ioreg: command failed\n"])
def test_ioreg_without_performance_statistics_is_unexpected(text):
    with pytest.raises(macos.UnexpectedOutput, match="ioreg"):
        macos.parse_ioreg_accelerators(text)


def test_pressure_level_from_sysctl():
    assert macos.parse_pressure_level(fixture("sysctl_pressure_normal.txt")) == "normal"
    assert macos.parse_pressure_level(fixture("sysctl_pressure_critical.txt")) == "critical"
    assert macos.parse_pressure_level("2\n") == "warn"  # sysctl -n


@pytest.mark.parametrize("text", [fixture("sysctl_pressure_malformed.txt"), "kern.memorystatus_vm_pressure_level: 3"])
def test_pressure_level_malformed(text):
    with pytest.raises(macos.UnexpectedOutput, match="memorystatus_vm_pressure_level"):
        macos.parse_pressure_level(text)


def test_memory_pressure_free_percentage():
    assert macos.parse_memory_pressure_free(fixture("memory_pressure_free.txt")) == 66
    with pytest.raises(macos.UnexpectedOutput, match="memory_pressure"):
        macos.parse_memory_pressure_free("The system has 2147483648 (524288 pages with a page size of 4096).\n")


def test_swapusage_with_a_decimal_comma_in_mebibytes():
    swap = macos.parse_swapusage(fixture("sysctl_swapusage.txt"))
    assert swap.total == 1024 * 2**20
    assert swap.used == round(379.25 * 2**20)
    assert swap.free == round(644.75 * 2**20)
    assert swap.encrypted


def test_swapusage_malformed():
    with pytest.raises(macos.UnexpectedOutput, match="vm.swapusage"):
        macos.parse_swapusage(fixture("sysctl_swapusage_malformed.txt"))


def test_pmset_batt_on_battery():
    power = macos.parse_pmset_batt(fixture("pmset_batt_discharging.txt"))
    assert power.on_battery
    assert (power.percent, power.state, power.remaining_s) == (89, "discharging", 4 * 3600 + 47 * 60)
    no_estimate = macos.parse_pmset_batt(fixture("pmset_batt_no_estimate.txt"))
    assert (no_estimate.percent, no_estimate.remaining_s) == (90, None)


def test_pmset_batt_on_ac():
    attached = macos.parse_pmset_batt(fixture("pmset_batt_ac_attached.txt"))
    assert not attached.on_battery and (attached.percent, attached.state) == (88, "AC attached")
    charging = macos.parse_pmset_batt(fixture("pmset_batt_charging.txt"))
    assert (charging.state, charging.remaining_s) == ("charging", 3900)
    desktop = macos.parse_pmset_batt(fixture("pmset_batt_desktop.txt"))
    assert desktop.source == "AC Power" and desktop.percent is None


def test_pmset_batt_apple_silicon_with_the_battery_id():
    power = macos.parse_pmset_batt(fixture("pmset_batt_m1_id.txt"))
    assert (power.source, power.percent, power.state, power.remaining_s) == ("AC Power", 80, "AC attached", None)


def test_pmset_batt_malformed():
    with pytest.raises(macos.UnexpectedOutput, match="pmset -g batt"):
        macos.parse_pmset_batt(fixture("pmset_batt_malformed.txt"))


def test_pmset_therm_apple_silicon_reports_nothing():
    thermal = macos.parse_pmset_therm(fixture("pmset_therm_apple_silicon.txt"))
    assert not thermal.reported and not thermal.throttled


def test_pmset_therm_intel_throttled_and_full_speed():
    throttled = macos.parse_pmset_therm(fixture("pmset_therm_throttled.txt"))
    assert (throttled.speed_limit, throttled.scheduler_limit) == (28, 40) and throttled.throttled
    full = macos.parse_pmset_therm(fixture("pmset_therm_full_speed.txt"))
    assert full.reported and not full.throttled


def test_pmset_therm_malformed():
    with pytest.raises(macos.UnexpectedOutput, match="pmset -g therm"):
        macos.parse_pmset_therm(fixture("pmset_therm_malformed.txt"))
