"""Pure parsers for accelerator listings: nvidia-smi, rocm-smi, system_profiler, sycl-ls,
clinfo, lspci, and the JSON line our torch probe prints.

Each takes the tool's raw text and returns GpuInfo records (memory in MiB). None raises
on text it does not understand, such as a driver error or a truncated listing: it
returns the GPUs it could read, often none, and the caller says why in the notes.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any, Mapping, Sequence

from dtf.model import GpuInfo

__all__ = [
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
]

# The columns detect() asks nvidia-smi for, in order; rows without a header follow it.
NVIDIA_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "driver_version",
    "compute_cap",
)
# Older drivers and other tools name some columns differently.
_NVIDIA_ALIASES: Mapping[str, str] = {"gpu_uuid": "uuid", "gpu_name": "name"}
_UNIT_FACTORS_TO_MIB: Mapping[str, float] = {"mib": 1.0, "gib": 1024.0, "kib": 1 / 1024}
_MIB = 2**20


def _missing(value: str) -> bool:
    """nvidia-smi and rocm-smi write [N/A], N/A, [Not Supported], [Unknown Error] and
    the like where a field has no value."""
    v = value.strip()
    return not v or (v.startswith("[") and v.endswith("]")) or v.upper() in {"N/A", "NA", "NOT SUPPORTED"}


def _clean(value: str | None) -> str | None:
    return None if value is None or _missing(value) else value.strip()


def _number(value: str | None) -> float | None:
    """A number with an optional unit ("81559 MiB", "0 %", "12.0"), in MiB for sizes."""
    text = _clean(value)
    match = re.fullmatch(r"([-+]?\d+(?:\.\d+)?)\s*([A-Za-z%]*)", text) if text else None
    if not match:
        return None
    factor = _UNIT_FACTORS_TO_MIB.get(match.group(2).lower(), 1.0)
    return float(match.group(1)) * factor


def _index(value: str | None) -> int | None:
    text = _clean(value)
    return int(text) if text and text.isdigit() else None


# --- nvidia-smi --query-gpu --------------------------------------------------------------


def _nvidia_header(cells: Sequence[str]) -> list[str] | None:
    """Field names if this row is a header ("memory.total [MiB]" -> "memory.total")."""
    names = [re.sub(r"\s*\[[^\]]*\]$", "", c.strip()) for c in cells]
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", n) for n in names):
        return None
    names = [_NVIDIA_ALIASES.get(n, n) for n in names]
    return names if set(names) & set(NVIDIA_QUERY_FIELDS) else None


def _nvidia_gpu(row: Mapping[str, str]) -> GpuInfo | None:
    name = _clean(row.get("name"))
    if not name:
        return None
    return GpuInfo(
        vendor="nvidia",
        name=name,
        memory_mb=_number(row.get("memory.total")),
        driver=_clean(row.get("driver_version")),
        compute_capability=_clean(row.get("compute_cap")),
        index=_index(row.get("index")),
        uuid=_clean(row.get("uuid")),
        utilization_percent=_number(row.get("utilization.gpu")),
        memory_used_mb=_number(row.get("memory.used")),
    )


def parse_nvidia_smi_csv(text: str, fields: Sequence[str] = NVIDIA_QUERY_FIELDS) -> list[GpuInfo]:
    """GPUs from `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`.

    A header row, when present, names the columns (so any field order works, and unit
    suffixes are dropped); otherwise columns follow `fields`. Rows with the wrong number
    of columns (error messages, warnings) are skipped.
    """
    columns = [_NVIDIA_ALIASES.get(f, f) for f in fields]
    gpus: list[GpuInfo] = []
    for cells in csv.reader(text.splitlines(), skipinitialspace=True):
        if not cells or not any(c.strip() for c in cells):
            continue
        header = _nvidia_header(cells)
        if header is not None:
            columns = header
            continue
        if len(cells) != len(columns):
            continue
        gpu = _nvidia_gpu(dict(zip(columns, cells, strict=True)))
        if gpu is not None:
            gpus.append(gpu)
    return gpus


# --- nvidia-smi -L (MIG) -----------------------------------------------------------------

_GPU_LINE = re.compile(r"^GPU\s+(\d+):\s*(.+?)\s*\(UUID:\s*([^)\s]+)\s*\)\s*$")
_MIG_LINE = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s*\(UUID:\s*([^)\s]+)\s*\)\s*$")


def parse_nvidia_smi_list(text: str) -> list[GpuInfo]:
    """GPUs and their MIG instances from `nvidia-smi -L`.

    A MIG instance becomes its own record (mig=True) carrying its parent's index and a
    name like "NVIDIA A100-SXM4-80GB MIG 1g.20gb"; its memory is left unknown rather
    than guessed from the profile name.
    """
    gpus: list[GpuInfo] = []
    parent: GpuInfo | None = None
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        mig = _MIG_LINE.match(line)
        if gpu:
            parent = GpuInfo("nvidia", gpu.group(2), index=int(gpu.group(1)), uuid=gpu.group(3))
            gpus.append(parent)
        elif mig and parent is not None:
            name = f"{parent.name} MIG {mig.group(1)}"
            gpus.append(GpuInfo("nvidia", name, index=parent.index, uuid=mig.group(3), mig=True))
    return gpus


def merge_mig_devices(gpus: Sequence[GpuInfo], listed: Sequence[GpuInfo]) -> list[GpuInfo]:
    """Replace each GPU in MIG mode by its MIG instances from `nvidia-smi -L`.

    With MIG on, CUDA sees only the instances, so they, not the whole card, are what a
    test can be given. Instances inherit the card's driver and compute capability.
    """
    merged: list[GpuInfo] = []
    for gpu in gpus:
        instances = [m for m in listed if m.mig and m.index == gpu.index]
        if not instances:
            merged.append(gpu)
            continue
        for m in instances:
            merged.append(
                GpuInfo(
                    "nvidia",
                    m.name,
                    driver=gpu.driver,
                    compute_capability=gpu.compute_capability,
                    index=gpu.index,
                    uuid=m.uuid,
                    mig=True,
                )
            )
    return merged


# --- rocm-smi ----------------------------------------------------------------------------


def _json_object(text: str) -> Any:
    """The first JSON value in text: rocm-smi may print warnings or blank lines first."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except (ValueError, RecursionError):
        return None
    return value


