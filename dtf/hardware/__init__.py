"""Platform and hardware detection, and the queues a worker on this machine consumes.

`detect()` probes the machine (CPU, memory, cgroup limits, disk, NVIDIA/AMD/Apple/Intel
GPUs, torch devices, a Chromium browser for webgpu) into a HardwareProfile and never
raises: what it could not find is in `profile.notes`. `select_queues()` and
`worker_name()` turn the profile into a worker's queues and node name. The pure
`parse_*` functions turn each tool's raw text into data and are what the tests pin to
recorded real outputs.

    profile = detect()
    queues = select_queues(profile, tags=["sm90"])   # ["dtf.cpu", "dtf.cuda", "dtf.tag.sm90"]
"""

from __future__ import annotations

from dtf.hardware.host import FileReader, Runner, current_platform, read_text, run_command
from dtf.hardware.parse_gpu import (
    NVIDIA_QUERY_FIELDS,
    merge_mig_devices,
    parse_clinfo_list,
    parse_lspci,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_rocm_smi_csv,
    parse_rocm_smi_json,
    parse_sycl_ls,
    parse_system_profiler_displays,
    parse_torch_probe,
)
from dtf.hardware.parse_system import (
    CpuInfo,
    MemInfo,
    arm_cpu_name,
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
from dtf.hardware.probe import detect
from dtf.hardware.profile import (
    TAG_QUEUE_PREFIX,
    cpu_capacity,
    format_profile,
    memory_capacity_gb,
    select_queues,
    tag_queue,
    worker_name,
)

__all__ = [
    # detection
    "detect",
    "Runner",
    "FileReader",
    "run_command",
    "read_text",
    "current_platform",
    # using a profile
    "select_queues",
    "tag_queue",
    "TAG_QUEUE_PREFIX",
    "worker_name",
    "memory_capacity_gb",
    "cpu_capacity",
    "format_profile",
    # parsers: raw tool text -> data
    "CpuInfo",
    "MemInfo",
    "NVIDIA_QUERY_FIELDS",
    "parse_nvidia_smi_csv",
    "parse_nvidia_smi_list",
    "merge_mig_devices",
    "parse_rocm_smi_json",
    "parse_rocm_smi_csv",
    "parse_system_profiler_displays",
    "parse_sycl_ls",
    "parse_clinfo_list",
    "parse_lspci",
    "parse_torch_probe",
    "parse_cpuinfo",
    "arm_cpu_name",
    "parse_meminfo",
    "parse_cgroup_cpu_max",
    "parse_cgroup_v1_cpu",
    "parse_cgroup_memory_limit",
    "parse_proc_cgroup",
    "cgroup_dirs",
    "parse_sysctl",
    "cpu_from_sysctl",
    "memory_from_sysctl",
    "is_apple_silicon",
    "parse_wmic_cpu",
    "parse_sw_vers",
    "parse_os_release",
]
