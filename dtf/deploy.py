"""Rendering the files that install and start a dtf worker on one kind of host.

`render_deploy` turns a few options (broker, name, tags, queues, GPU) into the install
script, start/stop scripts and service definition for Linux (systemd), macOS (launchd),
Windows (PowerShell), Docker (Dockerfile + compose service) or Kubernetes (Deployment or
DaemonSet). Templates live in ``workers/templates/`` and are rendered in a Jinja sandbox
where every interpolated value must pass through the quoting filter of its file's
language; an unquoted value is a render error, not a silent injection.

Secrets are never written: credentials in a broker URL are removed, and the generated
files point at a password file (``DTF_REDIS_PASSWORD_FILE``) or a Kubernetes Secret. The
key that signs every message (``DTF_SIGNING_KEY_FILE``, from ``dtf keygen``) is named the
same way: a file on a host, a compose secret, a Kubernetes Secret mounted as a file; a
worker against a broker on the network refuses to start without one.
`ENV_VARS` are the variables an operator sets, from the registry in `dtf/envvars.py`.

One module on purpose: its sections (broker URLs, options, quoting, rendering, host
profiles, env files) are the steps of one path, options in and a platform's files out,
and none is used anywhere else: the quoting filters exist for these templates only, a
host profile is another way to give the options, and the option checks are what makes
the quoting sufficient. Split apart, each piece would need the others to be read.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape as _xml_escape

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from dtf.envvars import OPERATOR_VARS, EnvVar
from dtf.errors import DtfError
from dtf.paths import to_posix, to_windows

__all__ = [
    "EnvVar",
    "ENV_VARS",
    "ENV_VAR_NAMES",
    "PLATFORMS",
    "PLATFORM_FILES",
    "GPU_VENDORS",
    "DEFAULT_PREFIX",
    "STOP_TIMEOUT_S",
    "BrokerUrl",
    "DeployOptions",
    "HostProfile",
    "split_broker_url",
    "deploy_options",
    "render_deploy",
    "render_options",
    "render_texts",
    "load_host_profile",
    "render_profile",
    "templates_root",
    "profiles_root",
    "read_env_file",
    "Quoted",
    "quote_sh",
    "quote_ps",
    "quote_xml",
    "quote_yaml",
]


# The variables an operator sets (the registry in dtf/envvars.py holds every DTF_* name).
ENV_VARS: tuple[EnvVar, ...] = OPERATOR_VARS
ENV_VAR_NAMES: frozenset[str] = frozenset(var.name for var in ENV_VARS)
_SECRET_NAMES: frozenset[str] = frozenset(var.name for var in ENV_VARS if var.secret)

# Output name -> template name under workers/templates/, per platform.
PLATFORM_FILES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "linux": (
        ("worker.env", "posix/worker.env.j2"),
        ("install.sh", "linux/install.sh.j2"),
        ("start-worker.sh", "posix/start-worker.sh.j2"),
        ("stop-worker.sh", "posix/stop-worker.sh.j2"),
        ("dtf-worker.service", "linux/dtf-worker.service.j2"),
    ),
    "macos": (
        ("worker.env", "posix/worker.env.j2"),
        ("install.sh", "macos/install.sh.j2"),
        ("start-worker.sh", "posix/start-worker.sh.j2"),
        ("stop-worker.sh", "posix/stop-worker.sh.j2"),
        ("com.dtf.worker.plist", "macos/com.dtf.worker.plist.j2"),
    ),
    "windows": (
        ("install.ps1", "windows/install.ps1.j2"),
        ("start-worker.ps1", "windows/start-worker.ps1.j2"),
        ("stop-worker.ps1", "windows/stop-worker.ps1.j2"),
        ("start-worker.bat", "windows/start-worker.bat.j2"),
    ),
    "docker": (
        ("Dockerfile", "docker/Dockerfile.j2"),
        ("docker-compose.worker.yml", "docker/docker-compose.worker.yml.j2"),
    ),
    "kubernetes": (("worker-deployment.yaml", "kubernetes/worker-deployment.yaml.j2"),),
}
PLATFORMS: tuple[str, ...] = tuple(PLATFORM_FILES)
# Platforms where the worker runs from an install folder on the host (not an image).
_HOST_PLATFORMS = frozenset({"linux", "macos", "windows"})

DEFAULT_PREFIX: Mapping[str, str] = {
    "linux": "/opt/dtf",
    "macos": "/opt/dtf",
    "windows": "C:\\dtf",
    "docker": "/opt/dtf",
    "kubernetes": "/opt/dtf",
}
# A stop must wait for the running test: SIGTERM makes Celery finish it (warm shutdown).
STOP_TIMEOUT_S = 900

# gpu option -> vendor; vendor -> Kubernetes resource, base image, torch index.
GPU_VENDORS: Mapping[str, str] = {"cuda": "nvidia", "nvidia": "nvidia", "rocm": "amd", "amd": "amd"}
_GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
_GPU_NODE_LABEL = {"nvidia": ("nvidia.com/gpu.present", "true"), "amd": ("feature.node.kubernetes.io/amd-gpu", "true")}
_BASE_IMAGE = {
    None: "python:3.11-slim",
    "nvidia": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    "amd": "rocm/dev-ubuntu-22.04:6.1",
}
_TORCH_INDEX = {None: "", "nvidia": "", "amd": "https://download.pytorch.org/whl/rocm6.1"}

_BROKER_SCHEMES = ("redis", "rediss", "sentinel", "memory")
_LIST_ITEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+<>=@/-]*$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")
_POSIX_PREFIX = re.compile(r"^/[A-Za-z0-9_./+-]*$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_PROFILES = ("benchmark", "test", "light")
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp", "Cn", "Co"})


# --- broker URLs -----------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerUrl:
    """A broker URL split into the part safe to write and the credentials it carried."""

    url: str
    username: str | None = None
    had_password: bool = False


def _strip_one(url: str) -> BrokerUrl:
    parts = urlsplit(url)
    if parts.scheme not in _BROKER_SCHEMES:
        raise DtfError(f"broker URL scheme {parts.scheme!r} is not supported (expected one of {', '.join(_BROKER_SCHEMES)})")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_colon, password = userinfo.partition(":")
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k.lower() != "password"]
    had_password = bool(has_colon and password) or len(kept) != len(query)
    clean = urlunsplit((parts.scheme, hostport, parts.path, urlencode(kept), parts.fragment))
    return BrokerUrl(clean, user or None, had_password)


def split_broker_url(url: str) -> BrokerUrl:
    """`url` without user name or password (kombu's `;`-separated failover lists included),
    with the user name and whether a password was there.

    >>> split_broker_url("redis://bob:pw@cache:6379/0")
    BrokerUrl(url='redis://cache:6379/0', username='bob', had_password=True)
    """
    pieces = [_strip_one(piece.strip()) for piece in url.split(";") if piece.strip()]
    if not pieces:
        raise DtfError("broker URL is empty")
    users = {p.username for p in pieces if p.username}
    if len(users) > 1:
        raise DtfError("broker URL names more than one Redis user")
    return BrokerUrl(";".join(p.url for p in pieces), users.pop() if users else None, any(p.had_password for p in pieces))


# --- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployOptions:
    """Validated inputs of one rendering; `environment()` is what the worker is started with."""

    platform: str
    prefix: str
    broker: BrokerUrl | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()
    sentinel_master: str | None = None
    concurrency: int | None = None
    profile: str | None = None
    python: str = "python3"
    install_source: str = "dtf"
    gpu: str | None = None  # vendor: "nvidia" or "amd"
    image: str = "dtf-worker:latest"
    password_file: str | None = None
    signing_key_file: str | None = None
    stop_timeout_s: int = STOP_TIMEOUT_S
    user: str = "dtf"  # the account the systemd service runs as

    def environment(self) -> dict[str, str]:
        """The non-secret DTF_* variables the worker runs with, in a stable order."""
        env: dict[str, str] = {}
        if self.broker is not None:
            env["DTF_BROKER_URL"] = self.broker.url
            if self.broker.username:
                env["DTF_REDIS_USERNAME"] = self.broker.username
        if self.sentinels:
            env["DTF_SENTINELS"] = ",".join(self.sentinels)
            env["DTF_SENTINEL_MASTER"] = self.sentinel_master or "mymaster"
        if self.password_file and self.platform in _HOST_PLATFORMS:
            env["DTF_REDIS_PASSWORD_FILE"] = self.password_file
        if self.signing_needed and self.platform in _HOST_PLATFORMS:
            env["DTF_SIGNING_KEY_FILE"] = self.signing_key_file or self.path("secrets", "signing-key")
        optional = {
            "DTF_WORKER_NAME": self.name,
            "DTF_TAGS": ",".join(self.tags) or None,
            "DTF_QUEUES": ",".join(self.queues) or None,
            "DTF_CONCURRENCY": str(self.concurrency) if self.concurrency else None,
            "DTF_PROFILE": self.profile,
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        env["DTF_SPOOL_DIR"] = self.path("spool")
        assert set(env) <= ENV_VAR_NAMES - _SECRET_NAMES, set(env) - ENV_VAR_NAMES
        return env

    @property
    def password_needed(self) -> bool:
        """Whether the broker asked for a password that the operator must provide."""
        return bool(self.password_file) or bool(self.broker and self.broker.had_password)

    @property
    def signing_needed(self) -> bool:
        """Whether the worker needs the fleet's signing key file: one was given, or the worker
        runs in a container or talks to a broker off this machine (dtf.signing refuses to
        start unsigned there; on loopback a worker makes its own key in its state dir)."""
        if self.signing_key_file or self.platform not in _HOST_PLATFORMS:
            return True
        if self.broker is None and not self.sentinels:
            return False
        from types import SimpleNamespace

        from .signing import is_loopback_broker

        return not is_loopback_broker(SimpleNamespace(sentinels=self.sentinels, broker_url=self.broker.url if self.broker else ""))

    def path(self, *parts: str) -> str:
        """A path under the install prefix, spelled for the target platform."""
        sep = "\\" if self.platform == "windows" else "/"
        return sep.join((self.prefix.rstrip(sep), *parts))


def _check_text(what: str, value: str, *, max_len: int = 512) -> str:
    if not value:
        raise DtfError(f"{what} is empty")
    if len(value) > max_len:
        raise DtfError(f"{what} is longer than {max_len} characters")
    for char in value:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            raise DtfError(f"{what} {value!r} contains a control or unprintable character")
    return value


def _check_list(what: str, items: Sequence[str], pattern: re.Pattern[str] = _LIST_ITEM) -> tuple[str, ...]:
    if isinstance(items, str):
        raise DtfError(f"{what} must be a list, not the string {items!r}")
    for item in items:
        if not pattern.match(item):
            raise DtfError(f"{what} item {item!r} is not allowed (letters, digits and _.:+<>=@/- only, no commas or spaces)")
    return tuple(items)


def _check_prefix(platform: str, prefix: str | None) -> str:
    prefix = _check_text("prefix", prefix or DEFAULT_PREFIX[platform])
    if platform == "windows":
        converted = to_windows(prefix)
        if not re.match(r"^[A-Z]:\\", converted):
            raise DtfError(f"prefix {prefix!r} must be an absolute Windows path with a drive, e.g. C:\\dtf")
        return converted.rstrip("\\")
    converted = to_posix(prefix)
    if not _POSIX_PREFIX.match(converted) or converted == "/":
        raise DtfError(f"prefix {prefix!r} must be an absolute POSIX path of letters, digits and _./+- only")
    return converted.rstrip("/")


def _check_gpu(gpu: str | None) -> str | None:
    if gpu is None:
        return None
    vendor = GPU_VENDORS.get(gpu.lower())
    if vendor is None:
        raise DtfError(f"unknown gpu {gpu!r} (expected one of {', '.join(GPU_VENDORS)})")
    return vendor


def deploy_options(
    platform: str,
    *,
    broker: str | None,
    name: str | None,
    tags: Sequence[str],
    queues: Sequence[str] = (),
    python: str = "python3",
    install_source: str = "dtf",
    gpu: str | None = None,
    sentinels: Sequence[str] = (),
    sentinel_master: str | None = None,
    concurrency: int | None = None,
    profile: str | None = None,
    prefix: str | None = None,
    image: str | None = None,
    password_file: str | None = None,
    signing_key_file: str | None = None,
    stop_timeout_s: int = STOP_TIMEOUT_S,
) -> DeployOptions:
    """Validate rendering inputs; raises DtfError naming the first bad one."""
    if platform not in PLATFORM_FILES:
        raise DtfError(f"unknown platform {platform!r} (expected one of {', '.join(PLATFORMS)})")
    if concurrency is not None and not 1 <= concurrency <= 1024:
        raise DtfError(f"concurrency {concurrency} is outside 1..1024")
    if profile is not None and profile not in _PROFILES:
        raise DtfError(f"unknown profile {profile!r} (expected one of {', '.join(_PROFILES)})")
    if not 10 <= stop_timeout_s <= 86400:
        raise DtfError(f"stop timeout {stop_timeout_s}s is outside 10..86400")
    vendor = _check_gpu(gpu)
    image = image or f"dtf-worker:{'cpu' if vendor is None else vendor}"
    if not _IMAGE.match(image):
        raise DtfError(f"image {image!r} is not a valid image reference")
    return DeployOptions(
        platform=platform,
        prefix=_check_prefix(platform, prefix),
        broker=split_broker_url(_check_text("broker URL", broker, max_len=4096)) if broker else None,
        name=_check_text("worker name", name, max_len=200) if name is not None else None,
        tags=_check_list("tag", tags),
        queues=_check_list("queue", queues),
        sentinels=_check_list("sentinel", sentinels, _HOST_PORT),
        sentinel_master=_check_text("sentinel master", sentinel_master, max_len=200) if sentinel_master else None,
        concurrency=concurrency,
        profile=profile,
        python=_check_text("python", python),
        install_source=_check_text("install source", install_source, max_len=2048),
        gpu=vendor,
        image=image,
        password_file=_check_password_file(platform, password_file),
        signing_key_file=_check_password_file(platform, signing_key_file, "signing key file"),
        stop_timeout_s=stop_timeout_s,
    )


def _check_password_file(platform: str, path: str | None, what: str = "password file") -> str | None:
    """A secret file (password, signing key) as the target reads it (for docker: the compose secret's source)."""
    if path is None:
        return None
    _check_text(what, path)
    return to_windows(path) if platform == "windows" else path


# --- quoting ---------------------------------------------------------------------------


class Quoted(str):
    """Text already quoted for one file language (`kind`); only these may be interpolated."""

    kind: str

    def __new__(cls, text: str, kind: str) -> "Quoted":
        made = super().__new__(cls, text)
        made.kind = kind
        return made


def quote_sh(value: object) -> Quoted:
    """POSIX shell single-quoting (also valid in systemd EnvironmentFile)."""
    return Quoted(shlex.quote(str(value)), "sh")


def quote_ps(value: object) -> Quoted:
    """A PowerShell single-quoted literal; PowerShell also ends such strings at curly quotes."""
    text = str(value)
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        text = text.replace(quote, quote * 2)
    return Quoted(f"'{text}'", "ps")


def quote_xml(value: object) -> Quoted:
    """Text escaped for XML element content and attribute values."""
    return Quoted(_xml_escape(str(value), {'"': "&quot;", "'": "&apos;"}), "xml")


def quote_yaml(value: object) -> Quoted:
    """A YAML double-quoted scalar (JSON string syntax, which YAML reads the same)."""
    return Quoted(json.dumps(str(value), ensure_ascii=False), "yaml")


def quote_yaml_env(value: object) -> Quoted:
    """A YAML scalar for compose or Kubernetes env values, where `$` must be doubled."""
    return Quoted(json.dumps(str(value).replace("$", "$$"), ensure_ascii=False), "yaml")


def quote_systemd_arg(value: object) -> Quoted:
    """One argument of a systemd Exec line: double quotes, `%` and `$` doubled."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return Quoted(f'"{text}"', "systemd")


def quote_systemd_value(value: object) -> Quoted:
    """A plain systemd setting value (Description=, paths): `%` doubled."""
    return Quoted(str(value).replace("%", "%%"), "systemd")


def trusted(value: object) -> Quoted:
    """A value dtf chose itself (constant, validated image name): safe in any file."""
    return Quoted(str(value), "trusted")


_FILTERS: Mapping[str, Callable[[object], Quoted]] = {
    "sh": quote_sh,
    "ps": quote_ps,
    "xml": quote_xml,
    "yaml": quote_yaml,
    "yaml_env": quote_yaml_env,
    "systemd_arg": quote_systemd_arg,
    "systemd": quote_systemd_value,
    "trusted": trusted,
}
_KINDS_BY_SUFFIX: Mapping[str, frozenset[str]] = {
    ".sh": frozenset({"sh"}),
    ".env": frozenset({"sh"}),
    ".ps1": frozenset({"ps"}),
    ".bat": frozenset(),
    ".plist": frozenset({"xml"}),
    ".service": frozenset({"systemd"}),
    ".yml": frozenset({"yaml"}),
    ".yaml": frozenset({"yaml"}),
    "Dockerfile": frozenset({"sh"}),
}


def _kinds_for(output_name: str) -> frozenset[str]:
    suffix = output_name if output_name == "Dockerfile" else Path(output_name).suffix
    return _KINDS_BY_SUFFIX[suffix] | {"trusted"}


def _finalizer(output_name: str, allowed: frozenset[str]) -> Callable[[object], object]:
    def finalize(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, Quoted)):
            raise DtfError(f"{output_name}: unquoted value {value!r} in template (pipe it through a quoting filter)")
        if isinstance(value, Quoted) and value.kind not in allowed:
            raise DtfError(f"{output_name}: value quoted for {value.kind!r}, but this file takes {sorted(allowed)}")
        return value

    return finalize


# --- rendering -------------------------------------------------------------------------


def templates_root() -> Path:
    """The folder of deployment templates (``workers/templates`` in the source tree)."""
    return Path(__file__).resolve().parent.parent / "workers" / "templates"


def profiles_root() -> Path:
    """The folder of example host profiles (``workers/profiles`` in the source tree)."""
    return Path(__file__).resolve().parent.parent / "workers" / "profiles"


def _environment(root: Path, output_name: str) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalizer(output_name, _kinds_for(output_name)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(_FILTERS)
    return env


def _context(options: DeployOptions) -> dict[str, Any]:
    vendor = options.gpu
    k8s_kind = "DaemonSet" if vendor else "Deployment"
    return {
        "o": options,
        "env": options.environment(),
        "prefix": options.prefix,
        "path": options.path,
        "password_needed": options.password_needed,
        "password_file_default": options.password_file or options.path("secrets", "redis-password"),
        "signing_needed": options.signing_needed,
        "signing_key_file": options.signing_key_file or options.path("secrets", "signing-key"),
        "public_names": [var.name for var in ENV_VARS if not var.secret],
        "gpu_resource": _GPU_RESOURCE.get(vendor or ""),
        "gpu_node_label": _GPU_NODE_LABEL.get(vendor or ""),
        "base_image": _BASE_IMAGE[vendor],
        "torch_index": _TORCH_INDEX[vendor],
        "k8s_kind": k8s_kind,
        "k8s_name": _k8s_name(options.name),
        "k8s_worker_name": _k8s_worker_name(options.name, k8s_kind),
    }


def _k8s_worker_name(name: str | None, kind: str) -> Quoted | None:
    """Worker names must be unique: one pod per node (DaemonSet) or per pod (Deployment)."""
    if name is None:
        return None
    suffix = "-$(NODE_NAME)" if kind == "DaemonSet" else "-$(POD_NAME)"
    return Quoted(json.dumps(name.replace("$", "$$") + suffix, ensure_ascii=False), "yaml")


def _k8s_name(name: str | None) -> str:
    """A DNS-1123 object name derived from the worker name."""
    if not name:
        return "dtf-worker"
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return f"dtf-worker-{slug}"[:63].rstrip("-") if slug else "dtf-worker"


def render_texts(options: DeployOptions, *, root: Path | None = None) -> dict[str, str]:
    """The text of every file of `options.platform`, by output name, written nowhere."""
    root = root or templates_root()
    if not root.is_dir():
        raise DtfError(f"deployment templates not found at {root} (run from a dtf source checkout)")
    context = _context(options)
    texts: dict[str, str] = {}
    for output_name, template_name in PLATFORM_FILES[options.platform]:
        try:
            texts[output_name] = _environment(root, output_name).get_template(template_name).render(context)
        except jinja2.TemplateError as exc:
            raise DtfError(f"{template_name}: {exc}") from exc
    return texts


def render_options(options: DeployOptions, out_dir: Path, *, root: Path | None = None) -> list[Path]:
    """Render every file of `options.platform` into `out_dir` (all or nothing: nothing is
    written when one template fails); scripts are made executable."""
    texts = render_texts(options, root=root)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for output_name, text in texts.items():
        target = out_dir / output_name
        target.write_text(text, encoding="utf-8", newline="\r\n" if output_name.endswith(".bat") else "\n")
        if output_name.endswith(".sh"):
            target.chmod(0o755)
        written.append(target)
    return written


def render_deploy(
    platform: str,
    out_dir: Path,
    *,
    broker: str | None,
    name: str | None,
    tags: Sequence[str],
    queues: Sequence[str] = (),
    python: str = "python3",
    install_source: str = "dtf",
    gpu: str | None = None,
    sentinels: Sequence[str] = (),
    sentinel_master: str | None = None,
    concurrency: int | None = None,
    profile: str | None = None,
    prefix: str | None = None,
    image: str | None = None,
    password_file: str | None = None,
    signing_key_file: str | None = None,
    stop_timeout_s: int = STOP_TIMEOUT_S,
) -> list[Path]:
    """Render what installs and starts a worker on `platform` into `out_dir`; returns the
    files written. Raises DtfError for an unknown platform or a bad option.

    A password in `broker` is never written: it is dropped and the files point at
    DTF_REDIS_PASSWORD_FILE (or a Kubernetes Secret) instead. `signing_key_file` is the
    fleet's signing key as the target reads it (default: <prefix>/secrets/signing-key on a
    host, ./signing-key.txt as a compose secret). `prefix` is the install
    folder on the target host (default /opt/dtf, or C:\\dtf on Windows).
    """
    options = deploy_options(
        platform,
        broker=broker,
        name=name,
        tags=tags,
        queues=queues,
        python=python,
        install_source=install_source,
        gpu=gpu,
        sentinels=sentinels,
        sentinel_master=sentinel_master,
        concurrency=concurrency,
        profile=profile,
        prefix=prefix,
        image=image,
        password_file=password_file,
        signing_key_file=signing_key_file,
        stop_timeout_s=stop_timeout_s,
    )
    return render_options(options, Path(out_dir))


# --- host profiles ---------------------------------------------------------------------


@dataclass(frozen=True)
class HostProfile:
    """One host as described in a ``workers/profiles/*.yaml`` file."""

    name: str
    platform: str
    tags: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    concurrency: int | None = None
    gpu: str | None = None
    profile: str | None = None
    description: str = ""


_PROFILE_KEYS = frozenset({"name", "platform", "tags", "queues", "concurrency", "gpu", "profile", "description"})


def load_host_profile(path: Path) -> HostProfile:
    """Read and check one host profile file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DtfError(f"{path}: cannot read host profile: {exc}") from exc
    if not isinstance(data, dict):
        raise DtfError(f"{path}: a host profile is a mapping")
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise DtfError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    if "name" not in data or "platform" not in data:
        raise DtfError(f"{path}: a host profile needs name and platform")
    return HostProfile(
        name=str(data["name"]),
        platform=str(data["platform"]),
        tags=tuple(str(t) for t in data.get("tags") or ()),
        queues=tuple(str(q) for q in data.get("queues") or ()),
        concurrency=data.get("concurrency"),
        gpu=data.get("gpu"),
        profile=data.get("profile"),
        description=str(data.get("description") or ""),
    )


def render_profile(
    host: HostProfile,
    out_dir: Path,
    *,
    broker: str | None,
    platform: str | None = None,
    sentinels: Sequence[str] = (),
    prefix: str | None = None,
    install_source: str = "dtf",
    signing_key_file: str | None = None,
) -> list[Path]:
    """Render the files for one host profile (its platform unless `platform` is given)."""
    return render_deploy(
        platform or host.platform,
        out_dir,
        broker=broker,
        name=host.name,
        tags=host.tags,
        queues=host.queues,
        gpu=host.gpu,
        concurrency=host.concurrency,
        profile=host.profile,
        sentinels=sentinels,
        prefix=prefix,
        install_source=install_source,
        signing_key_file=signing_key_file,
    )


# --- env files -------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a rendered ``worker.env`` (shell syntax: KEY='value' lines, # comments)."""
    values: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        words = shlex.split(raw) if sep else []
        if not sep or not re.match(r"^[A-Z_][A-Z0-9_]*$", key) or len(words) > 1:
            raise DtfError(f"{path}:{number}: not a KEY=value line")
        values[key] = words[0] if words else ""
    return values
