"""Suite files: loading and validation, matrix expansion into `TestSpec`s, model family
detection, priority and memory estimates, and dependency chains between tests.

Pure core: it reads the one suite file it is given and imports neither Celery, Redis nor
DuckDB. Every problem with a suite is a `SuiteError(path, field, message)` whose field is a
path into the document (``models[2].batch_sizes[1]``).

    suite = load_suite("examples/smoke.yaml")
    specs = expand_suite(suite)  # models x hardware x batch sizes x precisions
    for spec in topological_order(specs):
        ...
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import hashlib
import heapq
import json
import math
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml

from .errors import DtfError, SuiteError
from .model import HARDWARE_KINDS, PRECISIONS, TestSpec
from .models.source import MODEL_SOURCE_KEY, MODEL_SOURCES, TASKS, WEIGHTS, ModelSource, template_for

__all__ = [
    "FAMILIES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_TESTS",
    "MAX_BATCH_SIZE",
    "SUITE_KEYS",
    "MODEL_KEYS",
    "KNOWN_MODELS",
    "RunSettings",
    "ModelEntry",
    "DependencyEdge",
    "TestTaskEntry",
    "TEST_KEYS",
    "TEST_SPLITS",
    "PYTEST_FAMILY",
    "PYTEST_TEMPLATE",
    "Suite",
    "TemplateResolver",
    "load_suite",
    "parse_suite",
    "expand_suite",
    "detect_family",
    "default_template",
    "model_slug",
    "format_test_id",
    "priority",
    "estimate_memory_gb",
    "validate_dependencies",
    "topological_order",
    "suite_summary",
    "render_suite",
]

FAMILIES: tuple[str, ...] = ("text_embedding", "text_generation", "vision", "audio", "multimodal", "unknown")
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_TESTS = 100_000
MAX_BATCH_SIZE = 4096
MAX_RETRIES = 10
MAX_TIMEOUT_S = 86_400.0  # the broker's visibility timeout must exceed the longest test timeout
MAX_ITERATIONS = 1_000_000
MAX_DEPENDENCY_EDGES = 1_000_000  # a wildcard selector pair could otherwise ask for max_tests**2
MAX_SELECTOR_SCANS = 20_000_000  # distinct selectors x tests: 200 selectors over 100k tests, about 10 s
MAX_PARAMS_TEXT = 64 << 20  # characters of params text across all tests (each test carries its model's)
GENERIC_TEMPLATE_FAMILY = "generic"  # template folder for models of family "unknown"

RUN_SETTING_KEYS = ("timeout_s", "retries", "iterations", "warmup")
SUITE_KEYS = (
    "name", "description", "defaults", "models", "hardware", "batch_sizes", "precisions",
    *RUN_SETTING_KEYS, "depends_on", "chain_batch_sizes", "source", "parity", "tests",
)
SOURCE_KEYS = ("source", "weights", "path", "revision", "task", "parity")
MODEL_KEYS = (
    "name", "family", "template", "params", "hardware", "batch_sizes", "precisions", *RUN_SETTING_KEYS, *SOURCE_KEYS,
)
EDGE_KEYS = ("test", "after")
# `tests:` entries: pytest files run as dtf tasks (collected and shipped by dtf.testtasks)
TEST_KEYS = ("path", "args", "hardware", "split", "root", "timeout_s", "retries", "memory_gb")
TEST_SPLITS = ("file", "case")
PYTEST_FAMILY = "pytest"
PYTEST_TEMPLATE = "pytest/run"
_MAX_TEST_ARGS = 100

_SUITE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_FAMILY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9._-]")
_BATCH_PART = re.compile(r"bs[1-9][0-9]*")
_GLOB_CHARS = frozenset("*?[")
_MAX_MODEL_NAME = 200
_PARAMS_MAX_DEPTH = 32
_PARAMS_MAX_NODES = 10_000  # YAML aliases can make a tiny file a huge tree to walk
_PARAMS_MAX_CHARS = 256 * 1024  # and a huge text: 10,000 aliases of a 100 KB string are 1 GB

# (family, hardware, explicit template or None) -> template name
TemplateResolver = Callable[[str, str, str | None], str]
R = TypeVar("R")  # what render_suite's render returns (a RenderedTest in dtf)


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How each test of a model runs: time limit, retries, timed and warm-up iterations."""

    timeout_s: float = 300.0
    retries: int = 0
    iterations: int = 10
    warmup: int = 2


@dataclass(frozen=True)
class ModelEntry:
    """One entry of a suite's `models` list; None means "use the suite's value"."""

    name: str
    family: str | None = None
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    hardware: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    precisions: tuple[str, ...] | None = None
    overrides: Mapping[str, float | int] = field(default_factory=dict)  # subset of RUN_SETTING_KEYS
    source: ModelSource = ModelSource(source="synthetic")  # where the model comes from (resolved)
    source_keys: Mapping[str, Any] = field(default_factory=dict)  # the source keys as written

    @property
    def resolved_family(self) -> str:
        """The family the suite names, else the one detected from the model name."""
        return self.family or detect_family(self.name)

    def run_settings(self, defaults: RunSettings) -> RunSettings:
        """The suite's defaults with this model's overrides applied."""
        return _with_settings(defaults, self.overrides)


@dataclass(frozen=True)
class DependencyEdge:
    """Every test matching selector `test` waits for every test matching selector `after`."""

    test: str
    after: str


