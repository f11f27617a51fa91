"""The pure parsers of dtf.hardware against recorded real tool outputs
(tests/fixtures/hardware, provenance in its README), plus garbage and arbitrary text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.hardware import (
    CpuInfo,
    arm_cpu_name,
    cgroup_dirs,
    cpu_from_sysctl,
    is_apple_silicon,
    memory_from_sysctl,
    merge_mig_devices,
    parse_cgroup_cpu_max,
    parse_cgroup_memory_limit,
    parse_cgroup_v1_cpu,
    parse_clinfo_list,
    parse_cpuinfo,
    parse_lspci,
    parse_meminfo,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_os_release,
    parse_proc_cgroup,
    parse_rocm_smi_csv,
    parse_rocm_smi_json,
    parse_sw_vers,
    parse_sycl_ls,
    parse_sysctl,
    parse_system_profiler_displays,
    parse_torch_probe,
    parse_wmic_cpu,
)
from dtf.model import GpuInfo

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"


def fixture(name: str) -> str:
    # newline="" keeps wmic's \r\r\n exactly as recorded
    with open(FIXTURES / name, encoding="utf-8", newline="") as handle:
        return handle.read()


def test_every_recorded_fixture_is_used_by_a_test() -> None:
    sources = "".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_hardware*.py"))
    unused = [p.name for p in FIXTURES.iterdir() if not p.name.startswith((".", "README")) and p.name not in sources]
    assert unused == []


# --- nvidia-smi --query-gpu ----------------------------------------------------------------

RTX2080_FIELDS = (
    "power.limit,power.min_limit,power.max_limit,memory.total,vbios_version,driver_version,name,"
    "gpu_uuid,power.draw,temperature.gpu,temperature.memory,clocks.current.graphics,clocks.sm,"
    "clocks.mem,utilization.gpu,utilization.memory,fan.speed,pcie.link.width.current,pstate"
).split(",")


def test_nvidia_smi_csv_with_header_and_units_reads_the_h100() -> None:
    [gpu] = parse_nvidia_smi_csv(fixture("nvidia-smi_query-gpu_csv_h100-80gb-hbm3_allfields.csv"))
    assert gpu == GpuInfo(
        vendor="nvidia",
        name="NVIDIA H100 80GB HBM3",
        memory_mb=81559.0,
        driver="590.48.01",
        compute_capability="9.0",
        index=0,
        uuid="GPU-00000000-0000-0000-0000-000000000000",
        utilization_percent=0.0,
        memory_used_mb=0.0,
    )


def test_nvidia_smi_csv_header_names_columns_in_any_order() -> None:
    gpus = parse_nvidia_smi_csv(fixture("nvidia-smi_query-gpu_csv_2gpu-titanv-rtx5880.csv"))
    assert [(g.index, g.name, g.compute_capability, g.driver) for g in gpus] == [
        (0, "NVIDIA TITAN V", "7.0", "570.86.15"),
        (1, "NVIDIA RTX 5880 Ada Generation", "8.9", "570.86.15"),
    ]
    assert all(g.memory_mb is None for g in gpus)  # not asked for, so unknown


def test_nvidia_smi_csv_without_header_follows_the_given_fields() -> None:
    [gpu] = parse_nvidia_smi_csv(
        fixture("nvidia-smi_query-gpu_csv-noheader_h100-nvl.csv"), fields=("name", "pci.device_id")
    )
    assert gpu.name == "NVIDIA H100 NVL"


def test_nvidia_smi_csv_with_bare_na_and_nounits_keeps_the_known_fields() -> None:
    text = fixture("nvidia-smi_query-gpu_csv-noheader-nounits_rtx2080_with-na.csv")
    [gpu] = parse_nvidia_smi_csv(text, fields=RTX2080_FIELDS)
    assert (gpu.name, gpu.memory_mb, gpu.driver, gpu.utilization_percent) == (
        "GeForce RTX 2080",
        7979.0,
        "440.64",
        86.0,
    )
    assert gpu.uuid == "GPU-22b2c6ac-2d49-4863-197c-9c469071178a"  # gpu_uuid is uuid's older name


def test_nvidia_smi_row_with_a_different_column_count_is_skipped() -> None:
    # The RTX 2080 row has 19 columns; read with the default 8-field query it is not a GPU.
    assert parse_nvidia_smi_csv(fixture("nvidia-smi_query-gpu_csv-noheader-nounits_rtx2080_with-na.csv")) == []


def test_nvidia_smi_with_na_fields_gives_none_memory() -> None:
    # Constructed in detect()'s own field order (no recorded sample uses exactly it).
    text = "0, Tesla K80, GPU-1234, [N/A], [N/A], [Not Supported], 470.82.01, 3.7\n"
    [gpu] = parse_nvidia_smi_csv(text)
    assert (gpu.memory_mb, gpu.memory_used_mb, gpu.utilization_percent) == (None, None, None)
    assert (gpu.index, gpu.name, gpu.driver, gpu.compute_capability) == (0, "Tesla K80", "470.82.01", "3.7")


def test_nvidia_smi_units_are_stripped_when_nounits_is_not_honoured() -> None:
    text = "1, NVIDIA A10, GPU-9, 23028 MiB, 1 GiB, 37 %, 535.54.03, 8.6\n"
    [gpu] = parse_nvidia_smi_csv(text)
    assert (gpu.memory_mb, gpu.memory_used_mb, gpu.utilization_percent) == (23028.0, 1024.0, 37.0)


def test_nvidia_smi_repeated_header_rows_are_skipped() -> None:
    header = (
        "index, name, uuid, memory.total [MiB], memory.used [MiB], utilization.gpu [%], driver_version, compute_cap\n"
    )
    row = "0, NVIDIA L4, GPU-1, 23034 MiB, 0 MiB, 0 %, 550.54.15, 8.9\n"
    assert [g.name for g in parse_nvidia_smi_csv(header + row + header + row)] == ["NVIDIA L4", "NVIDIA L4"]


def test_nvidia_smi_driver_error_text_gives_no_gpus() -> None:
    assert parse_nvidia_smi_csv(fixture("nvidia-smi_error_no-driver.txt")) == []
    assert parse_nvidia_smi_list(fixture("nvidia-smi_error_no-driver.txt")) == []


@pytest.mark.parametrize("text", ["", "\n\n", "No devices were found\n", "\x00\xff,,,\n,,,,,,,\n", "a,b\n1,2,3"])
def test_nvidia_smi_empty_or_garbage_output_gives_no_gpus(text: str) -> None:
    assert parse_nvidia_smi_csv(text) == []
    assert parse_nvidia_smi_list(text) == []


# --- nvidia-smi -L and MIG -------------------------------------------------------------------


def test_nvidia_smi_list_reads_mig_instances_under_their_gpu() -> None:
    gpus = parse_nvidia_smi_list(fixture("nvidia-smi_L_h100-mig.txt"))
    assert [(g.index, g.mig, g.name) for g in gpus] == [
        (0, False, "NVIDIA H100 80GB HBM3"),
        (0, True, "NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
        (0, True, "NVIDIA H100 80GB HBM3 MIG 2g.20gb"),
        (0, True, "NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
        (0, True, "NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
    ]
    assert gpus[1].uuid == "MIG-00000000-0000-0000-0000-000000000000"


def test_nvidia_smi_list_with_one_gpu_in_mig_mode_of_four() -> None:
    gpus = parse_nvidia_smi_list(fixture("nvidia-smi_L_4x-a100-sxm4-80gb_gpu0-mig.txt"))
    assert [g.index for g in gpus if not g.mig] == [0, 1, 2, 3]
    assert next(g.uuid for g in gpus if g.mig) == "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"
    assert {g.index for g in gpus if g.mig} == {0}


def test_gpus_in_mig_mode_are_replaced_by_their_instances() -> None:
    # The query rows are constructed; the -L listing is the recorded 4x A100 one.
    cards = [GpuInfo("nvidia", "NVIDIA A100-SXM4-80GB", 81920.0, "535.54.03", "8.0", index=i) for i in range(4)]
    merged = merge_mig_devices(cards, parse_nvidia_smi_list(fixture("nvidia-smi_L_4x-a100-sxm4-80gb_gpu0-mig.txt")))
    assert [(g.index, g.mig) for g in merged] == [(0, True)] * 4 + [(1, False), (2, False), (3, False)]
    instance = merged[0]
    assert (instance.driver, instance.compute_capability, instance.memory_mb) == ("535.54.03", "8.0", None)


def test_mig_listing_from_another_machine_leaves_unmatched_gpus_alone() -> None:
    card = GpuInfo("nvidia", "NVIDIA H100 80GB HBM3", index=3)
    assert merge_mig_devices([card], parse_nvidia_smi_list(fixture("nvidia-smi_L_h100-mig.txt"))) == [card]


# --- rocm-smi ----------------------------------------------------------------------------------


def test_rocm_smi_json_reads_one_radeon() -> None:
    [gpu] = parse_rocm_smi_json(fixture("rocm-smi_json_rx7900xt_productname-use-meminfo.json"))
    assert gpu == GpuInfo(
        vendor="amd",
        name="Radeon RX 7900 XT",
        memory_mb=21458059264 / 2**20,
        compute_capability="gfx1100",
        index=0,
        utilization_percent=0.0,
        memory_used_mb=27856896 / 2**20,
    )


def test_rocm_smi_json_with_old_key_case_and_system_object_reads_four_mi100() -> None:
    gpus = parse_rocm_smi_json(fixture("rocm-smi_json_4x-mi100_rocm602.json"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.name for g in gpus} == {"Arcturus GL-XL [Instinct MI100]"}
    assert {g.memory_mb for g in gpus} == {34342961152 / 2**20}
    assert {g.driver for g in gpus} == {"6.3.6"}  # from the "system" object


def test_rocm_smi_json_with_leading_blank_line_and_stray_keys() -> None:
    [gpu] = parse_rocm_smi_json(fixture("rocm-smi_json_rx6700xt_rocm612.json"))
    assert (gpu.name, gpu.compute_capability, gpu.driver) == (
        "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",
        "gfx1031",
        "6.3.6",
    )
    assert gpu.uuid is None  # "N/A"


def test_rocm_smi_csv_reads_a_discrete_gpu_and_an_igpu() -> None:
    gpus = parse_rocm_smi_csv(fixture("rocm-smi_csv_rx6800+raphael-igpu.csv"))
    assert [(g.index, g.name, g.memory_mb) for g in gpus] == [
        (0, "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", 17163091968 / 2**20),
        (1, "Raphael", 64.0),
    ]


@pytest.mark.parametrize(
    "text", ["", "ERROR: No AMD GPUs specified\n", "{", "[1, 2]", '{"card0": "x"}', '{"system": {}}']
)
def test_rocm_smi_garbage_gives_no_gpus(text: str) -> None:
    assert parse_rocm_smi_json(text) == []
    assert parse_rocm_smi_csv(text) == []


def test_rocm_smi_json_after_a_warning_line_is_still_read() -> None:
    text = "WARNING: AMD GPU device(s) is/are in a low-power state.\n" + fixture(
        "rocm-smi_json_rx7900xt_productname-use-meminfo.json"
    )
    assert [g.name for g in parse_rocm_smi_json(text)] == ["Radeon RX 7900 XT"]


# --- Apple system_profiler, Intel sycl-ls/clinfo, lspci ------------------------------------------

# Constructed: no complete recorded sample was found (see README). Keys as macOS writes them.
APPLE_M1_DISPLAYS = """{"SPDisplaysDataType": [{"_name": "Apple M1", "spdisplays_mtlgpufamilysupport":
 "spdisplays_metal3", "spdisplays_vendor": "sppci_vendor_Apple", "sppci_bus": "spdisplays_builtin",
 "sppci_cores": "8", "sppci_device_type": "spdisplays_gpu", "sppci_model": "Apple M1"}]}"""
INTEL_MAC_DISPLAYS = """{"SPDisplaysDataType": [
 {"_name": "Intel UHD Graphics 630", "spdisplays_vendor": "Intel", "spdisplays_vram_shared": "1536 MB",
  "sppci_model": "Intel UHD Graphics 630"},
 {"_name": "AMD Radeon Pro 5500M", "spdisplays_vendor": "sppci_vendor_amd", "spdisplays_vram": "8 GB",
  "sppci_model": "AMD Radeon Pro 5500M"}]}"""


def test_system_profiler_apple_silicon_gpu_has_no_separate_memory() -> None:
    assert parse_system_profiler_displays(APPLE_M1_DISPLAYS) == [GpuInfo("apple", "Apple M1", index=0)]


def test_system_profiler_intel_mac_lists_igpu_and_radeon_with_vram() -> None:
    gpus = parse_system_profiler_displays(INTEL_MAC_DISPLAYS)
    assert [(g.vendor, g.name, g.memory_mb) for g in gpus] == [
        ("intel", "Intel UHD Graphics 630", 1536.0),
        ("amd", "AMD Radeon Pro 5500M", 8192.0),
    ]


@pytest.mark.parametrize("text", ["", "{}", '{"SPDisplaysDataType": "x"}', "system_profiler: error"])
def test_system_profiler_garbage_gives_no_gpus(text: str) -> None:
    assert parse_system_profiler_displays(text) == []


def test_sycl_ls_lists_each_intel_gpu_once() -> None:
    gpus = parse_sycl_ls(fixture("sycl-ls_intel-arc-a770+uhd730.txt"))
    assert [(g.index, g.name) for g in gpus] == [
        (0, "Intel(R) Arc(TM) A770 Graphics"),
        (1, "Intel(R) UHD Graphics 730"),
    ]


def test_sycl_ls_with_only_opencl_names_the_gpus_without_version() -> None:
    text = "".join(
        line for line in fixture("sycl-ls_intel-arc-a770+uhd730.txt").splitlines(True) if "level_zero" not in line
    )
    assert [g.name for g in parse_sycl_ls(text)] == ["Intel(R) Arc(TM) A770 Graphics", "Intel(R) UHD Graphics 730"]


def test_clinfo_list_keeps_intel_graphics_and_skips_nvidia() -> None:
    assert parse_clinfo_list(fixture("clinfo_l_nvidia-rtx3090+intel-uhd750.txt")) == [
        GpuInfo("intel", "Intel(R) UHD Graphics 750", index=0)
    ]


def test_lspci_finds_eight_h200_on_the_bus() -> None:
    gpus = parse_lspci(fixture("lspci_nn_8x-h200-sxm.txt"))
    assert [(g.vendor, g.name) for g in gpus] == [("nvidia", "H200 SXM 141GB")] * 8


def test_lspci_names_vendor_and_model_of_each_display_device() -> None:
    assert [
        (g.vendor, g.name) for g in parse_lspci(fixture("lspci_nn_gpu-filter_intel-igpu+nvidia-mx130+gtx970.txt"))
    ] == [
        ("intel", "Device 8086:3e9b"),
        ("nvidia", "GeForce MX130"),
        ("nvidia", "GeForce GTX 970"),
    ]
    assert [(g.vendor, g.name) for g in parse_lspci(fixture("lspci_nn_amd-navi31_line.txt"))] == [
        ("amd", "Radeon RX 7900 XT/7900 XTX"),
    ]
    assert [(g.vendor, g.name) for g in parse_lspci(fixture("lspci_d-03xx_intel-alderlake+rtx3080ti.txt"))] == [
        ("intel", "AlderLake-S GT1"),
        ("nvidia", "GeForce RTX 3080 Ti"),
    ]


# --- torch probe ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "devices"),
    [
        ('{"installed": true, "cuda": true, "hip": null, "mps": false}', ("cuda",)),
        ('{"installed": true, "cuda": true, "hip": "6.0.32830", "mps": false}', ("hip",)),
        ('{"installed": true, "cuda": false, "hip": null, "mps": true}', ("mps",)),
        ('{"installed": true, "cuda": false, "hip": null, "mps": false}', ()),
        ('{"installed": false}', None),
        ("Traceback (most recent call last):", None),
    ],
)
def test_torch_probe_output_names_the_device_types(line: str, devices: tuple[str, ...] | None) -> None:
    assert parse_torch_probe(line) == devices


# --- /proc/cpuinfo and /proc/meminfo -------------------------------------------------------------


def test_cpuinfo_x86_laptop_counts_cores_and_threads() -> None:
    info = parse_cpuinfo(fixture("proc_cpuinfo_x86_intel-i7-8650u.txt"))
    assert (info.model, info.physical_cores, info.logical_cores) == ("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 4, 8)


def test_cpuinfo_ryzen_with_smt_has_half_as_many_cores_as_threads() -> None:
    info = parse_cpuinfo(fixture("proc_cpuinfo_x86_amd-ryzen9-7950x_full.txt"))
    assert (info.model, info.physical_cores, info.logical_cores) == ("AMD Ryzen 9 7950X 16-Core Processor", 16, 32)


def test_cpuinfo_trimmed_to_one_processor_never_claims_more_cores_than_threads() -> None:
    info = parse_cpuinfo(fixture("proc_cpuinfo_x86_amd-epyc-9654_cpu0.txt"))
    assert (info.model, info.physical_cores, info.logical_cores) == ("AMD EPYC 9654 96-Core Processor", 1, 1)


def test_cpuinfo_arm64_without_model_name_is_named_from_the_part_number() -> None:
    graviton2 = parse_cpuinfo(fixture("proc_cpuinfo_arm64_graviton2-t4g-small_full.txt"))
    assert (graviton2.model, graviton2.logical_cores, graviton2.physical_cores) == ("ARM Neoverse-N1", 2, None)
    assert parse_cpuinfo(fixture("proc_cpuinfo_arm64_graviton3-neoverse-v1_cpu0.txt")).model == "ARM Neoverse-V1"


def test_unknown_arm_part_is_still_named_by_its_implementer() -> None:
    assert arm_cpu_name("0x41", "0xfff") == "ARM CPU part 0xfff"
    assert arm_cpu_name("0x4e", "0x004") == "NVIDIA Carmel"
    assert arm_cpu_name("zz", "0xd0c") == ""


def test_meminfo_reads_total_and_available() -> None:
    info = parse_meminfo(fixture("proc_meminfo_x86_intel-core-i5_16gb.txt"))
    assert (info.total_mb, info.available_mb) == (16115528 / 1024, 11225936 / 1024)


def test_meminfo_without_memavailable_estimates_free_plus_caches() -> None:
    info = parse_meminfo(fixture("proc_meminfo_arm_openwrt_no-memavailable.txt"))
    assert (info.total_mb, info.available_mb) == (125128 / 1024, (80288 + 7652 + 21700) / 1024)


@pytest.mark.parametrize("text", ["", "garbage", "MemTotal: lots kB"])
def test_cpuinfo_and_meminfo_garbage_gives_nothing(text: str) -> None:
    assert parse_cpuinfo(text).logical_cores is None
    assert parse_meminfo(text).total_mb is None


# --- cgroups ----------------------------------------------------------------------------------------


def test_cgroup2_cpu_max_quota_is_a_fraction_of_a_core() -> None:
    assert parse_cgroup_cpu_max(fixture("cgroup2_cpu.max_quota-0.42cpu.txt")) == pytest.approx(0.42)


def test_cgroup2_cpu_max_of_max_means_no_limit() -> None:
    assert parse_cgroup_cpu_max(fixture("cgroup2_cpu.max_unlimited.txt")) is None


def test_cgroup1_cfs_quota_over_period_gives_cores() -> None:
    quota = parse_cgroup_v1_cpu(
        fixture("cgroup1_cpu.cfs_quota_us_20000.txt"), fixture("cgroup1_cpu.cfs_period_us_100000.txt")
    )
    assert quota == pytest.approx(0.2)
    assert parse_cgroup_v1_cpu("-1\n", fixture("cgroup1_cpu.cfs_period_us_100000.txt")) is None


def test_cgroup2_memory_max_is_read_in_mib() -> None:
    assert parse_cgroup_memory_limit(fixture("cgroup2_memory.max_42m.txt")) == 42.0


@pytest.mark.parametrize("text", ["max\n", "9223372036854771712\n", "", "junk"])
def test_cgroup_memory_max_or_huge_values_mean_no_limit(text: str) -> None:
    assert parse_cgroup_memory_limit(text) is None


def test_cgroup1_memory_limit_of_2_to_the_64_means_no_limit() -> None:
    assert parse_cgroup_memory_limit(fixture("cgroup1_memory.limit_in_bytes_unlimited.txt")) is None


def test_proc_self_cgroup_maps_controllers_to_paths() -> None:
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/system.slice/x.service\n"
    assert parse_proc_cgroup(text) == {
        "memory": "/docker/abc",
        "cpu": "/docker/abc",
        "cpuacct": "/docker/abc",
        "": "/system.slice/x.service",
    }


def test_cgroup_dirs_walk_from_the_leaf_up_to_the_mount() -> None:
    assert cgroup_dirs("/sys/fs/cgroup", "/a/b") == ["/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a", "/sys/fs/cgroup"]
    assert cgroup_dirs("/sys/fs/cgroup", "/") == ["/sys/fs/cgroup"]
    assert cgroup_dirs("/sys/fs/cgroup", "/../../x") == ["/sys/fs/cgroup"]


# --- macOS sysctl and sw_vers, Windows wmic, os-release ----------------------------------------------


def test_sysctl_apple_m3_max_is_apple_silicon_with_14_cores_and_36_gib() -> None:
    values = parse_sysctl(fixture("sysctl_macos_apple-m3-max.txt"))
    assert cpu_from_sysctl(values) == CpuInfo("Apple M3 Max", physical_cores=14, logical_cores=14)
    assert memory_from_sysctl(values) == 36 * 1024
    assert is_apple_silicon(values)


def test_sysctl_intel_mac_is_not_apple_silicon() -> None:
    values = parse_sysctl(fixture("sysctl-a_macos_intel-i7-4770hq.txt"))
    info = cpu_from_sysctl(values)
    assert (info.model, info.physical_cores, info.logical_cores) == ("Intel(R) Core(TM) i7-4770HQ CPU @ 2.20GHz", 4, 8)
    assert memory_from_sysctl(values) == 16 * 1024
    assert not is_apple_silicon(values)


def test_sysctl_bsd_equals_form_is_read_too() -> None:
    assert parse_sysctl("hw.ncpu = 8\nhw.memsize=1024\n") == {"hw.ncpu": "8", "hw.memsize": "1024"}


def test_sw_vers_gives_product_version_and_build() -> None:
    # Constructed in sw_vers's format (tab after the colon).
    assert parse_sw_vers("ProductName:\tmacOS\nProductVersion:\t14.5\nBuildVersion:\t23F79\n") == "macOS 14.5 (23F79)"


def test_wmic_two_sockets_with_crcrlf_lines_add_up_cores() -> None:
    info = parse_wmic_cpu(fixture("wmic_cpu_get_list_2x-xeon-e5-2687w_crcrlf.txt"))
    assert (info.model, info.physical_cores, info.logical_cores) == (
        "Intel(R) Xeon(R) CPU E5-2687W 0 @ 3.10GHz",
        16,
        32,
    )


def test_powershell_format_list_is_read_like_wmic() -> None:
    # Constructed in PowerShell's Format-List layout.
    text = (
        "\r\n\r\nName                      : AMD Ryzen 7 5800X 8-Core Processor            \r\n"
        "NumberOfCores             : 8\r\nNumberOfLogicalProcessors : 16\r\n\r\n"
    )
    info = parse_wmic_cpu(text)
    assert (info.model, info.physical_cores, info.logical_cores) == ("AMD Ryzen 7 5800X 8-Core Processor", 8, 16)


def test_os_release_prefers_pretty_name() -> None:
    assert (
        parse_os_release('NAME="Ubuntu"\nVERSION="22.04.5 LTS (Jammy Jellyfish)"\nPRETTY_NAME="Ubuntu 22.04.5 LTS"\n')
        == "Ubuntu 22.04.5 LTS"
    )
    assert parse_os_release('NAME="Alpine Linux"\nVERSION=3.20\n') == "Alpine Linux 3.20"


# --- no parser raises on arbitrary text ----------------------------------------------------------------

TOOLISH = st.text(alphabet=" \t\r\n:,=[]{}\"'0123456789abcdefxMGiBN/A.-_#%()`+|cardGPUMIGDevice", max_size=300)
ANY_TEXT = st.one_of(st.text(max_size=300), TOOLISH)
TEXT_PARSERS = [
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_rocm_smi_json,
    parse_rocm_smi_csv,
    parse_system_profiler_displays,
    parse_sycl_ls,
    parse_clinfo_list,
    parse_lspci,
    parse_torch_probe,
    parse_cpuinfo,
    parse_meminfo,
    parse_cgroup_cpu_max,
    parse_cgroup_memory_limit,
    parse_proc_cgroup,
    parse_sysctl,
    parse_wmic_cpu,
    parse_sw_vers,
    parse_os_release,
]


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_parsers_never_raise_on_arbitrary_text(text: str) -> None:
    for parse in TEXT_PARSERS:
        parse(text)
    values = parse_sysctl(text)
    cpu_from_sysctl(values)
    memory_from_sysctl(values)
    is_apple_silicon(values)
    cgroup_dirs("/sys/fs/cgroup", text)


@settings(max_examples=200, deadline=None)
@given(quota=ANY_TEXT, period=ANY_TEXT, implementer=ANY_TEXT, part=ANY_TEXT)
def test_two_argument_parsers_never_raise(quota: str, period: str, implementer: str, part: str) -> None:
    parse_cgroup_v1_cpu(quota, period)
    arm_cpu_name(implementer, part)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=20,
    )
)
def test_json_parsers_never_raise_on_arbitrary_json(value: object) -> None:
    for wrapped in (value, {"card0": value}, {"SPDisplaysDataType": value}, {"card1": {"Card Series": value}}):
        text = json.dumps(wrapped)
        parse_rocm_smi_json(text)
        parse_system_profiler_displays(text)
        parse_torch_probe(text)
