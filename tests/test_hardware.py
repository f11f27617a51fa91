"""detect() on this machine and, through fake tools and files, on recorded Linux, macOS and
Windows machines; the real subprocess runner's timeout; queue selection and the helpers
the scheduler and CLI use."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import pytest

import dtf.hardware.probe as probe
from dtf.errors import HardwareError
from dtf.hardware import (
    FileReader,
    cpu_capacity,
    detect,
    format_profile,
    memory_capacity_gb,
    run_command,
    select_queues,
    tag_queue,
    worker_name,
)
from dtf.model import GpuInfo, HardwareProfile

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
NO_DRIVER = "nvidia-smi_error_no-driver.txt"

Answer = str | tuple[int, str, str] | BaseException


def fixture(name: str) -> str:
    with open(FIXTURES / name, encoding="utf-8", newline="") as handle:
        return handle.read()


class FakeTools:
    """A Runner answering from canned outputs keyed by the start of the command line
    ("nvidia-smi -L", "nvidia-smi", and "python" for the torch probe). A tool without an
    answer is missing, as the real runner reports it."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = dict(answers)
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        tool = "python" if argv[0] == sys.executable else os.path.basename(argv[0])
        line = " ".join([tool, *argv[1:]])
        self.calls.append(line)
        for key in sorted(self.answers, key=len, reverse=True):
            if line.startswith(key):
                answer = self.answers[key]
                if isinstance(answer, BaseException):
                    raise answer
                return answer if isinstance(answer, tuple) else (0, answer, "")
        raise FileNotFoundError(argv[0])


def files(contents: Mapping[str, str]) -> FileReader:
    """A FileReader over a dict of paths; other paths do not exist."""

    def read(path: str) -> str:
        if path in contents:
            return contents[path]
        raise FileNotFoundError(path)

    return read


