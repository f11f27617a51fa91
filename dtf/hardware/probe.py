"""detect(): what this machine offers, as a HardwareProfile.

Every outside fact comes through three seams, so tests can play Linux, macOS or Windows
on any machine: a command runner, a file reader and the environment. Each probe asks
one tool or file and hands the raw text to a pure parser (parse_system, parse_gpu).
A probe that cannot answer degrades to "not present" and says why in profile.notes;
detect() itself never raises.
"""

from __future__ import annotations

import logging
import os
import platform as platform_module
import re
import shutil
import socket
import sys
from functools import partial
from typing import Callable, Mapping, Sequence

from dtf.hardware.host import (
    FileReader,
    Host,
    Runner,
    current_platform,
    first_line,
    load_psutil,
    normalise_arch,
    normalise_platform,
    read_text,
    run_command,
    safely,
)
from dtf.hardware.parse_gpu import (
    NVIDIA_QUERY_FIELDS,
    merge_mig_devices,
    parse_clinfo_list,
    parse_lspci,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_rocm_smi_json,
    parse_sycl_ls,
    parse_system_profiler_displays,
    parse_torch_probe,
)
from dtf.hardware.parse_system import (
    CpuInfo,
    MemInfo,
    cgroup_dirs,
    cpu_from_sysctl,
    is_apple_silicon,
    memory_from_sysctl,
    parse_cgroup_cpu_max,
    parse_cgroup_memory_limit,
    parse_cgroup_v1_cpu,
    parse_cpuinfo,
    parse_meminfo,
    parse_os_release,
    parse_proc_cgroup,
    parse_sw_vers,
    parse_sysctl,
    parse_wmic_cpu,
)
from dtf.model import HARDWARE_KINDS, GpuInfo, HardwareProfile

__all__ = ["detect"]

_TORCH_TIMEOUT_FACTOR = 6  # importing torch and initialising CUDA is slower than a tool
_NVIDIA_CSV = ("nvidia-smi", f"--query-gpu={','.join(NVIDIA_QUERY_FIELDS)}", "--format=csv,noheader,nounits")
_ROCM_JSON = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json")
# Run in a fresh interpreter: importing torch costs seconds and memory, and initialising
# CUDA in a process that later forks breaks CUDA in the children (celery#3402).
_TORCH_PROBE = """\
import importlib.util, json
out = {"installed": importlib.util.find_spec("torch") is not None}
if out["installed"]:
    import torch
    out["version"] = torch.__version__
    out["hip"] = getattr(torch.version, "hip", None)
    out["cuda"] = bool(torch.cuda.is_available())
    mps = getattr(torch.backends, "mps", None)
    out["mps"] = bool(mps is not None and mps.is_available())
print(json.dumps(out))
"""
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_MAC_APPS = (
    "Google Chrome.app/Contents/MacOS/Google Chrome",
    "Chromium.app/Contents/MacOS/Chromium",
    "Google Chrome Canary.app/Contents/MacOS/Google Chrome Canary",
)

# --- system probes -----------------------------------------------------------------------


def _container(host: Host) -> str | None:
    if host.env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if host.platform != "linux":
        return None
    init_cgroup = host.read("/proc/1/cgroup") or ""
    if "kubepods" in init_cgroup:
        return "kubernetes"
    # Docker writes /.dockerenv and podman /run/.containerenv; both are OCI containers.
    if host.read("/.dockerenv") is not None or host.read("/run/.containerenv") is not None:
        return "docker"
    if re.search(r"docker|containerd|libpod", init_cgroup):
        return "docker"
    mountinfo = host.read("/proc/self/mountinfo") or ""
    if "/kubelet/pods/" in mountinfo:
        return "kubernetes"
    if re.search(r"/docker/containers/|/var/lib/docker/|/containers/storage/", mountinfo):
        return "docker"
    return None


def _os_release(host: Host) -> str:
    text = ""
    if host.platform == "linux":
        distro = parse_os_release(host.read("/etc/os-release") or host.read("/usr/lib/os-release") or "")
        kernel = (host.read("/proc/sys/kernel/osrelease") or "").strip()
        text = ", ".join(p for p in (distro, f"kernel {kernel}" if kernel else "") if p)
    elif host.platform == "darwin":
        text = parse_sw_vers(host.tool(["sw_vers"], lacking="no macOS version", optional=True) or "")
    elif host.platform == "windows":
        text = (host.tool(["cmd", "/c", "ver"], lacking="no Windows version", optional=True) or "").strip()
    return text or (platform_module.platform() if host.native else "")


def _sysctl(host: Host) -> dict[str, str]:
    out = host.tool(["sysctl", "hw", "machdep"], lacking="no CPU model or memory size from sysctl")
    return parse_sysctl(out or "")


