"""Reading a suite file: the file itself (size cap, UTF-8, ``yaml.safe_load``) and the
validation of every part of the document (defaults, models and their sources, params,
tests, depends_on edges) into a `Suite`."""

from __future__ import annotations

import hashlib
import json
import math
import re
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import SuiteError
from ..model import HARDWARE_KINDS, PRECISIONS
from ..models.source import MODEL_SOURCES, TASKS, WEIGHTS, ModelSource
from ..requirements import RequirementError, check_requires
from .check import _Checker, _one_line, _show
from .data import (
    EDGE_KEYS, MODEL_KEYS, RUN_SETTING_KEYS, SOURCE_KEYS, SUITE_KEYS, TEST_KEYS, TEST_SPLITS, DependencyEdge,
    ModelEntry, RunSettings, Suite, TestTaskEntry, _with_settings,
)
from .families import FAMILIES
from .graph import _parse_selector

__all__ = ["DEFAULT_MAX_BYTES", "load_suite", "parse_suite"]

DEFAULT_MAX_BYTES = 1 << 20
_MAX_TEST_ARGS = 100

_FAMILY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_MODEL_NAME = 200
_PARAMS_MAX_DEPTH = 32
_PARAMS_MAX_NODES = 10_000  # YAML aliases can make a tiny file a huge tree to walk
_PARAMS_MAX_CHARS = 256 * 1024  # and a huge text: 10,000 aliases of a 100 KB string are 1 GB


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
        requires=_suite_requires(check, data),
    )
    if source_hash is None:
        canonical = json.dumps(suite.to_dict(), sort_keys=True, separators=(",", ":"))
        source_hash = hashlib.sha256(canonical.encode()).hexdigest()
    return replace(suite, source_hash=source_hash)


def _default(value: object, default: object) -> object:
    """Null in YAML means "not set", as for every optional key."""
    return default if value is None else value


def _read_defaults(check: _Checker, data: Mapping[str, object]) -> RunSettings:
    """Built-in defaults, then the `defaults:` mapping and top-level keys (which must agree)."""
    nested: dict[str, float | int] = {}
    if data.get("defaults") is not None:
        block = check.mapping(data["defaults"], "defaults", "a mapping of run settings")
        check.known_keys(block, (*RUN_SETTING_KEYS, "requires"), "defaults")
        nested = check.run_settings({k: v for k, v in block.items() if k != "requires"}, "defaults.")
    top = check.run_settings(data, "")
    for key in sorted(nested.keys() & top.keys()):
        if nested[key] != top[key]:
            raise check.error(key, f"set both here ({top[key]:g}) and in defaults ({nested[key]:g}); set it once")
    return _with_settings(RunSettings(), {**nested, **top})


def _read_requires(check: _Checker, value: object, where: str) -> dict[str, Any]:
    """A `requires:` mapping (dtf.requirements), errors named by their field path."""
    try:
        return check_requires(value, MODEL_SOURCES)
    except RequirementError as exc:
        raise check.error(f"{where}.{exc.field}" if exc.field else where, str(exc)) from None


def _suite_requires(check: _Checker, data: Mapping[str, object]) -> dict[str, Any]:
    """The suite's requirements: top-level `requires:` or `defaults.requires` (set it once)."""
    block = data.get("defaults")
    nested = block.get("requires") if isinstance(block, Mapping) else None
    if nested is not None and data.get("requires") is not None:
        raise check.error("requires", "set both here and in defaults; set it once")
    if nested is not None:
        return _read_requires(check, nested, "defaults.requires")
    return _read_requires(check, data.get("requires"), "requires")


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
        requires=None if spec.get("requires") is None else _read_requires(check, spec["requires"], f"{prefix}requires"),
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
        requires=None if spec.get("requires") is None else _read_requires(check, spec["requires"], f"{prefix}requires"),
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