def _rocm_gpu(card: str, fields: Mapping[str, Any], driver: str | None) -> GpuInfo | None:
    # Key case changed between ROCm releases ("Card series" -> "Card Series").
    lower = {str(k).strip().lower(): str(v) for k, v in fields.items()}
    name = next(
        (_clean(lower.get(k)) for k in ("card series", "device name", "card model") if _clean(lower.get(k))),
        None,
    )
    if not name:
        return None
    total = _number(lower.get("vram total memory (b)"))
    used = _number(lower.get("vram total used memory (b)"))
    return GpuInfo(
        vendor="amd",
        name=name,
        memory_mb=total / _MIB if total is not None else None,
        driver=_clean(lower.get("driver version")) or driver,
        compute_capability=_clean(lower.get("gfx version")),
        index=_index(card[4:]) if card.startswith("card") else None,
        uuid=_clean(lower.get("unique id")),
        utilization_percent=_number(lower.get("gpu use (%)")),
        memory_used_mb=used / _MIB if used is not None else None,
    )


def parse_rocm_smi_json(text: str) -> list[GpuInfo]:
    """GPUs from `rocm-smi --showproductname --showmeminfo vram --json`.

    Handles the shapes seen across ROCm releases: per-card objects keyed "card0"...,
    an optional "system" object (driver version), old and new key spellings, and
    leading blank lines or warnings.
    """
    data = _json_object(text)
    if not isinstance(data, dict):
        return []
    system = data.get("system")
    driver = None
    if isinstance(system, dict) and "Driver version" in system:
        driver = _clean(str(system["Driver version"]))
    gpus = []
    for card, fields in data.items():
        if isinstance(card, str) and re.fullmatch(r"card\d+", card) and isinstance(fields, dict):
            gpu = _rocm_gpu(card, fields, driver)
            if gpu is not None:
                gpus.append(gpu)
    return gpus


def parse_rocm_smi_csv(text: str) -> list[GpuInfo]:
    """GPUs from `rocm-smi --showproductname --showmeminfo vram --csv` (first column "device")."""
    rows = list(csv.reader(text.splitlines()))
    header = next((i for i, r in enumerate(rows) if r and r[0].strip() == "device"), None)
    if header is None:
        return []
    names = rows[header]
    gpus = []
    for row in rows[header + 1 :]:
        if len(row) == len(names) and row[0].startswith("card"):
            gpu = _rocm_gpu(row[0], dict(zip(names, row, strict=True)), None)
            if gpu is not None:
                gpus.append(gpu)
    return gpus


# --- macOS system_profiler ---------------------------------------------------------------

_VENDOR_WORDS: tuple[tuple[str, str], ...] = (
    ("apple", "apple"),
    ("amd", "amd"),
    ("ati", "amd"),
    ("nvidia", "nvidia"),
    ("intel", "intel"),
)


def _vendor_of(*texts: str) -> str:
    lowered = " ".join(texts).lower()
    return next((vendor for word, vendor in _VENDOR_WORDS if re.search(rf"\b{word}\b|_{word}\b", lowered)), "unknown")


def _vram_mb(text: str | None) -> float | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GB|MB)\s*", text or "")
    if not match:
        return None
    return float(match.group(1)) * (1024 if match.group(2) == "GB" else 1)


def parse_system_profiler_displays(json_text: str) -> list[GpuInfo]:
    """GPUs from `system_profiler SPDisplaysDataType -json`.

    Apple Silicon shares memory with the CPU, so it has no VRAM figure; discrete and
    Intel GPUs on Intel Macs report "spdisplays_vram" or "spdisplays_vram_shared".
    """
    data = _json_object(json_text)
    items = data.get("SPDisplaysDataType") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    gpus = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        name = str(item.get("sppci_model") or item.get("_name") or "").strip()
        if not name:
            continue
        vendor = _vendor_of(str(item.get("spdisplays_vendor", "")), str(item.get("sppci_vendor", "")), name)
        vram = item.get("spdisplays_vram") or item.get("spdisplays_vram_shared")
        gpus.append(GpuInfo(vendor, name, memory_mb=_vram_mb(str(vram)) if vram else None, index=i))
    return gpus