def _architecture(host: Host, sysctl: Mapping[str, str]) -> str:
    if host.platform == "darwin" and sysctl:
        if is_apple_silicon(sysctl):
            return "arm64"
        if sysctl.get("hw.optional.x86_64") == "1":
            return "x86_64"
    if host.platform == "windows":
        # W6432 holds the real architecture when a 32-bit Python runs on 64-bit Windows.
        arch = host.env.get("PROCESSOR_ARCHITEW6432") or host.env.get("PROCESSOR_ARCHITECTURE")
        if arch:
            return normalise_arch(arch)
    return normalise_arch(platform_module.machine()) if host.native else ""


def _cpu(host: Host, sysctl: Mapping[str, str]) -> CpuInfo:
    parsed = CpuInfo()
    if host.platform == "linux":
        parsed = parse_cpuinfo(host.read("/proc/cpuinfo") or "")
    elif host.platform == "darwin":
        parsed = cpu_from_sysctl(sysctl)
    elif host.platform == "windows":
        parsed = _windows_cpu(host)
    psutil = load_psutil() if host.native else None
    if psutil is None:
        return parsed
    return CpuInfo(
        model=parsed.model,
        physical_cores=psutil.cpu_count(logical=False) or parsed.physical_cores,
        logical_cores=psutil.cpu_count(logical=True) or parsed.logical_cores,
    )


def _windows_cpu(host: Host) -> CpuInfo:
    fields = "Name,NumberOfCores,NumberOfLogicalProcessors"
    # wmic is gone from recent Windows 11 builds; PowerShell's CIM gives the same fields.
    out = host.tool(["wmic", "cpu", "get", fields, "/format:list"], lacking="trying PowerShell", optional=True)
    info = parse_wmic_cpu(out or "")
    if info.model:
        return info
    command = f"Get-CimInstance Win32_Processor | Select-Object {fields} | Format-List"
    out = host.tool(["powershell", "-NoProfile", "-NonInteractive", "-Command", command], lacking="no CPU model")
    return parse_wmic_cpu(out or "")


def _memory(host: Host, sysctl: Mapping[str, str]) -> MemInfo:
    parsed = MemInfo()
    if host.platform == "linux":
        parsed = parse_meminfo(host.read("/proc/meminfo") or "")
    elif host.platform == "darwin":
        parsed = MemInfo(total_mb=memory_from_sysctl(sysctl))
    psutil = load_psutil() if host.native else None
    if psutil is None:
        return parsed
    vm = psutil.virtual_memory()
    return MemInfo(total_mb=vm.total / 2**20, available_mb=vm.available / 2**20)


def _cgroup_limits(host: Host) -> tuple[float | None, float | None]:
    """(cpu quota in cores, memory limit in MiB): the tightest found along our cgroup path."""
    paths = parse_proc_cgroup(host.read("/proc/self/cgroup") or "")
    cpus: list[float | None] = []
    mems: list[float | None] = []
    for d in cgroup_dirs("/sys/fs/cgroup", paths.get("", "/")):  # v2, unified
        cpus.append(parse_cgroup_cpu_max(host.read(f"{d}/cpu.max") or ""))
        mems.append(parse_cgroup_memory_limit(host.read(f"{d}/memory.max") or ""))
    for mount in ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"):  # v1
        for d in cgroup_dirs(mount, paths.get("cpu", "/")):
            quota, period = host.read(f"{d}/cpu.cfs_quota_us"), host.read(f"{d}/cpu.cfs_period_us")
            cpus.append(parse_cgroup_v1_cpu(quota or "", period or ""))
    for d in cgroup_dirs("/sys/fs/cgroup/memory", paths.get("memory", "/")):
        mems.append(parse_cgroup_memory_limit(host.read(f"{d}/memory.limit_in_bytes") or ""))
    return _smallest(cpus), _smallest(mems)