@dataclass(frozen=True)
class TestTaskEntry:
    """One entry of a suite's `tests` list: a pytest file or folder run as dtf tasks, one
    per file or per collected case (`split`), on each hardware kind. `path` and `root` are
    as written (relative to the suite file's folder); None means "use the suite's value"."""

    __test__ = False  # not a pytest class

    path: str
    args: tuple[str, ...] = ()
    hardware: tuple[str, ...] | None = None
    split: str = "file"
    root: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    memory_gb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "split": self.split}
        if self.args:
            out["args"] = list(self.args)
        if self.hardware is not None:
            out["hardware"] = list(self.hardware)
        for key in ("root", "timeout_s", "retries", "memory_gb"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Suite:
    """A validated suite file. `source_hash` is the sha256 of the file's bytes."""

    name: str
    models: tuple[ModelEntry, ...]
    hardware: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...] = ("fp32",)
    defaults: RunSettings = RunSettings()
    depends_on: tuple[DependencyEdge, ...] = ()
    chain_batch_sizes: bool = True
    description: str = ""
    source_hash: str = ""
    path: str = "<suite>"
    default_source: str = "hf"
    parity: bool = True
    tests: tuple[TestTaskEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The suite as a JSON-safe document that `parse_suite` accepts again."""
        return {
            "name": self.name,
            "description": self.description,
            "defaults": asdict(self.defaults),
            "models": [_model_to_dict(m) for m in self.models],
            "hardware": list(self.hardware),
            "batch_sizes": list(self.batch_sizes),
            "precisions": list(self.precisions),
            "depends_on": [{"test": e.test, "after": e.after} for e in self.depends_on],
            "chain_batch_sizes": self.chain_batch_sizes,
            "source": self.default_source,
            "parity": self.parity,
            **({"tests": [t.to_dict() for t in self.tests]} if self.tests else {}),
        } if self.models or not self.tests else self._tests_only_dict()

    def _tests_only_dict(self) -> dict[str, Any]:
        """A suite of only `tests:` has no models, batch sizes (or maybe hardware) to write."""
        out = Suite.to_dict(replace(self, tests=()))
        for key in ("models", "batch_sizes", "hardware"):
            if not out[key]:
                del out[key]
        return {**out, "tests": [t.to_dict() for t in self.tests]}


def _with_settings(base: RunSettings, values: Mapping[str, float | int]) -> RunSettings:
    return RunSettings(
        timeout_s=float(values.get("timeout_s", base.timeout_s)),
        retries=int(values.get("retries", base.retries)),
        iterations=int(values.get("iterations", base.iterations)),
        warmup=int(values.get("warmup", base.warmup)),
    )


def _model_to_dict(entry: ModelEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry.name}
    for key in ("family", "template", "hardware", "batch_sizes", "precisions"):
        value = getattr(entry, key)
        if value is not None:
            out[key] = list(value) if isinstance(value, tuple) else value
    if entry.params:
        out["params"] = copy.deepcopy(dict(entry.params))
    out.update(entry.overrides)
    out.update(entry.source_keys)
    return out


# -- loading ------------------------------------------------------------------------------


def load_suite(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Suite:
    """Read, parse and validate one suite file (YAML, loaded with ``yaml.safe_load``)."""
    shown = str(path)
    raw = _read_capped(Path(path), shown, max_bytes)
    data = _load_yaml(raw, shown)
    return parse_suite(data, shown, source_hash=hashlib.sha256(raw).hexdigest())


def _read_capped(path: Path, shown: str, max_bytes: int) -> bytes:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise SuiteError(shown, None, "is a directory, expected a suite file")
        if not stat.S_ISREG(info.st_mode):
            raise SuiteError(shown, None, "is not a regular file")
        if info.st_size > max_bytes:
            raise _too_big(shown, info.st_size, max_bytes)
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)  # the size may have grown since stat
    except FileNotFoundError:
        raise SuiteError(shown, None, "no such file") from None
    except OSError as exc:
        raise SuiteError(shown, None, f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise _too_big(shown, len(raw), max_bytes)
    if not raw.strip():
        raise SuiteError(shown, None, "file is empty")
    return raw


def _too_big(shown: str, size: int, cap: int) -> SuiteError:
    return SuiteError(shown, None, f"file is {_human_size(size)}, over the {_human_size(cap)} cap")


def _human_size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


def _load_yaml(raw: bytes, shown: str) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SuiteError(shown, None, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SuiteError(shown, None, f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # its own message spans two lines
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SuiteError(shown, None, f"invalid YAML: character {char} at offset {exc.position}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(shown, None, f"invalid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise SuiteError(shown, None, "invalid YAML: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise anything on bad tagged scalars
        raise SuiteError(shown, None, f"invalid YAML: {type(exc).__name__}: {_one_line(str(exc))}") from None
    if data is None:
        raise SuiteError(shown, None, "file holds no YAML document (only comments or blank lines)")
    return data


# -- validation ---------------------------------------------------------------------------


def parse_suite(data: object, path: str, *, source_hash: str | None = None) -> Suite:
    """Validate a loaded suite document. Without `source_hash`, hash the normalised suite."""
    check = _Checker(path)
    if not isinstance(data, dict):
        raise check.error(None, f"expected a mapping at the top level, got {_show(data)}")
    check.known_keys(data, SUITE_KEYS, None)
    default_source = check.one_of(_default(data.get("source"), "hf"), "source", MODEL_SOURCES, "source")
    parity = check.flag(_default(data.get("parity"), True), "parity")
    base = _suite_dir(path)
    tests = _read_tests(check, data.get("tests"))
    has_models = "models" in data or not tests  # a suite of only `tests:` needs no models
    suite = Suite(
        name=check.suite_name(data),
        description=check.optional_text(data.get("description"), "description"),
        defaults=_read_defaults(check, data),
        models=_read_models(check, data, ModelSource(source=default_source, parity=parity), base) if has_models else (),
        hardware=check.choices(
            data, "hardware", HARDWARE_KINDS, "hardware",
            required=has_models or any(t.hardware is None for t in tests)) or (),
        batch_sizes=check.batch_sizes(data, "batch_sizes", required=has_models) or (),
        precisions=check.choices(data, "precisions", PRECISIONS, "precision", required=False) or ("fp32",),
        depends_on=_read_edges(check, data.get("depends_on")),
        chain_batch_sizes=check.flag(_default(data.get("chain_batch_sizes"), True), "chain_batch_sizes"),
        path=path,
        default_source=default_source,
        parity=parity,
        tests=tests,
    )
    if source_hash is None:
        canonical = json.dumps(suite.to_dict(), sort_keys=True, separators=(",", ":"))
        source_hash = hashlib.sha256(canonical.encode()).hexdigest()
    return replace(suite, source_hash=source_hash)


def _default(value: object, default: object) -> object:
    """Null in YAML means "not set", as for every optional key."""
    return default if value is None else value


class _Checker:
    """Validators for one document; each returns the clean value or raises SuiteError."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, where: str | None, message: str) -> SuiteError:
        return SuiteError(self.path, where or None, message)

    def known_keys(self, mapping: Mapping[object, object], allowed: Sequence[str], where: str | None) -> None:
        """Typo protection: name the first unknown key and suggest the closest known one."""
        for key in mapping:
            if isinstance(key, str) and key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
            raise self.error(where, f"unknown key {_show(key)} ({hint})")

    def mapping(self, value: object, where: str, what: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected {what}, got {_show(value)}")
        return value

    def nonempty_list(self, value: object, where: str, what: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.error(where, f"expected a non-empty list of {what}, got {_show(value)}")
        return value

    def suite_name(self, data: Mapping[str, object]) -> str:
        if "name" not in data:
            raise self.error("name", "required field missing")
        value = data["name"]
        if not isinstance(value, str) or not _SUITE_NAME.fullmatch(value):
            raise self.error("name", f"expected 1-100 characters from A-Z a-z 0-9 _ . -, got {_show(value)}")
        return value

    def optional_text(self, value: object, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(where, f"expected text, got {_show(value)}")
        return value

    def optional_pattern(self, value: object, where: str, pattern: re.Pattern[str], what: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.error(where, f"expected {what}, got {_show(value)}")
        return value

    def one_of(self, value: object, where: str, allowed: Sequence[str], what: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.error(where, f"unknown {what} {_show(value)} (expected one of {', '.join(allowed)})")
        return value

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"expected true or false, got {_show(value)}")
        return value

    def choices(
        self,
        data: Mapping[str, object],
        key: str,
        allowed: Sequence[str],
        what: str,
        *,
        required: bool,
        prefix: str = "",
    ) -> tuple[str, ...] | None:
        where = f"{prefix}{key}"
        if self.absent(data, key, where, required):
            return None
        items = self.nonempty_list(data[key], where, f"{what} kinds")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{where}[{i}]", f"expected a {what} name, got {_show(item)}")
            if item not in allowed:
                raise self.error(f"{where}[{i}]", f"unknown {what} {item!r} (expected one of {', '.join(allowed)})")
        return self.unique(items, where)

    def batch_sizes(
        self, data: Mapping[str, object], key: str, *, required: bool, prefix: str = ""
    ) -> tuple[int, ...] | None:
        where = f"{prefix}{key}"
        if self.absent(data, key, where, required):
            return None
        items = self.nonempty_list(data[key], where, "batch sizes")
        for i, item in enumerate(items):
            self.integer(item, f"{where}[{i}]", 1, MAX_BATCH_SIZE, "a positive integer")
        return self.unique(items, where)

    def absent(self, data: Mapping[str, object], key: str, where: str, required: bool) -> bool:
        """True when an optional key is missing or null; raises when a required one is."""
        if data.get(key) is not None:
            return False
        if required:
            message = "required field missing" if key not in data else "expected a non-empty list, got null"
            raise self.error(where, message)
        return True

    def unique(self, items: list[Any], where: str) -> tuple[Any, ...]:
        seen: set[object] = set()
        for i, item in enumerate(items):
            if item in seen:
                raise self.error(f"{where}[{i}]", f"duplicate value {_show(item)}")
            seen.add(item)
        return tuple(items)

    def integer(self, value: object, where: str, lo: int, hi: int, expected: str, *, ranged: bool = False) -> int:
        """An int (never a bool) in lo..hi; `ranged` when `expected` already names hi."""
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.error(where, f"expected {expected}, got {_show(value)}")
        if value > hi:
            limit = "" if ranged else f" of at most {hi}"
            raise self.error(where, f"expected {expected}{limit}, got {_show(value)}")
        return value

    def positive_number(self, value: object, where: str, hi: float, unit: str = "") -> float:
        number = _positive(value)
        if number is None:
            raise self.error(where, f"expected a positive number{unit}, got {_show(value)}")
        if number > hi:
            raise self.error(where, f"expected a positive number{unit} of at most {hi:g}, got {_show(value)}")
        return number

    def run_settings(self, data: Mapping[str, object], prefix: str) -> dict[str, float | int]:
        """The run settings present (and not null) in `data`, validated."""
        out: dict[str, float | int] = {}
        for key in RUN_SETTING_KEYS:
            value, where = data.get(key), f"{prefix}{key}"
            if value is None:
                continue
            if key == "timeout_s":
                out[key] = self.positive_number(value, where, MAX_TIMEOUT_S, " of seconds")
            elif key == "retries":
                expected = f"an integer from 0 to {MAX_RETRIES}"
                out[key] = self.integer(value, where, 0, MAX_RETRIES, expected, ranged=True)
            elif key == "iterations":
                out[key] = self.integer(value, where, 1, MAX_ITERATIONS, "a positive integer")
            else:
                out[key] = self.integer(value, where, 0, MAX_ITERATIONS, "a non-negative integer")
        return out


def _read_defaults(check: _Checker, data: Mapping[str, object]) -> RunSettings:
    """Built-in defaults, then the `defaults:` mapping and top-level keys (which must agree)."""
    nested: dict[str, float | int] = {}
    if data.get("defaults") is not None:
        block = check.mapping(data["defaults"], "defaults", "a mapping of run settings")
        check.known_keys(block, RUN_SETTING_KEYS, "defaults")
        nested = check.run_settings(block, "defaults.")
    top = check.run_settings(data, "")
    for key in sorted(nested.keys() & top.keys()):
        if nested[key] != top[key]:
            raise check.error(key, f"set both here ({top[key]:g}) and in defaults ({nested[key]:g}); set it once")
    return _with_settings(RunSettings(), {**nested, **top})


def _suite_dir(path: str) -> Path:
    """Where a model's relative `path:` starts: the suite file's folder, else the cwd."""
    candidate = Path(path)
    return candidate.parent.resolve() if candidate.suffix in (".yaml", ".yml", ".json") else Path.cwd()


def _read_source(check: _Checker, spec: Mapping[str, Any], where: str, default: ModelSource, base: Path,
                 has_template: bool) -> tuple[ModelSource, dict[str, Any]]:
    """The model's source, resolved: its own keys over the suite's default. An entry that
    names its own template (or a family that is not a model family) and no source runs
    that template, labelled synthetic."""
    written = {k: spec[k] for k in SOURCE_KEYS if spec.get(k) is not None}
    fallback = "synthetic" if has_template else default.source
    source = check.one_of(written.get("source", fallback), f"{where}source", MODEL_SOURCES, "source")
    weights = check.one_of(written.get("weights", "pretrained"), f"{where}weights", WEIGHTS, "weights")
    task = check.one_of(written.get("task", "auto"), f"{where}task", TASKS, "task")
    parity = check.flag(written.get("parity", default.parity), f"{where}parity")
    revision = check.optional_text(written.get("revision"), f"{where}revision") or None
    path: str | None = None
    if "path" in written:
        raw = check.optional_text(written["path"], f"{where}path")
        if not raw or _CONTROL_CHARS.search(raw):
            raise check.error(f"{where}path", f"expected a file or folder path, got {_show(written['path'])}")
        path = str((base / Path(raw).expanduser()).resolve())
    if source == "synthetic":
        extra = sorted(set(written) - {"source", "parity"})
        if extra:
            raise check.error(f"{where}{extra[0]}", "applies to the hf, timm and onnx sources, not synthetic")
    if source == "onnx":
        if path is None:
            raise check.error(f"{where}path", "an onnx model needs path: to its .onnx file")
        if "weights" in written:
            raise check.error(f"{where}weights", "an onnx file carries its own weights")
    return ModelSource(source, weights, path, revision, task, parity), written


def _read_models(check: _Checker, data: Mapping[str, object], default: ModelSource, base: Path) -> tuple[ModelEntry, ...]:
    if "models" not in data:
        raise check.error("models", "required field missing")
    items = check.nonempty_list(data["models"], "models", "models")
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        entry = _read_model(check, item, f"models[{i}]", default, base)
        if entry.name in seen:
            raise check.error(f"models[{i}].name", f"duplicate model {entry.name!r} (also models[{seen[entry.name]}])")
        seen[entry.name] = i
        entries.append(entry)
    return tuple(entries)


def _read_tests(check: _Checker, value: object) -> tuple[TestTaskEntry, ...]:
    """The `tests:` list: pure validation; files are read and collected by dtf.testtasks."""
    if value is None:
        return ()
    items = check.nonempty_list(value, "tests", "test entries ({path: ...})")
    entries = tuple(_read_test(check, item, f"tests[{i}]") for i, item in enumerate(items))
    return entries


def _read_test(check: _Checker, item: object, where: str) -> TestTaskEntry:
    if isinstance(item, str):
        item = {"path": item}
    spec = check.mapping(item, where, "a test file path or a mapping with a path")
    check.known_keys(spec, TEST_KEYS, where)
    prefix = f"{where}."
    paths = {}
    for key in ("path", "root"):
        raw = spec.get(key)
        if raw is None and key == "root":
            continue
        if not isinstance(raw, str) or not raw.strip() or _CONTROL_CHARS.search(raw) or "::" in raw:
            what = "required field missing" if raw is None else f"expected a file or folder path, got {_show(raw)}"
            raise check.error(f"{prefix}{key}", what)
        paths[key] = raw.strip()
    args: list[str] = []
    if spec.get("args") is not None:
        raw_args = spec["args"]
        if not isinstance(raw_args, list) or len(raw_args) > _MAX_TEST_ARGS:
            raise check.error(f"{prefix}args", f"expected a list of at most {_MAX_TEST_ARGS} strings, got {_show(raw_args)}")
        for i, arg in enumerate(raw_args):
            if isinstance(arg, bool) or not isinstance(arg, (str, int, float)) or _CONTROL_CHARS.search(str(arg)):
                raise check.error(f"{prefix}args[{i}]", f"expected a command-line argument, got {_show(arg)}")
            args.append(str(arg))
    split = check.one_of(_default(spec.get("split"), "file"), f"{prefix}split", TEST_SPLITS, "split")
    settings = check.run_settings({k: spec.get(k) for k in ("timeout_s", "retries")}, prefix)
    memory = spec.get("memory_gb")
    return TestTaskEntry(
        path=paths["path"],
        args=tuple(args),
        hardware=check.choices(spec, "hardware", HARDWARE_KINDS, "hardware", required=False, prefix=prefix),
        split=split,
        root=paths.get("root"),
        timeout_s=float(settings["timeout_s"]) if "timeout_s" in settings else None,
        retries=int(settings["retries"]) if "retries" in settings else None,
        memory_gb=None if memory is None else check.positive_number(memory, f"{prefix}memory_gb", 1e6, " of GB"),
    )


def _read_model(check: _Checker, item: object, where: str, default: ModelSource, base: Path) -> ModelEntry:
    if isinstance(item, str):  # a bare name is short for {name: ...}: the real model by default
        return ModelEntry(name=_model_name(check, item, where), source=default)
    spec = check.mapping(item, where, "a model name or a mapping with a name")
    check.known_keys(spec, MODEL_KEYS, where)
    if "name" not in spec:
        raise check.error(f"{where}.name", "required field missing")
    prefix = f"{where}."
    # A template of its own, or a family that is a template folder rather than a model
    # family (gate, my_family), means the user's template decides what runs.
    family = spec.get("family")
    own_template = spec.get("template") is not None or (isinstance(family, str) and family not in FAMILIES)
    source, written = _read_source(check, spec, prefix, default, base, own_template)
    return ModelEntry(
        source=source,
        source_keys=written,
        name=_model_name(check, spec["name"], f"{prefix}name"),
        family=check.optional_pattern(
            spec.get("family"), f"{prefix}family", _FAMILY_NAME, "a family name such as text_embedding"
        ),
        template=check.optional_pattern(
            spec.get("template"), f"{prefix}template", _TEMPLATE_NAME, "a template name such as vision/cpu"
        ),
        params=_read_params(check, spec.get("params"), f"{prefix}params"),
        hardware=check.choices(spec, "hardware", HARDWARE_KINDS, "hardware", required=False, prefix=prefix),
        batch_sizes=check.batch_sizes(spec, "batch_sizes", required=False, prefix=prefix),
        precisions=check.choices(spec, "precisions", PRECISIONS, "precision", required=False, prefix=prefix),
        overrides=check.run_settings(spec, prefix),
    )


def _model_name(check: _Checker, value: object, where: str) -> str:
    if isinstance(value, str) and _is_model_name(value):
        return value
    expected = f"a model name (1-{_MAX_MODEL_NAME} characters with a letter or digit)"
    raise check.error(where, f"expected {expected}, got {_show(value)}")


def _is_model_name(name: str) -> bool:
    return (
        0 < len(name) <= _MAX_MODEL_NAME
        and name == name.strip()
        and not _CONTROL_CHARS.search(name)
        and any(c.isascii() and c.isalnum() for c in name)
    )


def _read_params(check: _Checker, value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    params = check.mapping(value, where, "a mapping of template parameters")
    budget = [_PARAMS_MAX_NODES, _PARAMS_MAX_CHARS]
    clean: dict[str, Any] = _json_safe(check, params, where, budget, 0)
    for key in ("memory_gb", "param_count_m"):
        if key in clean:
            check.positive_number(clean[key], f"{where}.{key}", 1e9)
    return clean


def _json_safe(check: _Checker, value: object, where: str, budget: list[int], depth: int) -> Any:
    """A copy of `value` made only of what JSON carries; params travel on the wire."""
    budget[0] -= 1
    if budget[0] < 0:
        raise check.error(where, f"more than {_PARAMS_MAX_NODES} values in params")
    if isinstance(value, str):
        budget[1] -= len(value)
    elif isinstance(value, dict):
        budget[1] -= sum(len(k) for k in value if isinstance(k, str))
    if budget[1] < 0:
        limit = f"more than {_PARAMS_MAX_CHARS} characters of text"
        raise check.error(where, f"params hold {limit} (each use of a YAML alias counts)")
    if depth > _PARAMS_MAX_DEPTH:
        raise check.error(where, f"nested deeper than {_PARAMS_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise check.error(where, f"expected a finite number, got {_show(value)}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(check, v, f"{where}[{i}]", budget, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise check.error(where, f"expected text keys, got key {_show(key)}")
        return {k: _json_safe(check, v, f"{where}.{k}", budget, depth + 1) for k, v in value.items()}
    expected = "a JSON value (text, number, true/false, null, list, mapping)"
    raise check.error(where, f"expected {expected}, got {_show(value)}")


def _read_edges(check: _Checker, value: object) -> tuple[DependencyEdge, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise check.error("depends_on", f"expected a list of {{test, after}} mappings, got {_show(value)}")
    edges = []
    for i, item in enumerate(value):
        where = f"depends_on[{i}]"
        entry = check.mapping(item, where, "a mapping with keys test and after")
        check.known_keys(entry, EDGE_KEYS, where)
        selectors = []
        for key in EDGE_KEYS:
            if key not in entry:
                raise check.error(f"{where}.{key}", "required field missing")
            selectors.append(_parse_selector(check, entry[key], f"{where}.{key}").text)
        edges.append(DependencyEdge(*selectors))
    return tuple(edges)


class _Selector(NamedTuple):
    """`model/hardware/bsN/precision`; each part may be a glob such as ``*``."""

    text: str
    model: str
    hardware: str
    batch: str
    precision: str


def _parse_selector(check: _Checker, value: object, where: str) -> _Selector:
    text = value if isinstance(value, str) else ""
    parts = text.rsplit("/", 3)
    if len(parts) != 4 or not all(parts):
        expected = "a selector model/hardware/bsN/precision (parts may be *)"
        raise check.error(where, f"expected {expected}, got {_show(value)}")
    selector = _Selector(text, *parts)
    kinds = ((selector.hardware, HARDWARE_KINDS, "hardware"), (selector.precision, PRECISIONS, "precision"))
    for part, allowed, what in kinds:
        if part not in allowed and not _GLOB_CHARS & set(part):
            expected = f"expected one of {', '.join(allowed)} or a * pattern"
            raise check.error(where, f"unknown {what} {part!r} in selector {text!r} ({expected})")
    if not _BATCH_PART.fullmatch(selector.batch) and not _GLOB_CHARS & set(selector.batch):
        expected = "a batch part like bs4 (or a * pattern)"
        raise check.error(where, f"expected {expected} in selector {text!r}, got {selector.batch!r}")
    return selector


def _one_line(text: str) -> str:
    """A message for one line of stderr: runs of whitespace, newlines included, become one space."""
    return " ".join(text.split())


def _show(value: object) -> str:
    """A value as the message shows it: YAML spellings for scalars, kinds for containers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"  # date, datetime, set: what other YAML tags give


# -- family detection ---------------------------------------------------------------------

# Exact names, checked first (lowercase keys). Heuristics below cover the rest.
KNOWN_MODELS: Mapping[str, str] = {
    "bert-base-uncased": "text_embedding",
    "bert-base-cased": "text_embedding",
    "distilbert-base-uncased": "text_embedding",
    "roberta-base": "text_embedding",
    "sentence-transformers/all-minilm-l6-v2": "text_embedding",
    "gpt2": "text_generation",
    "distilgpt2": "text_generation",
    "t5-small": "text_generation",
    "google/flan-t5-small": "text_generation",
    "facebook/opt-125m": "text_generation",
    "microsoft/resnet-50": "vision",
    "google/vit-base-patch16-224": "vision",
    "google/bit-50": "vision",
    "facebook/sam-vit-base": "vision",
    "openai/whisper-tiny": "audio",
    "facebook/wav2vec2-base-960h": "audio",
    "laion/clap-htsat-unfused": "audio",
    "microsoft/speecht5_tts": "audio",
    "openai/clip-vit-base-patch32": "multimodal",
    "openai/clip-vit-large-patch14": "multimodal",
    "nlpconnect/vit-gpt2-image-captioning": "multimodal",
    "salesforce/blip-image-captioning-base": "multimodal",
}


def _words(*words: str) -> str:
    """Substrings: distinctive enough to match inside longer names (tinyllama, distilbert)."""
    return "|".join(words)


def _tokens(*words: str) -> str:
    """Whole tokens: short names (t5, opt, vit) must not match inside other words."""
    return rf"(?<![a-z0-9])(?:{'|'.join(words)})(?![a-z])"


# Ordered: the first match wins, so the traps come first. Multimodal before vision and
# generation (clip-vit, vit-gpt2, paligemma, qwen2-vl); audio before embedding and
# generation (hubert contains bert, speecht5 contains t5); embedding before generation
# (e5-mistral, gte-qwen2 and sentence-t5 are embedding models).
_FAMILY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern))
    for family, pattern in (
        ("multimodal", _words(
            "clip", "llava", "blip", "flava", "siglip", "idefics", "owlvit", "owlv2", "kosmos", "paligemma",
            "fuyu", "pix2struct", "donut", "layoutlm", "vilt", "lxmert", "visualbert", "trocr", "bridgetower",
            "imagebind", "moondream", "florence", "minicpm-v", "internvl", "smolvlm", "cogvlm", "pixtral",
            "groupvit", "minigpt", "vision-encoder-decoder", "captioning",
        )),
        ("multimodal", _tokens("git", "align", "vl", "vlm")),
        ("multimodal", r"vit.*gpt2|(?:llama|phi|qwen|mistral|gemma|granite)\S*vision"),
        ("audio", _words(
            "whisper", "wav2vec", "w2v", "hubert", "wavlm", "encodec", "clap", "speech", "audio", "musicgen",
            "seamless", "parakeet", "conformer", "mctct", "univnet", "pop2piano", "moonshine",
        )),
        ("audio", _tokens("ast", "sew", "mms", "vits", "tts", "asr", "bark")),
        ("vision", _words(
            "resnet", "resnext", "convnext", "efficientnet", "mobilenet", "mobilevit", "regnet", "densenet", "yolo",
            "detr", "deit", "beit", "swin", "dinov", "segformer", "maskformer", "mask2former", "upernet", "levit",
            "poolformer", "inception", "xception", "ghostnet", "mnasnet", "squeezenet", "shufflenet", "alexnet",
        )),
        ("vision", _tokens("vit", "vgg", "cvt", "pvt", "dpt", "dit", "vision")),
        ("text_embedding", _words(
            "bert", "electra", "minilm", "mpnet", "sentence", "embed", "simcse", "contriever", "instructor",
            "labse", "splade", "longformer", "bigbird", "ernie", "xlnet",
        )),
        ("text_embedding", _tokens("e5", "bge", "gte", "gtr", "dpr")),
        ("text_generation", _words(
            "gpt", "llama", "mistral", "mixtral", "falcon", "bloom", "gemma", "qwen", "pythia", "olmo", "starcoder",
            "santacoder", "codegen", "stablelm", "smollm", "deepseek", "zephyr", "vicuna", "alpaca", "xglm",
            "pegasus", "marian", "opus-mt", "nllb", "m2m100", "flan", "tinystories", "dolly", "mamba", "rwkv",
            "granite", "baichuan", "chatglm", "internlm", "nemotron", "minicpm", "galactica", "distilbart", "llm",
        )),
        ("text_generation", _tokens(
            "t5", "mt5", "umt5", "byt5", "codet5", "long-?t5", "ul2", "opt", "phi", "mpt", "bart", "mbart", "ctrl",
        )),
    )
)

# When the name says nothing, some organisations publish one family only.
_ORG_FAMILIES: Mapping[str, str] = {
    "sentence-transformers": "text_embedding",
    "cross-encoder": "text_embedding",
    "baai": "text_embedding",
    "intfloat": "text_embedding",
    "thenlper": "text_embedding",
    "timm": "vision",
    "ultralytics": "vision",
    "openai-community": "text_generation",
    "meta-llama": "text_generation",
    "mistralai": "text_generation",
    "tiiuae": "text_generation",
    "eleutherai": "text_generation",
    "bigscience": "text_generation",
    "llava-hf": "multimodal",
    "huggingfacem4": "multimodal",
    "speechbrain": "audio",
    "distil-whisper": "audio",
    "suno": "audio",
}


def detect_family(model_name: str) -> str:
    """The model family: the exact-name table, then ordered name rules on the part after
    any ``org/``, then the organisation; "unknown" when nothing matches."""
    key = model_name.strip().lower()
    if key in KNOWN_MODELS:
        return KNOWN_MODELS[key]
    org, _, base = key.rpartition("/")
    for family, pattern in _FAMILY_RULES:
        if pattern.search(base):
            return family
    return _ORG_FAMILIES.get(org.rpartition("/")[2], "unknown")


def default_template(family: str, hardware: str, explicit: str | None) -> str:
    """The explicit template, else ``<family>/cpu`` on cpu and ``<family>/torch`` elsewhere
    (family "unknown" uses the generic template)."""
    if explicit:
        return explicit
    folder = GENERIC_TEMPLATE_FAMILY if family == "unknown" else family
    return f"{folder}/{'cpu' if hardware == 'cpu' else 'torch'}"


# -- priority and memory ------------------------------------------------------------------

_HEAVY_FAMILIES = frozenset({"text_generation", "multimodal", "unknown"})

# family: (parameters in millions, activation GB per sample at fp32) for a typical small
# model of the family: bert-base, gpt2-medium, resnet-50/vit-base, whisper-base, clip-base.
_FAMILY_FOOTPRINT: Mapping[str, tuple[float, float]] = {
    "text_embedding": (110.0, 0.02),
    "text_generation": (350.0, 0.06),
    "vision": (90.0, 0.05),
    "audio": (75.0, 0.04),
    "multimodal": (150.0, 0.05),
    "unknown": (200.0, 0.05),
}
_BYTES_PER_PARAM: Mapping[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
# int8 kernels still keep activations in 16 bits.
_ACTIVATION_SCALE: Mapping[str, float] = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.5}
# Host RSS of Python + torch on cpu; device-side context (CUDA/HIP/Metal/browser) elsewhere.
_RUNTIME_OVERHEAD_GB: Mapping[str, float] = {"cpu": 0.5, "cuda": 0.5, "rocm": 0.5, "mps": 0.3, "webgpu": 0.3}
_ACCELERATOR_SLACK = 1.2  # caching allocators hold about a fifth more than they use


def priority(family: str, batch_size: int, precision: str, hardware: str) -> int:
    """Dispatch priority from 1 to 10 (10 runs first).

    ``10 - ceil(log2(batch_size) / 2) - (precision != fp32) - heavy``, clamped to 1..10,
    where heavy is 1 for text_generation, multimodal and unknown families and 2 for those
    on cpu (slow there). Smaller batches rank higher, so the chain bs1 -> bs2 -> ... starts
    early and a failure at a small batch skips the larger ones before they cost anything;
    fp32 is the reference the others are compared with.
    """
    batch_step = math.ceil(math.log2(max(batch_size, 1)) / 2)
    precision_step = 0 if precision == "fp32" else 1
    heavy_step = (2 if hardware == "cpu" else 1) if family in _HEAVY_FAMILIES else 0
    return max(1, min(10, 10 - batch_step - precision_step - heavy_step))


def estimate_memory_gb(
    family: str, batch_size: int, precision: str, hardware: str, params: Mapping[str, Any] | None = None
) -> float:
    """Estimated peak memory in GB of one test: host RAM on cpu, device memory elsewhere.

    ``overhead[hardware] + slack * (P * bytes_per_param[precision] / 1e3
    + batch_size * A * activation_scale[precision])`` where P (millions of parameters) and
    A (GB per sample at fp32) come from the family's typical model, slack is 1.2 on
    accelerators (caching allocators) and 1 on cpu. ``params["param_count_m"]`` replaces P;
    ``params["memory_gb"]`` replaces the whole estimate.
    """
    params = params or {}
    explicit = _positive(params.get("memory_gb"))
    if explicit is not None:
        return explicit
    param_m, act_gb = _FAMILY_FOOTPRINT.get(family, _FAMILY_FOOTPRINT["unknown"])
    param_m = _positive(params.get("param_count_m")) or param_m
    weights = param_m * _BYTES_PER_PARAM.get(precision, 4.0) / 1e3
    activations = batch_size * act_gb * _ACTIVATION_SCALE.get(precision, 1.0)
    slack = 1.0 if hardware == "cpu" else _ACCELERATOR_SLACK
    return round(_RUNTIME_OVERHEAD_GB.get(hardware, 0.5) + slack * (weights + activations), 4)


def _positive(value: object) -> float | None:
    """A positive finite number as a float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


# -- expansion ----------------------------------------------------------------------------


def model_slug(name: str) -> str:
    """The model name lowercased, with characters outside ``[a-z0-9._-]`` replaced by '-'."""
    return _SLUG_UNSAFE.sub("-", name.lower())


def format_test_id(slug: str, hardware: str, batch_size: int, precision: str) -> str:
    """``<model-slug>/<hardware>/bs<N>/<precision>``."""
    return f"{slug}/{hardware}/bs{batch_size}/{precision}"


def _unique_slugs(names: Sequence[str]) -> dict[str, str]:
    """Slug per model name. When slugs collide, names that are not already their own slug
    get a hash suffix, so a model's id does not depend on the order of the models."""
    slugs = {name: model_slug(name) for name in names}
    counts = Counter(slugs.values())
    for name, slug in slugs.items():
        if counts[slug] > 1 and name != slug:
            slugs[name] = f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slugs


def expand_suite(
    suite: Suite,
    *,
    resolve_template: TemplateResolver | None = None,
    max_tests: int = DEFAULT_MAX_TESTS,
    collect_tests: Callable[[Suite], Sequence[TestSpec]] | None = None,
) -> list[TestSpec]:
    """The suite's test matrix in a deterministic order (model order, hardware as listed,
    batch size ascending, precision as listed), with dependency edges filled in.

    A suite with `tests:` needs ``collect_tests`` (``dtf.testtasks.collect_tests``: it
    reads and collects the pytest files, which this pure module does not); its specs come
    after the models' and take part in `depends_on` like any other test."""
    _check_count(suite, max_tests)
    resolve = resolve_template or default_template
    slugs = _unique_slugs([m.name for m in suite.models])
    specs = [spec for i, m in enumerate(suite.models) for spec in _expand_model(suite, i, slugs[m.name], resolve)]
    if suite.tests:
        if collect_tests is None:
            raise SuiteError(suite.path, "tests", "test entries need collection (expand with dtf.testtasks.collect_tests)")
        specs.extend(collect_tests(suite))
        if len(specs) > max_tests:
            raise SuiteError(suite.path, None, f"expands to {len(specs)} tests, over the cap of {max_tests}")
    ids = Counter(s.test_id for s in specs)
    clash = next((tid for tid, n in ids.items() if n > 1), None)
    if clash is not None:  # only a model literally named like another's hashed slug gets here
        where = "tests" if any(s.test_id == clash and s.family == PYTEST_FAMILY for s in specs) else "models"
        raise SuiteError(suite.path, where, f"two entries expand to the same test id {clash!r}; rename one")
    deps = _dependency_map(suite, specs)
    specs = [replace(s, depends_on=deps.get(s.test_id, ())) for s in specs]
    validate_dependencies(specs, path=suite.path)
    return specs


def _check_count(suite: Suite, max_tests: int) -> None:
    total = sum(
        len(m.hardware or suite.hardware)
        * len(m.batch_sizes or suite.batch_sizes)
        * len(m.precisions or suite.precisions)
        for m in suite.models
    )
    if total > max_tests:
        raise SuiteError(suite.path, None, f"expands to {total} tests, over the cap of {max_tests}")
    # Every test carries its model's params: a large (aliased) string times many tests is
    # gigabytes held and sent. Counted before anything is expanded.
    text = 0
    for i, m in enumerate(suite.models):
        per_test = len(json.dumps(m.params, separators=(",", ":"))) if m.params else 0
        text += per_test * len(m.hardware or suite.hardware) * len(m.batch_sizes or suite.batch_sizes) \
            * len(m.precisions or suite.precisions)
        if text > MAX_PARAMS_TEXT:
            raise SuiteError(suite.path, f"models[{i}].params", f"params repeated in every test come to more than "
                             f"{MAX_PARAMS_TEXT:,} characters; keep large values out of params")


def _expand_model(suite: Suite, index: int, slug: str, resolve: TemplateResolver) -> Iterator[TestSpec]:
    entry = suite.models[index]
    family = entry.resolved_family
    settings = entry.run_settings(suite.defaults)
    params = dict(entry.params)
    if entry.source.real:
        params[MODEL_SOURCE_KEY] = entry.source.to_dict()
    for hardware in entry.hardware or suite.hardware:
        template = _resolve(suite, index, resolve, family, hardware, entry.template or template_for(entry.source, hardware))
        for batch_size in sorted(entry.batch_sizes or suite.batch_sizes):
            for precision in entry.precisions or suite.precisions:
                yield TestSpec(
                    test_id=format_test_id(slug, hardware, batch_size, precision),
                    model=entry.name,
                    family=family,
                    hardware=hardware,
                    batch_size=batch_size,
                    precision=precision,
                    template=template,
                    params=copy.deepcopy(params),
                    timeout_s=settings.timeout_s,
                    retries=settings.retries,
                    iterations=settings.iterations,
                    warmup=settings.warmup,
                    priority=priority(family, batch_size, precision, hardware),
                    memory_gb=estimate_memory_gb(family, batch_size, precision, hardware, entry.params),
                )


def _resolve(suite: Suite, index: int, resolve: TemplateResolver, family: str, hardware: str,
             explicit: str | None) -> str:
    where = f"models[{index}].template"
    try:
        name = resolve(family, hardware, explicit)
    except SuiteError:
        raise
    except DtfError as exc:  # e.g. TemplateNotFound: say which model asked for it
        raise SuiteError(suite.path, where, f"{exc} (model {suite.models[index].name!r} on {hardware})") from exc
    if not isinstance(name, str) or not name:
        raise SuiteError(suite.path, where, f"no template for family {family!r} on {hardware}")
    return name


# -- dependencies -------------------------------------------------------------------------


def _dependency_map(suite: Suite, specs: Sequence[TestSpec]) -> dict[str, tuple[str, ...]]:
    """test id -> the ids it waits for: the batch-size chain first, then explicit edges."""
    deps: dict[str, dict[str, None]] = {s.test_id: {} for s in specs}
    if suite.chain_batch_sizes:
        previous: dict[tuple[str, str, str], str] = {}
        for spec in specs:  # specs come batch-ascending within each (model, hardware)
            key = (spec.model, spec.hardware, spec.precision)
            if key in previous:
                deps[spec.test_id][previous[key]] = None
            previous[key] = spec.test_id
    budget = MAX_DEPENDENCY_EDGES
    check = _Checker(suite.path)
    # Each distinct selector is matched once (YAML aliases repeat the same text), and the
    # matching itself is budgeted: distinct selectors x tests scanned, not only the edges.
    found: dict[str, list[str]] = {}
    scans = [MAX_SELECTOR_SCANS]

    def matching(text: str, where: str) -> list[str]:
        if text not in found:
            scans[0] -= len(specs)
            if scans[0] < 0:
                raise check.error(where, f"depends_on selectors would scan more than {MAX_SELECTOR_SCANS:,} tests "
                                         "in all; use fewer distinct selectors (globs match many tests at once)")
            found[text] = _matching(check, text, where, specs)
        return found[text]

    for i, edge in enumerate(suite.depends_on):
        tests = matching(edge.test, f"depends_on[{i}].test")
        afters = matching(edge.after, f"depends_on[{i}].after")
        budget -= len(tests) * len(afters)
        if budget < 0:
            raise check.error(f"depends_on[{i}]", f"selectors ask for more than {MAX_DEPENDENCY_EDGES} edges in all")
        for test in tests:
            deps[test].update((after, None) for after in afters if after != test)  # never itself
    return {tid: tuple(parents) for tid, parents in deps.items() if parents}


def _matching(check: _Checker, text: str, where: str, specs: Sequence[TestSpec]) -> list[str]:
    selector = _parse_selector(check, text, where)
    found = [s.test_id for s in specs if _selects(selector, s)]
    if not found:
        raise check.error(where, f"selector {text!r} matches no test of the suite (dangling dependency)")
    return found


def _selects(selector: _Selector, spec: TestSpec) -> bool:
    slug = spec.test_id.rsplit("/", 3)[0]
    return (
        (_glob(spec.model, selector.model) or _glob(slug, selector.model))
        and _glob(spec.hardware, selector.hardware)
        and _glob(f"bs{spec.batch_size}", selector.batch)
        and _glob(spec.precision, selector.precision)
    )


def _glob(value: str, pattern: str) -> bool:
    return value == pattern or fnmatch.fnmatchcase(value, pattern)


def validate_dependencies(specs: Sequence[TestSpec], *, path: str = "<tests>") -> None:
    """Raise SuiteError on a duplicate test id, a dependency on a test that is not in
    `specs` (dangling), or a dependency cycle (listing its test ids)."""
    known: set[str] = set()
    for spec in specs:
        if spec.test_id in known:
            raise SuiteError(path, "tests", f"duplicate test id {spec.test_id!r}")
        known.add(spec.test_id)
    for spec in specs:
        for parent in spec.depends_on:
            if parent not in known:
                message = f"{spec.test_id!r} depends on {parent!r}, which is not a test of the suite"
                raise SuiteError(path, "depends_on", f"{message} (dangling dependency)")
    cycle = _find_cycle(specs)
    if cycle:
        raise SuiteError(path, "depends_on", f"dependency cycle: {' -> '.join(cycle)} (each waits for the next)")


def _find_cycle(specs: Sequence[TestSpec]) -> list[str] | None:
    """One cycle as [a, b, ..., a] where each waits for the next; iterative, so a chain of
    thousands of tests does not hit the recursion limit."""
    parents = {s.test_id: s.depends_on for s in specs}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in parents:
        if root in state:
            continue
        path, stack = [root], [iter(parents[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(parents[nxt]))
    return None


def topological_order(specs: Sequence[TestSpec], *, path: str = "<tests>") -> list[TestSpec]:
    """`specs` with every test after the tests it waits for; otherwise in input order."""
    validate_dependencies(specs, path=path)
    index = {s.test_id: i for i, s in enumerate(specs)}
    waiting = {s.test_id: len(set(s.depends_on)) for s in specs}
    dependants: dict[str, list[str]] = {s.test_id: [] for s in specs}
    for spec in specs:
        for parent in set(spec.depends_on):
            dependants[parent].append(spec.test_id)
    ready = [i for i, s in enumerate(specs) if not waiting[s.test_id]]
    heapq.heapify(ready)
    ordered: list[TestSpec] = []
    while ready:
        spec = specs[heapq.heappop(ready)]
        ordered.append(spec)
        for child in dependants[spec.test_id]:
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, index[child])
    return ordered


def render_suite(suite: Suite, specs: Sequence[TestSpec], render: Callable[[TestSpec], R]) -> list[R]:
    """``render`` of every spec. A DtfError from it (a parameter of the wrong type, a
    template that fails) becomes a SuiteError naming the suite file and the model entry."""
    index = {m.name: i for i, m in enumerate(suite.models)}
    rendered = []
    for spec in specs:
        try:
            rendered.append(render(spec))
        except SuiteError:
            raise
        except DtfError as exc:
            where = f"models[{index[spec.model]}]" if spec.model in index else (
                "tests" if spec.family == PYTEST_FAMILY else "models")
            raise SuiteError(suite.path, where, f"{exc} (test {spec.test_id})") from exc
    return rendered


def suite_summary(suite: Suite, specs: Sequence[TestSpec]) -> dict[str, Any]:
    """Counts for a quick look before submitting: tests per hardware, family, precision."""
    by_hardware = Counter(s.hardware for s in specs)
    return {
        "name": suite.name,
        "source_hash": suite.source_hash,
        "models": len(suite.models),
        "tests": len(specs),
        "by_hardware": {hw: by_hardware[hw] for hw in HARDWARE_KINDS if by_hardware[hw]},
        "by_family": dict(sorted(Counter(s.family for s in specs).items())),
        "by_precision": dict(sorted(Counter(s.precision for s in specs).items())),
        "dependency_edges": sum(len(s.depends_on) for s in specs),
        "max_memory_gb": max((s.memory_gb for s in specs), default=0.0),
        "max_timeout_s": max((s.timeout_s for s in specs), default=0.0),
    }