# --- Intel: sycl-ls and clinfo -----------------------------------------------------------

_SYCL_LINE = re.compile(r"^\[(\w+):(\w+)\]\[\w+:(\d+)\]\s*([^,]*),\s*(.+)$")


def _sycl_device_name(text: str) -> str:
    name = re.sub(r"\s*\[[^\]]*\]\s*$", "", text)  # driver version
    name = re.sub(r"\s+OpenCL\s+\d.*$", "", name)  # "OpenCL 3.0 NEO"
    return re.sub(r"\s+\d+(?:\.\d+)+$", "", name).strip()  # device version "12.55.8"


def parse_sycl_ls(text: str) -> list[GpuInfo]:
    """Intel GPUs from `sycl-ls`; each GPU appears once per backend, so Level Zero's
    listing is used when there is one, else OpenCL's."""
    by_backend: dict[str, list[GpuInfo]] = {}
    for line in text.splitlines():
        match = _SYCL_LINE.match(line.strip())
        if not match or match.group(2) != "gpu":
            continue
        backend, index, platform, device = match.group(1), match.group(3), match.group(4), match.group(5)
        name = _sycl_device_name(device)
        if name and _vendor_of(platform, name) == "intel":
            by_backend.setdefault(backend, []).append(GpuInfo("intel", name, index=int(index)))
    return by_backend.get("level_zero") or by_backend.get("opencl") or []


def parse_clinfo_list(text: str) -> list[GpuInfo]:
    """Intel GPUs from `clinfo -l`: devices of an Intel graphics platform.

    Intel's CPU OpenCL runtime is a separate platform without "Graphics" in its name.
    """
    gpus: list[GpuInfo] = []
    platform = ""
    for line in text.splitlines():
        plat = re.match(r"^Platform #\d+:\s*(.*)$", line)
        dev = re.match(r"^\s*[`+|]--\s*Device #(\d+):\s*(.*)$", line)
        if plat:
            platform = plat.group(1).strip()
        elif dev and "intel" in platform.lower():
            name = dev.group(2).strip()
            if "graphics" in f"{platform} {name}".lower():
                gpus.append(GpuInfo("intel", name, index=int(dev.group(1))))
    return gpus


# --- lspci -------------------------------------------------------------------------------

_LSPCI_LINE = re.compile(
    r"^\S+\s+(?:VGA compatible controller|3D controller|Display controller|Processing accelerators)"
    r"(?:\s*\[[0-9a-fA-F]{4}\])?:\s*(.+)$"
)


def _lspci_name(desc: str) -> str:
    ids = re.search(r"\[([0-9a-f]{4}:[0-9a-f]{4})\]", desc)
    text = re.sub(r"\s*\(rev [0-9a-f]+\)\s*$", "", desc)
    text = re.sub(r"\s*\[[0-9a-f]{4}:[0-9a-f]{4}\]", "", text)
    brackets: list[str] = re.findall(r"\[([^\]]+)\]", text)
    # The last bracket holds the marketing name ("GH100 [H200 SXM 141GB]"); "[AMD/ATI]"
    # is part of AMD's vendor string, not a model.
    if brackets and brackets[-1] != "AMD/ATI":
        return brackets[-1]
    name = re.sub(r"^(NVIDIA Corporation|Intel Corporation|Advanced Micro Devices, Inc\. \[AMD/ATI\])\s*", "", text)
    return f"{name} {ids.group(1)}" if name == "Device" and ids else name.strip()


def parse_lspci(text: str) -> list[GpuInfo]:
    """Display devices on the PCI bus from `lspci` or `lspci -nn`, whether or not a driver
    drives them: used to explain why a vendor tool found nothing."""
    gpus = []
    for line in text.splitlines():
        match = _LSPCI_LINE.match(line.strip())
        if match:
            desc = match.group(1)
            vendor = "amd" if "Advanced Micro Devices" in desc else _vendor_of(desc.split(" ")[0])
            gpus.append(GpuInfo(vendor, _lspci_name(desc)))
    return gpus


# --- torch -------------------------------------------------------------------------------


def parse_torch_probe(text: str) -> tuple[str, ...] | None:
    """Torch device types ("cuda", "hip", "mps") from the probe's JSON line, or None when
    torch is not installed or the output is not understood.

    ROCm builds of torch answer torch.cuda.is_available() too; torch.version.hip tells
    them apart.
    """
    data = _json_object(text)
    if not isinstance(data, dict) or data.get("installed") is not True:
        return None
    devices = []
    if data.get("cuda") is True:
        devices.append("hip" if data.get("hip") else "cuda")
    if data.get("mps") is True:
        devices.append("mps")
    return tuple(devices)