def _smallest(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _cpu_quota(host: Host, quota: float | None, logical: int | None) -> float | None:
    # A cpuset (docker --cpuset-cpus, taskset) limits cores as surely as a quota does.
    psutil = load_psutil() if host.native else None
    process = psutil.Process() if psutil is not None else None
    if process is not None and logical and hasattr(process, "cpu_affinity"):
        allowed = len(process.cpu_affinity())
        if 0 < allowed < logical:
            quota = min(quota, float(allowed)) if quota is not None else float(allowed)
    return round(quota, 3) if quota is not None else None


def _disk(host: Host, workdir: str) -> tuple[float | None, float | None]:
    try:
        usage = shutil.disk_usage(workdir)
    except OSError as exc:
        host.note(f"disk usage of {workdir!r} unknown: {exc}")
        return None, None
    return round(usage.total / 2**30, 2), round(usage.free / 2**30, 2)


# --- accelerator probes ------------------------------------------------------------------


def _nvidia(host: Host) -> list[GpuInfo]:
    out = host.tool(_NVIDIA_CSV, lacking="no NVIDIA GPUs")
    gpus = parse_nvidia_smi_csv(out) if out is not None else []
    if out is not None and out.strip() and not gpus:
        host.note(f"nvidia-smi output not understood: {first_line(out)}", level=logging.WARNING)
    # -L shows MIG instances, and names GPUs when the query fails (e.g. an old driver
    # that lacks a field); a missing or hung nvidia-smi is not asked again.
    listing = host.tool(["nvidia-smi", "-L"], lacking="no NVIDIA GPUs")
    listed = parse_nvidia_smi_list(listing or "")
    if gpus:
        return merge_mig_devices(gpus, listed)
    cards = [g for g in listed if not g.mig]
    if cards:
        host.note("nvidia-smi --query-gpu gave no GPUs; using nvidia-smi -L (names only)")
    return merge_mig_devices(cards, listed)


def _amd(host: Host) -> list[GpuInfo]:
    out = host.tool(_ROCM_JSON, lacking="no AMD GPUs")
    if out is None:
        return []
    gpus = parse_rocm_smi_json(out)
    if not gpus:
        host.note(f"rocm-smi listed no GPUs: {first_line(out)}")
    return gpus


def _apple(host: Host) -> list[GpuInfo]:
    out = host.tool(["system_profiler", "SPDisplaysDataType", "-json"], lacking="no GPU names")
    return parse_system_profiler_displays(out or "")


def _intel(host: Host) -> list[GpuInfo]:
    # Optional: Intel GPUs serve no queue yet, so a missing tool is not worth a note.
    out = host.tool(["sycl-ls"], lacking="no Intel GPUs", optional=True)
    gpus = parse_sycl_ls(out or "")
    if gpus:
        return gpus
    out = host.tool(["clinfo", "-l"], lacking="no Intel GPUs", optional=True)
    return parse_clinfo_list(out or "")


def _explain_missing_gpus(host: Host) -> None:
    """Point at a driver problem when the PCI bus has GPUs that the vendor tools missed."""
    out = host.tool(["lspci"], lacking="no PCI listing", optional=True)
    devices = parse_lspci(out or "")
    for vendor, tool in (("nvidia", "nvidia-smi"), ("amd", "rocm-smi")):
        names = sorted({g.name for g in devices if g.vendor == vendor})
        if names:
            count = sum(1 for g in devices if g.vendor == vendor)
            host.note(
                f"lspci shows {count} {vendor.upper()} display device(s) ({', '.join(names)}) "
                f"that {tool} did not report: check the driver"
            )


def _torch(host: Host) -> tuple[str, ...]:
    if not sys.executable:
        host.note("no Python executable to probe torch with (no torch devices)")
        return ()
    out = host.tool(
        [sys.executable, "-c", _TORCH_PROBE],
        lacking="no torch devices",
        label="torch probe",
        timeout=host.timeout_s * _TORCH_TIMEOUT_FACTOR,
    )
    if out is None:
        return ()
    devices = parse_torch_probe(out)
    if devices is None:
        host.note("torch not importable (no torch devices)")
        return ()
    return devices


def _browser(host: Host) -> str | None:
    search_path = host.env.get("PATH", "")
    for name in BROWSERS:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    for candidate in _browser_paths(host):
        if os.path.isfile(candidate):
            return candidate
    host.note("no Chromium or Chrome browser found (no webgpu)")
    return None


def _browser_paths(host: Host) -> list[str]:
    if host.platform == "darwin":
        roots = ["/Applications"] + ([os.path.join(host.env["HOME"], "Applications")] if host.env.get("HOME") else [])
        return [os.path.join(root, app) for root in roots for app in _MAC_APPS]
    if host.platform == "windows":
        roots = [host.env[k] for k in ("ProgramFiles", "ProgramFiles(x86)", "LOCALAPPDATA") if host.env.get(k)]
        return [
            os.path.join(root, vendor, "Application", "chrome.exe")
            for root in roots
            for vendor in (os.path.join("Google", "Chrome"), "Chromium")
        ]
    return []


def _hardware_kinds(
    platform: str, gpus: Sequence[GpuInfo], *, apple_silicon: bool, torch_devices: Sequence[str], browser: str | None
) -> tuple[str, ...]:
    """The kinds of test this machine can serve.

    NVIDIA and AMD GPUs count only where their compute stacks run: CUDA on Linux and
    Windows, ROCm on Linux. An Intel Mac's Radeon, listed by system_profiler, does not.
    """
    vendors = {g.vendor for g in gpus}
    kinds = {"cpu"}
    if ("nvidia" in vendors and platform != "darwin") or "cuda" in torch_devices:
        kinds.add("cuda")
    if ("amd" in vendors and platform == "linux") or "hip" in torch_devices:
        kinds.add("rocm")
    if apple_silicon or "mps" in torch_devices:
        kinds.add("mps")
    if browser:
        kinds.add("webgpu")
    return tuple(k for k in HARDWARE_KINDS if k in kinds)


# Which accelerator probes run on which platform.
_GPU_PROBES: tuple[tuple[str, tuple[str, ...], Callable[[Host], list[GpuInfo]]], ...] = (
    ("nvidia", ("linux", "windows"), _nvidia),
    ("amd", ("linux",), _amd),
    ("apple", ("darwin",), _apple),
    ("intel", ("linux", "windows"), _intel),
)


def _gpus(host: Host) -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    for vendor, platforms, probe in _GPU_PROBES:
        if host.platform in platforms:
            no_gpus: list[GpuInfo] = []
            gpus += safely(host, vendor, partial(probe, host), no_gpus)
    if host.platform == "linux" and not {"nvidia", "amd"} & {g.vendor for g in gpus}:
        safely(host, "lspci", partial(_explain_missing_gpus, host), None)
    return gpus


# --- detect ------------------------------------------------------------------------------


def detect(
    *,
    platform: str | None = None,
    run: Runner | None = None,
    read_file: FileReader | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str = ".",
    timeout_s: float = 5.0,
) -> HardwareProfile:
    """Detect this machine's platform, CPU, memory, disk, accelerators and browser.

    The keyword arguments replace the outside world for tests: `platform` (linux,
    darwin, windows) picks the code path, `run` runs tools, `read_file` reads files and
    `env` stands for os.environ (and gives the default runner its PATH). Every tool gets
    `timeout_s` (the torch probe six times that). psutil is used only when `platform`
    is this interpreter's own. Never raises: what could not be found is in `notes`.
    """
    env = os.environ if env is None else env
    name = normalise_platform(platform) if platform else current_platform()
    host = Host(
        platform=name,
        run=run if run is not None else (lambda argv, timeout: run_command(argv, timeout, env=env)),
        read_file=read_file or read_text,
        env=env,
        timeout_s=timeout_s,
        native=name == current_platform(),
    )
    no_sysctl: dict[str, str] = {}
    sysctl = safely(host, "sysctl", lambda: _sysctl(host), no_sysctl) if name == "darwin" else no_sysctl
    cpu = safely(host, "cpu", lambda: _cpu(host, sysctl), CpuInfo())
    memory = safely(host, "memory", lambda: _memory(host, sysctl), MemInfo())
    no_limits: tuple[float | None, float | None] = (None, None)
    cpu_limit, memory_limit = (
        safely(host, "cgroup", lambda: _cgroup_limits(host), no_limits) if name == "linux" else no_limits
    )
    disk_total, disk_free = safely(host, "disk", lambda: _disk(host, workdir), no_limits)
    gpus = _gpus(host)
    no_devices: tuple[str, ...] = ()
    torch_devices = safely(host, "torch", lambda: _torch(host), no_devices)
    browser = safely(host, "browser", lambda: _browser(host), None)
    no_sources: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    model_sources, model_packages = safely(host, "model sources", lambda: _model_sources(host), no_sources)
    architecture = safely(host, "architecture", lambda: _architecture(host, sysctl), "")
    apple_silicon = name == "darwin" and (is_apple_silicon(sysctl) or architecture == "arm64")

    return HardwareProfile(
        platform=name,
        container=safely(host, "container", lambda: _container(host), None),
        os_release=safely(host, "os release", lambda: _os_release(host), ""),
        architecture=architecture,
        hostname=safely(host, "hostname", socket.gethostname, ""),
        cpu_model=cpu.model,
        physical_cores=cpu.physical_cores,
        logical_cores=cpu.logical_cores,
        cpu_quota=safely(host, "cpu quota", lambda: _cpu_quota(host, cpu_limit, cpu.logical_cores), None),
        memory_total_mb=_round(memory.total_mb),
        memory_available_mb=_round(memory.available_mb),
        memory_limit_mb=_round(memory_limit),
        disk_total_gb=disk_total,
        disk_free_gb=disk_free,
        gpus=tuple(gpus),
        torch_devices=torch_devices,
        browser=browser,
        hardware_kinds=_hardware_kinds(
            name, gpus, apple_silicon=apple_silicon, torch_devices=torch_devices, browser=browser
        ),
        notes=tuple(host.notes),
        model_sources=model_sources,
        model_packages=model_packages,
    )


def _model_sources(host: Host) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(model sources this interpreter can run, "package version" of what they need), from
    package metadata only: nothing is imported. Empty when playing another machine."""
    if not host.native:
        return (), ()
    from dtf.models.inspect import installed, runnable_sources

    versions = installed()
    return runnable_sources(versions), tuple(f"{p} {v}" for p, v in versions.items() if v)


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None