@pytest.fixture
def no_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make detect() rely on the fake files alone, as it does where psutil is missing."""
    monkeypatch.setattr(probe, "load_psutil", lambda: None)


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


NO_TORCH = '{"installed": false}'
# Constructed in detect()'s own query order: no recorded sample uses exactly that order.
FOUR_A100_CSV = "".join(f"{i}, NVIDIA A100-SXM4-80GB, GPU-{i}, 81920, 4, 0, 535.54.03, 8.0\n" for i in range(4))


# --- this machine -------------------------------------------------------------------------


def test_detect_on_this_machine_finds_linux_with_cpu_cores_and_memory(tmp_path: Path) -> None:
    profile = detect(workdir=str(tmp_path))
    assert profile.platform == "linux"
    assert "cpu" in profile.hardware_kinds
    assert profile.logical_cores and profile.logical_cores > 0
    assert profile.physical_cores and profile.physical_cores > 0
    assert profile.memory_total_mb and profile.memory_total_mb > 0
    assert profile.memory_available_mb and profile.memory_available_mb > 0
    assert profile.disk_total_gb and profile.disk_total_gb > 0
    assert profile.hostname and profile.cpu_model and profile.architecture
    assert cpu_capacity(profile) > 0


def test_detected_profile_round_trips_through_json(tmp_path: Path) -> None:
    profile = detect(workdir=str(tmp_path))
    assert HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


# --- Linux, from recorded files -------------------------------------------------------------

OS_RELEASE = 'PRETTY_NAME="Amazon Linux 2023"\n'


def test_linux_arm_container_with_amd_gpus_and_a_broken_nvidia_driver(no_psutil: None, tmp_path: Path) -> None:
    tools = FakeTools(
        {
            "nvidia-smi": (9, fixture(NO_DRIVER), ""),
            "rocm-smi": fixture("rocm-smi_json_4x-mi100_rocm602.json"),
            "python": NO_TORCH,
        }
    )
    reader = files(
        {
            "/proc/cpuinfo": fixture("proc_cpuinfo_arm64_graviton2-t4g-small_full.txt"),
            "/proc/meminfo": fixture("proc_meminfo_x86_intel-core-i5_16gb.txt"),
            "/proc/self/cgroup": "0::/\n",
            "/sys/fs/cgroup/cpu.max": fixture("cgroup2_cpu.max_quota-0.42cpu.txt"),
            "/sys/fs/cgroup/memory.max": fixture("cgroup2_memory.max_42m.txt"),
            "/.dockerenv": "",
            "/etc/os-release": OS_RELEASE,
            "/proc/sys/kernel/osrelease": "6.1.102-111.182.amzn2023.aarch64\n",
        }
    )
    profile = detect(platform="linux", run=tools, read_file=reader, env={"PATH": ""}, workdir=str(tmp_path))

    assert (profile.platform, profile.container) == ("linux", "docker")
    assert profile.os_release == "Amazon Linux 2023, kernel 6.1.102-111.182.amzn2023.aarch64"
    assert (profile.cpu_model, profile.logical_cores) == ("ARM Neoverse-N1", 2)
    assert (profile.cpu_quota, profile.memory_limit_mb) == (0.42, 42.0)
    assert (profile.memory_total_mb, profile.memory_available_mb) == (15737.8, 10962.8)
    assert [g.name for g in profile.gpus] == ["Arcturus GL-XL [Instinct MI100]"] * 4
    assert profile.hardware_kinds == ("cpu", "rocm")
    assert any("couldn't communicate with the NVIDIA driver" in n for n in profile.notes)
    assert "torch not importable (no torch devices)" in profile.notes
    assert cpu_capacity(profile) == 0.42
    assert memory_capacity_gb(profile) == 42.0 / 1024


def test_linux_cgroup_v1_docker_container_quota_and_unlimited_memory(no_psutil: None, tmp_path: Path) -> None:
    reader = files(
        {
            "/proc/cpuinfo": fixture("proc_cpuinfo_x86_intel-i7-8650u.txt"),
            "/proc/meminfo": fixture("proc_meminfo_arm_openwrt_no-memavailable.txt"),
            "/proc/1/cgroup": "4:cpu,cpuacct:/docker/0123abc\n3:memory:/docker/0123abc\n",
            "/proc/self/cgroup": "4:cpu,cpuacct:/docker/0123abc\n3:memory:/docker/0123abc\n",
            # Inside the container its own cgroup is mounted at the controller's root.
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": fixture("cgroup1_cpu.cfs_quota_us_20000.txt"),
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": fixture("cgroup1_cpu.cfs_period_us_100000.txt"),
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": fixture("cgroup1_memory.limit_in_bytes_unlimited.txt"),
        }
    )
    profile = detect(
        platform="linux", run=FakeTools({"python": NO_TORCH}), read_file=reader, env={}, workdir=str(tmp_path)
    )

    assert profile.container == "docker"
    assert (profile.physical_cores, profile.logical_cores, profile.cpu_quota) == (4, 8, 0.2)
    assert (profile.memory_total_mb, profile.memory_available_mb, profile.memory_limit_mb) == (122.2, 107.1, None)
    assert profile.hardware_kinds == ("cpu",)
    assert "nvidia-smi not found (no NVIDIA GPUs)" in profile.notes
    assert memory_capacity_gb(profile) == pytest.approx(122.2 / 1024)


def test_nested_cgroup_v2_limits_take_the_tightest_ancestor(no_psutil: None, tmp_path: Path) -> None:
    reader = files(
        {
            "/proc/1/cgroup": "0::/kubepods/pod1/ctr\n",
            "/proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
            "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n",
            "/sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
            "/sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
            "/sys/fs/cgroup/kubepods/memory.max": "1073741824\n",
        }
    )
    profile = detect(platform="linux", run=FakeTools({}), read_file=reader, env={}, workdir=str(tmp_path))
    assert (profile.container, profile.cpu_quota, profile.memory_limit_mb) == ("kubernetes", 2.0, 1024.0)


def test_kubernetes_is_recognised_from_its_service_env(tmp_path: Path) -> None:
    profile = detect(
        run=FakeTools({}), read_file=files({}), env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, workdir=str(tmp_path)
    )
    assert profile.container == "kubernetes"


def test_no_container_hints_means_no_container(tmp_path: Path) -> None:
    assert detect(run=FakeTools({}), read_file=files({}), env={}, workdir=str(tmp_path)).container is None


# --- NVIDIA through detect --------------------------------------------------------------------


def test_gpus_in_mig_mode_are_listed_as_their_instances(tmp_path: Path) -> None:
    tools = FakeTools(
        {
            "nvidia-smi --query-gpu": FOUR_A100_CSV,
            "nvidia-smi -L": fixture("nvidia-smi_L_4x-a100-sxm4-80gb_gpu0-mig.txt"),
        }
    )
    profile = detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert [(g.index, g.mig) for g in profile.gpus] == [(0, True)] * 4 + [(1, False), (2, False), (3, False)]
    assert profile.hardware_kinds == ("cpu", "cuda")
    assert not any("nvidia" in n.lower() for n in profile.notes)


def test_failed_gpu_query_falls_back_to_the_nvidia_smi_list(tmp_path: Path) -> None:
    tools = FakeTools(
        {
            "nvidia-smi --query-gpu": (2, 'Field "compute_cap" is not a valid field to query.\n', ""),
            "nvidia-smi -L": fixture("nvidia-smi_L_h100-mig.txt"),
        }
    )
    profile = detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert [g.name for g in profile.gpus] == [
        "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        "NVIDIA H100 80GB HBM3 MIG 2g.20gb",
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
    ]
    assert "cuda" in profile.hardware_kinds
    assert "nvidia-smi --query-gpu gave no GPUs; using nvidia-smi -L (names only)" in profile.notes


def test_gpus_on_the_pci_bus_without_a_working_driver_are_explained(tmp_path: Path) -> None:
    tools = FakeTools({"nvidia-smi": (9, fixture(NO_DRIVER), ""), "lspci": fixture("lspci_nn_8x-h200-sxm.txt")})
    profile = detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert profile.gpus == () and profile.hardware_kinds == ("cpu",)
    assert (
        "lspci shows 8 NVIDIA display device(s) (H200 SXM 141GB) that nvidia-smi did not report: check the driver"
        in profile.notes
    )
    # The same driver error from the query and from -L is one note, not two.
    assert sum("NVIDIA-SMI has failed" in n for n in profile.notes) == 1


def test_a_tool_that_times_out_is_noted_and_not_asked_again(tmp_path: Path) -> None:
    tools = FakeTools({"nvidia-smi": TimeoutError("hung")})
    profile = detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path), timeout_s=0.5)
    assert "nvidia-smi timed out after 0.5s (no NVIDIA GPUs)" in profile.notes
    assert sum(call.startswith("nvidia-smi") for call in tools.calls) == 1
    assert profile.hardware_kinds == ("cpu",)


def test_torch_cuda_alone_makes_a_cuda_machine_and_torch_hip_a_rocm_one(tmp_path: Path) -> None:
    cuda = FakeTools({"python": '{"installed": true, "cuda": true, "hip": null, "mps": false}'})
    hip = FakeTools({"python": '{"installed": true, "cuda": true, "hip": "6.0.32830", "mps": false}'})
    assert detect(run=cuda, read_file=files({}), env={}, workdir=str(tmp_path)).hardware_kinds == ("cpu", "cuda")
    on_rocm = detect(run=hip, read_file=files({}), env={}, workdir=str(tmp_path))
    assert (on_rocm.torch_devices, on_rocm.hardware_kinds) == (("hip",), ("cpu", "rocm"))


def test_a_chromium_on_path_gives_webgpu(tmp_path: Path) -> None:
    browser = executable(tmp_path / "bin" / "chromium", "#!/bin/sh\n")
    profile = detect(run=FakeTools({}), read_file=files({}), env={"PATH": str(tmp_path / "bin")}, workdir=str(tmp_path))
    assert (profile.browser, profile.hardware_kinds) == (str(browser), ("cpu", "webgpu"))


# --- the real runner: timeouts and a fake nvidia-smi on PATH ----------------------------------------


def test_a_hanging_tool_times_out_instead_of_hanging() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_command(["sleep", "30"], 0.2)
    assert time.monotonic() - started < 3


def test_runner_reports_a_missing_tool_and_returns_exit_code_and_output() -> None:
    with pytest.raises(FileNotFoundError):
        run_command(["dtf-no-such-tool"], 1.0)
    assert run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 5.0) == (3, "out\n", "err\n")


def test_detect_with_a_hanging_nvidia_smi_returns_promptly(tmp_path: Path) -> None:
    # The tool starts a child of its own: the whole process group must die, or its pipe
    # stays open and reading the output would wait for the child.
    executable(tmp_path / "bin" / "nvidia-smi", "#!/bin/sh\nsleep 30\necho never\n")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    started = time.monotonic()
    profile = detect(env=env, workdir=str(tmp_path), timeout_s=0.3)
    assert time.monotonic() - started < 8
    assert "nvidia-smi timed out after 0.3s (no NVIDIA GPUs)" in profile.notes
    assert "cuda" not in profile.hardware_kinds


def test_detect_runs_a_real_nvidia_smi_found_on_path(tmp_path: Path) -> None:
    csv = FIXTURES / "nvidia-smi_query-gpu_csv_h100-80gb-hbm3_allfields.csv"
    executable(tmp_path / "bin" / "nvidia-smi", f'#!/bin/sh\n[ "$1" = "-L" ] && exit 0\ncat "{csv}"\n')
    profile = detect(env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, workdir=str(tmp_path))
    assert [(g.name, g.memory_mb, g.compute_capability) for g in profile.gpus] == [
        ("NVIDIA H100 80GB HBM3", 81559.0, "9.0")
    ]
    assert "cuda" in profile.hardware_kinds


# --- macOS and Windows, from recorded tool output ---------------------------------------------------


def mac_home(tmp_path: Path) -> str:
    executable(tmp_path / "Applications" / "Google Chrome.app" / "Contents" / "MacOS" / "Google Chrome", "")
    return str(tmp_path)


def test_darwin_on_apple_silicon_serves_mps_and_webgpu(tmp_path: Path) -> None:
    tools = FakeTools(
        {
            "sysctl": fixture("sysctl_macos_apple-m3-max.txt"),
            # Constructed (see test_hardware_parsers): no recorded system_profiler sample exists.
            "system_profiler": '{"SPDisplaysDataType": [{"_name": "Apple M3 Max", "sppci_model": "Apple M3 Max",'
            ' "spdisplays_vendor": "sppci_vendor_Apple", "sppci_cores": "30"}]}',
            "sw_vers": "ProductName:\tmacOS\nProductVersion:\t15.1\nBuildVersion:\t24B83\n",
            "python": '{"installed": true, "cuda": false, "hip": null, "mps": true}',
        }
    )
    profile = detect(
        platform="darwin", run=tools, read_file=files({}), env={"HOME": mac_home(tmp_path)}, workdir=str(tmp_path)
    )

    assert (profile.platform, profile.architecture, profile.os_release) == ("darwin", "arm64", "macOS 15.1 (24B83)")
    assert (profile.cpu_model, profile.physical_cores, profile.logical_cores) == ("Apple M3 Max", 14, 14)
    assert (profile.memory_total_mb, profile.memory_available_mb) == (36864.0, None)
    assert profile.gpus == (GpuInfo("apple", "Apple M3 Max", index=0),)
    assert profile.torch_devices == ("mps",)
    assert profile.browser and profile.browser.endswith("Google Chrome.app/Contents/MacOS/Google Chrome")
    assert profile.hardware_kinds == ("cpu", "mps", "webgpu")
    assert not any(call.startswith(("nvidia-smi", "rocm-smi")) for call in tools.calls)


def test_darwin_on_an_intel_mac_has_no_mps(tmp_path: Path) -> None:
    tools = FakeTools({"sysctl": fixture("sysctl-a_macos_intel-i7-4770hq.txt"), "python": NO_TORCH})
    profile = detect(platform="darwin", run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert (profile.architecture, profile.cpu_model) == ("x86_64", "Intel(R) Core(TM) i7-4770HQ CPU @ 2.20GHz")
    assert (profile.physical_cores, profile.logical_cores, profile.memory_total_mb) == (4, 8, 16384.0)
    assert profile.hardware_kinds == ("cpu",)
    assert "system_profiler not found (no GPU names)" in profile.notes


def test_an_intel_macs_radeon_is_listed_but_serves_no_rocm_queue(tmp_path: Path) -> None:
    # system_profiler output constructed (see test_hardware_parsers); sysctl is recorded.
    displays = (
        '{"SPDisplaysDataType": [{"_name": "AMD Radeon Pro 5500M", "sppci_model": "AMD Radeon Pro 5500M",'
        ' "spdisplays_vendor": "sppci_vendor_amd", "spdisplays_vram": "8 GB"}]}'
    )
    tools = FakeTools({"sysctl": fixture("sysctl-a_macos_intel-i7-4770hq.txt"), "system_profiler": displays})
    profile = detect(platform="darwin", run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert [(g.vendor, g.memory_mb) for g in profile.gpus] == [("amd", 8192.0)]
    assert profile.hardware_kinds == ("cpu",)


def windows_env(tmp_path: Path) -> dict[str, str]:
    executable(tmp_path / "pf" / "Google" / "Chrome" / "Application" / "chrome.exe", "")
    return {"PROCESSOR_ARCHITECTURE": "AMD64", "ProgramFiles": str(tmp_path / "pf"), "PATH": ""}


def test_windows_with_two_nvidia_gpus_and_chrome(tmp_path: Path) -> None:
    tools = FakeTools(
        {
            "wmic": fixture("wmic_cpu_get_list_2x-xeon-e5-2687w_crcrlf.txt"),
            "nvidia-smi --query-gpu": fixture("nvidia-smi_query-gpu_csv_2gpu-titanv-rtx5880.csv"),
            "nvidia-smi -L": "",
            "cmd /c ver": "\r\nMicrosoft Windows [Version 10.0.22631.3880]\r\n",
            "python": NO_TORCH,
        }
    )
    profile = detect(platform="win32", run=tools, read_file=files({}), env=windows_env(tmp_path), workdir=str(tmp_path))

    assert (profile.platform, profile.architecture) == ("windows", "x86_64")
    assert profile.os_release == "Microsoft Windows [Version 10.0.22631.3880]"
    assert (profile.cpu_model, profile.physical_cores, profile.logical_cores) == (
        "Intel(R) Xeon(R) CPU E5-2687W 0 @ 3.10GHz",
        16,
        32,
    )
    assert [g.name for g in profile.gpus] == ["NVIDIA TITAN V", "NVIDIA RTX 5880 Ada Generation"]
    assert profile.browser == os.path.join(tmp_path, "pf", "Google", "Chrome", "Application", "chrome.exe")
    assert profile.hardware_kinds == ("cpu", "cuda", "webgpu")
    assert not any(call.startswith(("rocm-smi", "lspci", "sysctl")) for call in tools.calls)


def test_windows_without_wmic_asks_powershell(tmp_path: Path) -> None:
    # Constructed in PowerShell's Format-List layout.
    listing = (
        "\r\nName                      : AMD Ryzen 9 7950X 16-Core Processor\r\n"
        "NumberOfCores             : 16\r\nNumberOfLogicalProcessors : 32\r\n\r\n"
    )
    tools = FakeTools({"powershell": listing})
    profile = detect(platform="windows", run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert (profile.cpu_model, profile.physical_cores, profile.logical_cores) == (
        "AMD Ryzen 9 7950X 16-Core Processor",
        16,
        32,
    )
    assert "wmic not found (trying PowerShell)" not in profile.notes  # an optional tool


# --- detect never raises, and says each problem once -----------------------------------------------


def test_detect_never_raises_when_every_tool_and_file_fails(no_psutil: None, tmp_path: Path) -> None:
    def broken_run(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        raise RuntimeError("boom")

    def broken_read(path: str) -> str:
        raise PermissionError(path)

    profile = detect(platform="linux", run=broken_run, read_file=broken_read, env={}, workdir=str(tmp_path / "missing"))
    assert profile.hardware_kinds == ("cpu",)
    assert "nvidia-smi could not run: RuntimeError: boom (no NVIDIA GPUs)" in profile.notes
    assert any(n.startswith("disk usage of") for n in profile.notes)


def test_a_parser_bug_costs_one_fact_not_the_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def explode(text: str) -> None:
        raise ValueError("unexpected cpuinfo")

    monkeypatch.setattr(probe, "parse_cpuinfo", explode)
    profile = detect(run=FakeTools({}), read_file=files({"/proc/cpuinfo": "x"}), env={}, workdir=str(tmp_path))
    assert "cpu probe failed: ValueError: unexpected cpuinfo" in profile.notes
    assert profile.memory_total_mb is not None


def test_each_problem_is_logged_once_per_process(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    unique = f"driver gone {time.monotonic_ns()}"
    tools = FakeTools({"nvidia-smi": (9, unique, "")})
    with caplog.at_level(logging.INFO, logger="dtf.hardware"):
        first = detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
        detect(run=tools, read_file=files({}), env={}, workdir=str(tmp_path))
    assert f"nvidia-smi exited 9: {unique} (no NVIDIA GPUs)" in first.notes
    assert sum(unique in r.getMessage() for r in caplog.records if r.name == "dtf.hardware") == 1


# --- queues and worker names -------------------------------------------------------------------------


def profile_with(*kinds: str, **fields: object) -> HardwareProfile:
    return HardwareProfile(platform="linux", hostname="host1", hardware_kinds=kinds, **fields)  # type: ignore[arg-type]


def test_a_cpu_only_machine_consumes_the_cpu_queue() -> None:
    assert select_queues(profile_with("cpu")) == ["dtf.cpu"]


def test_a_gpu_machine_consumes_cpu_and_each_hardware_queue() -> None:
    assert select_queues(profile_with("cpu", "cuda", "webgpu")) == ["dtf.cpu", "dtf.cuda", "dtf.webgpu"]


def test_no_cpu_leaves_only_the_accelerator_queues() -> None:
    assert select_queues(profile_with("cpu", "cuda"), no_cpu=True) == ["dtf.cuda"]


def test_no_cpu_on_a_cpu_only_machine_leaves_nothing_to_consume() -> None:
    with pytest.raises(HardwareError, match="no queues"):
        select_queues(profile_with("cpu"), no_cpu=True)


def test_explicit_queues_replace_the_detected_ones() -> None:
    assert select_queues(profile_with("cpu", "cuda"), queues=["dtf.rocm", "dtf.tag.big"]) == ["dtf.rocm", "dtf.tag.big"]


def test_tags_add_hardware_queues_or_tag_queues_without_duplicates() -> None:
    chosen = select_queues(profile_with("cpu"), tags=["cuda", "sm90", "cpu", "dtf.tag.sm90"])
    assert chosen == ["dtf.cpu", "dtf.cuda", "dtf.tag.sm90"]


@pytest.mark.parametrize(
    "queue", ["dtf.tpu", "dtf.results", "dtf.coordinator", "cpu", "dtf.tag.", "DTF.CPU", "dtf cpu"]
)
def test_unknown_or_malformed_queues_are_refused(queue: str) -> None:
    with pytest.raises(HardwareError):
        select_queues(profile_with("cpu"), queues=[queue])


@pytest.mark.parametrize("tag", ["mem>=80g", "", "Big", "a b", "dtf.gpu"])
def test_malformed_tags_are_refused(tag: str) -> None:
    with pytest.raises(HardwareError):
        tag_queue(tag)


def test_worker_name_joins_kinds_and_hostname_unless_given() -> None:
    assert worker_name(profile_with("cpu", "cuda")) == "dtf-cpu-cuda@host1"
    assert worker_name(profile_with("cpu", "cuda"), "gpu-box-7@rack2") == "gpu-box-7@rack2"


# --- capacities and the human table --------------------------------------------------------------------


def test_memory_capacity_is_the_smaller_of_installed_memory_and_the_cgroup_limit() -> None:
    assert memory_capacity_gb(profile_with("cpu", memory_total_mb=65536.0, memory_limit_mb=8192.0)) == 8.0
    assert memory_capacity_gb(profile_with("cpu", memory_total_mb=4096.0)) == 4.0
    assert memory_capacity_gb(profile_with("cpu")) is None


def test_cpu_capacity_is_the_smaller_of_logical_cores_and_the_quota() -> None:
    assert cpu_capacity(profile_with("cpu", logical_cores=32, cpu_quota=2.5)) == 2.5
    assert cpu_capacity(profile_with("cpu", logical_cores=8)) == 8.0
    assert cpu_capacity(profile_with("cpu")) == 1.0


def test_format_profile_gives_label_value_rows_for_every_fact() -> None:
    profile = profile_with(
        "cpu",
        "cuda",
        container="docker",
        cpu_model="AMD EPYC 9654 96-Core Processor",
        physical_cores=96,
        logical_cores=192,
        cpu_quota=8.0,
        memory_total_mb=786432.0,
        memory_available_mb=700000.0,
        memory_limit_mb=65536.0,
        disk_total_gb=1000.0,
        disk_free_gb=250.5,
        gpus=(
            GpuInfo(
                "nvidia",
                "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                driver="590.48.01",
                compute_capability="9.0",
                index=0,
                mig=True,
            ),
            GpuInfo("nvidia", "NVIDIA H100 80GB HBM3", 81559.0, "590.48.01", "9.0", index=1),
        ),
        notes=("rocm-smi not found (no AMD GPUs)",),
    )
    rows = dict(format_profile(profile)[:8])
    assert rows["platform"] == "linux (docker)"
    assert rows["cores"] == "96 physical, 192 logical, limited to 8"
    assert rows["memory"] == "768.0 GiB total, 683.6 GiB available, limited to 64.0 GiB"
    assert rows["disk"] == "250.5 GiB free of 1000.0 GiB"
    all_rows = format_profile(profile)
    assert ("gpu 0", "nvidia: NVIDIA H100 80GB HBM3 MIG 3g.40gb, MIG instance, cc 9.0, driver 590.48.01") in all_rows
    assert ("gpu 1", "nvidia: NVIDIA H100 80GB HBM3, 79.6 GiB, cc 9.0, driver 590.48.01") in all_rows
    assert ("hardware kinds", "cpu, cuda") in all_rows
    assert ("note", "rocm-smi not found (no AMD GPUs)") in all_rows
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in all_rows)


def test_format_profile_of_a_bare_profile_says_unknown_and_none() -> None:
    rows = dict(format_profile(HardwareProfile(platform="linux")))
    assert (rows["cpu"], rows["memory"], rows["gpus"], rows["browser"]) == ("unknown", "unknown total", "none", "none")


def test_every_row_label_is_known_to_the_cli_table() -> None:
    labels = {
        label for label, _ in format_profile(profile_with("cpu", gpus=(GpuInfo("apple", "Apple M1"),), notes=("x",)))
    }
    assert labels <= {
        "hostname",
        "platform",
        "os",
        "architecture",
        "cpu",
        "cores",
        "memory",
        "disk",
        "gpu",
        "gpus",
        "torch devices",
        "browser",
        "hardware kinds",
        "model sources",
        "model packages",
        "note",
    }
