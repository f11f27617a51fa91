"""Template registry and sandboxed rendering of test templates.

A template is the file ``<root>/<family>/<variant>.py.j2``, named ``family/variant``; the
metadata of a folder's variants (description, families, hardware, parameters) lives in
``<root>/<family>/template.yaml`` and is read without rendering. Roots are searched in
order, extra roots first, so a user template overrides a built-in one of the same name.
A file or folder whose name starts with ``_`` is a partial: templates may ``{% include %}``
it, but it is never listed, resolved or rendered on its own.

Rendering runs in Jinja's immutable sandbox with StrictUndefined and a loader that only
loads validated names from inside the roots. Every ``{{ }}`` must pass through the
``pyrepr`` filter, which writes a Python literal of plain data only, so no value (a model
name with quotes, say) can add code to a rendered test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar

import jinja2
import jinja2.meta
import yaml
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dtf.deadline import TimeLimitExceeded, time_limit
from dtf.errors import HardwareError, TemplateError, TemplateNotFound
from dtf.model import HARDWARE_KINDS, RenderedTest, TestSpec

__all__ = [
    "DEFAULT_TEMPLATE",
    "HASH_HEX_CHARS",
    "MAX_OUTPUT_BYTES",
    "PySource",
    "TemplateInfo",
    "TemplateParameter",
    "TemplateRegistry",
    "builtin_root",
    "pyrepr",
    "render_context",
]

TEMPLATE_SUFFIX = ".py.j2"
METADATA_FILE = "template.yaml"
GENERIC_FAMILY = "generic"
DEFAULT_TEMPLATE = "generic/default"
#: content_hash is the first HASH_HEX_CHARS hex digits of a sha256.
HASH_HEX_CHARS = 16
#: a rendered test larger than this (UTF-8 bytes) is refused.
MAX_OUTPUT_BYTES = 1 << 20
_MAX_LITERAL_DEPTH = 32
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
# Filters a template may use; the rest of Jinja's set adds nothing to writing Python
# literals and some (center, indent, wordwrap, attr) are gadgets for abuse.
_ALLOWED_FILTERS = (
    "abs", "count", "d", "default", "dictsort", "first", "float", "int", "items",
    "last", "length", "list", "lower", "max", "min", "round", "sort", "upper",
)  # fmt: skip
# str methods that build a string of any size from a small call, and str.format, whose
# field syntax is the classic sandbox escape route. join, replace, translate (str, bytes)
# and int.to_bytes also build gigabytes from a short expression, inside one C call that no
# time limit can interrupt.
_UNSAFE_METHODS = frozenset({
    "center", "expandtabs", "format", "format_map", "ljust", "rjust", "zfill",
    "join", "replace", "translate", "maketrans", "to_bytes",
})  # fmt: skip
#: seconds one render may take; a loop in a template stops at the deadline.
RENDER_TIMEOUT_S = 10.0
_MAX_INT_BITS = 1 << 16  # ints a template multiplies stay far below what makes them slow


def builtin_root() -> Path:
    """The folder holding the built-in templates: ``dtf/_templates`` in an installed wheel
    (setup.py copies the repository's ``templates/`` there: a wheel cannot ship a top-level
    folder), else the repository's ``templates/`` (a checkout or ``pip install -e .``)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_templates"
    if packaged.is_dir():
        return packaged
    return here.parent / "templates"


@dataclass(frozen=True)
class TemplateParameter:
    """One knob a template offers a suite, with its default."""

    name: str
    default: Any
    description: str = ""

    def __str__(self) -> str:
        """Its default, as a listing shows it."""
        return repr(self.default)


@dataclass(frozen=True)
class TemplateInfo:
    """What a template is for, read from its folder's template.yaml, and its content hash.

    ``content_hash`` is the first 16 hex digits of a sha256 over the parameter defaults
    (as sorted JSON), the template's source and the sources of the templates it includes,
    so editing a default or a partial changes the hash of every template it affects.
    """

    name: str
    description: str
    families: tuple[str, ...]
    hardware: tuple[str, ...]
    parameters: Mapping[str, TemplateParameter]
    path: Path
    content_hash: str

    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default value."""
        return {p.name: p.default for p in self.parameters.values()}

    def supports(self, family: str, hardware: str) -> bool:
        return family in self.families and hardware in self.hardware


@dataclass(frozen=True)
class _Metadata:
    description: str = ""
    families: tuple[str, ...] = ()
    hardware: tuple[str, ...] = ()
    parameters: Mapping[str, TemplateParameter] = field(default_factory=dict)


# --- pyrepr: the only way a value enters rendered source -----------------------------


class PySource(str):
    """Text that ``pyrepr`` produced: a Python literal, safe to place in source."""

    __slots__ = ()


def pyrepr(value: Any) -> PySource:
    """The Python literal for plain data: str, int, float, bool, None, and lists, tuples
    and dicts of those. Anything else raises TemplateError, so objects with a custom
    ``__repr__`` (or str subclasses) can never write code. Output over the render cap is
    refused as it is built: ``[s] * 100000`` of a long ``s`` is small to hold, huge to write."""
    return PySource(_literal(value, 0, [MAX_OUTPUT_BYTES]))


def _literal(value: Any, depth: int, budget: list[int]) -> str:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if depth > _MAX_LITERAL_DEPTH:
        raise TemplateError("pyrepr: value is nested too deeply")
    budget[0] -= len(value) if type(value) is str else 8
    if budget[0] < 0:
        raise TemplateError(f"pyrepr: the value is over the {MAX_OUTPUT_BYTES}-byte cap")
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return repr(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if kind is list:
        return "[" + ", ".join(_literal(v, depth + 1, budget) for v in value) + "]"
    if kind is tuple:
        items = [_literal(v, depth + 1, budget) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if kind is dict:
        pairs = (f"{_literal(k, depth + 1, budget)}: {_literal(v, depth + 1, budget)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TemplateError(f"pyrepr writes only str, int, float, bool, None, list, tuple and dict, not {kind.__name__}")


def _require_pyrepr(value: Any) -> PySource:
    """Jinja finalize hook: every ``{{ }}`` output must come from ``pyrepr``."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if type(value) is not PySource:
        raise TemplateError("a value placed in the source must pass through |pyrepr")
    return value


# --- the sandbox ---------------------------------------------------------------------


class _BoundedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to a call the sandbox checks, as the sandbox checks ``+``:
    a chain of ``{% set b = a ~ a %}`` would otherwise double a string per line."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _TestSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, also bounding the sizes that ``*``, ``**``, ``+`` and
    ``~`` build, and without ``%`` formatting, ``str.format`` or ``str.format_map``."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedConcat

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (str, bytes, bytearray, int)) and attr in _UNSAFE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja hands out a sandboxed str.format before is_safe_attribute is asked; its
        # padding ('{:>999999999}') still builds any size, so the method is refused instead.
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("str.format and str.format_map are not available in templates")

        return refused

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, (str, bytes)):
            raise SecurityError("%-formatting is not available in templates; use ~ and |pyrepr")
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        """``~``: text and numbers only (str() of a container can be any size), capped."""
        for part in parts:
            if not isinstance(part, (str, int, float)) and part is not None:
                raise SecurityError(f"~ joins text and numbers, not {type(part).__name__}")
        if sum(len(p) for p in parts if isinstance(p, str)) > MAX_OUTPUT_BYTES:
            raise SecurityError("~ would build a string over the output cap")
        return "".join(map(str, parts))


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, (str, list, tuple)) and isinstance(times, int) and len(sequence) * times > MAX_OUTPUT_BYTES:
        raise SecurityError("sequence repetition is too large")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
        raise SecurityError("product is too large")


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if len(left) + len(right) > MAX_OUTPUT_BYTES:
            raise SecurityError("sum of sequences is too large")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent * math.log2(abs(base)) > 4096:
        raise SecurityError("power is too large")


class _RootsLoader(jinja2.BaseLoader):
    """Loads a template by validated name through the registry, never by raw path."""

    def __init__(self, registry: TemplateRegistry) -> None:
        self._registry = registry

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            path = self._registry._locate(template)
        except TemplateNotFound as exc:
            raise jinja2.TemplateNotFound(str(exc)) from None
        source, stamp = path.read_text(encoding="utf-8"), _stamp(path)

        def uptodate() -> bool:
            try:  # stale when another root now wins the name or the file changed
                found = self._registry._locate(template)
                return found == path and _stamp(found) == stamp
            except (OSError, TemplateNotFound):
                return False

        return source, str(path), uptodate


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _make_environment(registry: TemplateRegistry) -> _TestSandbox:
    env = _TestSandbox(
        loader=_RootsLoader(registry),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_require_pyrepr,
        keep_trailing_newline=True,
        auto_reload=True,
        cache_size=400,
    )
    env.filters = {name: env.filters[name] for name in _ALLOWED_FILTERS}
    env.filters["pyrepr"] = pyrepr
    env.globals = {name: env.globals[name] for name in ("range", "dict", "namespace")}
    return env


# --- names and paths -----------------------------------------------------------------


def _printable(name: object) -> str:
    text = str(name)
    return text if text.isprintable() else repr(text)


def _not_found(name: object, why: str = "") -> TemplateNotFound:
    return TemplateNotFound(f"template not found: {_printable(name)}" + (f" ({why})" if why else ""))


def _split_name(name: object) -> tuple[str, str]:
    """``family/variant`` of plain segments; this refuses ``..``, absolute paths,
    backslashes and NUL bytes because none of them can match a segment."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise _not_found(name)
    return parts[0], parts[1]


def _is_partial(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("/"))


def _check_public(name: object) -> None:
    """TemplateNotFound for a malformed name or a partial's."""
    if any(part.startswith("_") for part in _split_name(name)):
        raise _not_found(name, "partials can only be included")


def _inside(path: Path, root: Path) -> Path | None:
    """The real path of ``path`` if it exists and resolves (symlinks too) inside root."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) else None


# --- memoised lookups ----------------------------------------------------------------
#
# Finding a name resolves every component of a path, and info() also reads metadata and
# hashes sources: together far more work than rendering a small template, and a suite
# renders the same few templates thousands of times. So an answer is kept with a watch:
# the directory entries it depended on and their lstat stamps. It is reused only while a
# few lstat calls show every entry unchanged; an edited file, a new override in an
# earlier root or a file swapped for a symlink changes a stamp, and the answer is worked
# out again with every check. Only answers with no symlink on the way are kept, because
# then the watched entries by themselves prove that the file lies inside its root.

#: st_mode, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns of a directory entry itself
_Stamp = tuple[int, int, int, int, int, int]
#: (path, its stamp, or None for "nothing there"): what an answer held under
_Watch = tuple[tuple[str, _Stamp | None], ...]
_V = TypeVar("_V")


def _lstamp(path: str) -> _Stamp | None:
    """The stamp of the entry at path, not following a symlink; None when there is none."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _unchanged(watch: _Watch) -> bool:
    """Whether every watched entry is as it was (any other error: look again, the slow way)."""
    try:
        return all(_lstamp(path) == stamp for path, stamp in watch)
    except OSError:
        return False


def _absent(path: Path) -> _Watch:
    """An answer that skipped path holds while nothing is there."""
    return ((str(path), None),)


def _plain_watch(root: Path, path: Path) -> _Watch | None:
    """The watch of ``<root>/<folder>/<file>`` when root and folder are directories and
    the file a regular file, none a symlink: its real path is then itself, inside the
    (resolved) root, for as long as the three are unchanged. None otherwise."""
    entries = (root, path.parent, path)
    kinds = (stat.S_ISDIR, stat.S_ISDIR, stat.S_ISREG)
    try:
        watch = tuple((str(entry), _lstamp(str(entry))) for entry in entries)
    except OSError:
        return None
    if all(st is not None and is_kind(st[0]) for (_, st), is_kind in zip(watch, kinds)):
        return watch
    return None


def _joined(*watches: _Watch | None) -> _Watch | None:
    """All the watches as one (the first stamp of a path wins); None if any is None."""
    merged: dict[str, _Stamp | None] = {}
    for watch in watches:
        if watch is None:
            return None
        for path, st in watch:
            merged.setdefault(path, st)
    return tuple(merged.items())


class _Memo(Generic[_V]):
    """Answers by name, each kept with the watch that vouches for it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[_Watch, _V]] = {}

    def get(self, key: str) -> _V | None:
        """The answer for key while its watch holds, else None."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and _unchanged(entry[0]) else None

    def put(self, key: str, value: _V, watch: _Watch | None) -> None:
        """Keep value under key, or forget key when no watch can vouch for it."""
        if watch is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (watch, value)


class _Found(NamedTuple):
    """Where a name led: the file's real path, the root holding it, and its watch."""

    path: Path
    root: Path
    watch: _Watch | None


# --- metadata ------------------------------------------------------------------------


def _string_list(value: Any, what: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TemplateError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def _parse_parameters(raw: Any, where: str) -> dict[str, TemplateParameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: parameters must be a mapping of name -> {{default, description}}")
    params = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "default" not in spec:
            raise TemplateError(f"{where}: parameter {name} needs a default")
        params[str(name)] = TemplateParameter(str(name), spec["default"], str(spec.get("description", "")))
    return params


def _parse_variant(raw: Any, where: str) -> _Metadata:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: must be a mapping")
    hardware = _string_list(raw.get("hardware", []), "hardware", where)
    unknown = sorted(set(hardware) - set(HARDWARE_KINDS))
    if unknown:
        raise TemplateError(f"{where}: unknown hardware {unknown}; known: {list(HARDWARE_KINDS)}")
    return _Metadata(
        description=str(raw.get("description", "")),
        families=_string_list(raw.get("families", []), "families", where),
        hardware=hardware,
        parameters=_parse_parameters(raw.get("parameters"), where),
    )


def _parse_metadata_file(path: Path) -> dict[str, _Metadata]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read template metadata: {exc}") from exc
    variants = data.get("variants", {}) if isinstance(data, dict) else None
    if not isinstance(variants, dict):
        raise TemplateError(f"{path}: expected a mapping 'variants: {{name: {{...}}}}'")
    return {str(k): _parse_variant(v, f"{path}: variants.{k}") for k, v in variants.items()}


# --- render errors -------------------------------------------------------------------


def _template_line(tb: TracebackType | None, names: Mapping[str, str]) -> tuple[str, int] | None:
    """The innermost template frame of a traceback Jinja rewrote: (template name, line)."""
    found = None
    while tb is not None:
        name = names.get(tb.tb_frame.f_code.co_filename)
        if name is not None:
            found = (name, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _render_error(name: str, exc: BaseException, names: Mapping[str, str]) -> TemplateError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = names.get(exc.filename or "", exc.name or name)
        return TemplateError(f"template {where} line {exc.lineno}: {exc.message}")
    located = _template_line(exc.__traceback__, names)
    message = str(exc) or type(exc).__name__
    if isinstance(exc, jinja2.TemplateNotFound):
        message = exc.message or f"template not found: {exc.name}"
    if located is None:
        return TemplateError(f"template {name}: {message}")
    inner, line = located
    suffix = "" if inner == name else f" (included by {name})"
    return TemplateError(f"template {inner} line {line}{suffix}: {message}")


class _OutputTooLarge(TemplateError):
    """The rendered text passed the size cap (already names the template)."""


def _join_capped(chunks: Iterable[str], name: str, cap: int) -> str:
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk.encode("utf-8"))
        if size > cap:
            raise _OutputTooLarge(f"template {name}: rendered test is over the {cap}-byte cap")
        out.append(chunk)
    return "".join(out)


# --- the registry --------------------------------------------------------------------


class TemplateRegistry:
    """The templates under a list of roots: listing, resolution and sandboxed rendering.

        registry = TemplateRegistry([Path("my_templates")])
        name = registry.resolve("text_embedding", "cuda")   # "text_embedding/torch"
        rendered = registry.render(spec)
    """

    def __init__(
        self,
        extra_roots: Sequence[Path] = (),
        *,
        include_builtin: bool = True,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        render_timeout_s: float = RENDER_TIMEOUT_S,
    ) -> None:
        roots = [Path(r) for r in extra_roots]
        for root in roots:
            if not root.is_dir():
                raise TemplateError(f"template root {root} is not a directory")
        if include_builtin and builtin_root().is_dir():
            roots.append(builtin_root())
        self.roots: tuple[Path, ...] = tuple(r.resolve() for r in roots)
        self.max_output_bytes = max_output_bytes
        self.render_timeout_s = render_timeout_s
        self._env = _make_environment(self)
        self._file_cache: dict[tuple[str, Path], tuple[tuple[int, int], Any]] = {}
        self._found: _Memo[_Found] = _Memo()
        self._infos: _Memo[TemplateInfo] = _Memo()

    # -- finding templates

    def _find(self, name: str) -> _Found:
        """The first root holding ``name`` (partials included), remembered while its watch holds."""
        family, variant = _split_name(name)
        found = self._found.get(name)
        if found is None:
            found = self._search(name, family, variant)
            self._found.put(name, found, found.watch)
        return found

    def _search(self, name: str, family: str, variant: str) -> _Found:
        """Every root in order, until one holds the file; it must really lie inside that root."""
        skipped: list[_Watch] = []
        for root in self.roots:
            candidate = root / family / (variant + TEMPLATE_SUFFIX)
            if not (candidate.exists() or candidate.is_symlink()):
                skipped.append(_absent(candidate))
                continue
            real = _inside(candidate, root)
            if real is None or not real.is_file():
                raise _not_found(name, f"{candidate} is not a file inside its root")
            return _Found(real, root, _joined(*skipped, _plain_watch(root, candidate)))
        raise _not_found(name)

    def _locate(self, name: str) -> Path:
        return self._find(name).path

    def _find_public(self, name: str) -> _Found:
        _check_public(name)
        return self._find(name)

    def names(self) -> list[str]:
        """Every public template name under the roots, sorted."""
        found: set[str] = set()
        for root in self.roots:
            for path in root.glob(f"*/*{TEMPLATE_SUFFIX}"):
                name = f"{path.parent.name}/{path.name[: -len(TEMPLATE_SUFFIX)]}"
                if _is_partial(name) or not all(_SEGMENT.fullmatch(p) for p in name.split("/")):
                    continue
                if _inside(path, root) is not None:  # a symlink out of the root is not there
                    found.add(name)
        return sorted(found)

    # -- metadata and hashes

    def _cached(self, kind: str, path: Path, compute: Callable[[Path], Any]) -> Any:
        key, stamp = (kind, path), _stamp(path)
        hit = self._file_cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = compute(path)
        self._file_cache[key] = (stamp, value)
        return value

    def _metadata(self, name: str, from_root: Path) -> tuple[_Metadata, _Watch | None]:
        """The first entry for ``name`` in a template.yaml, from the root that holds the
        template onwards: an override without metadata keeps the overridden one's. With
        the watch of the files it read and of those it skipped, which are watched as
        absent: one skipped as outside its root is looked at afresh until it is gone."""
        family, variant = name.split("/")
        watches: list[_Watch | None] = []
        for root in self.roots[self.roots.index(from_root) :]:
            candidate = root / family / METADATA_FILE
            path = _inside(candidate, root)
            if path is None:
                watches.append(_absent(candidate))
                continue
            watches.append(_plain_watch(root, candidate))
            entry: _Metadata | None = self._cached("meta", path, _parse_metadata_file).get(variant)
            if entry is not None:
                return entry, _joined(*watches)
        return _Metadata(description="(no metadata)", families=(family,)), _joined(*watches)

    def _references(self, path: Path) -> list[str]:
        def parse(p: Path) -> list[str]:
            try:
                ast = self._env.parse(p.read_text(encoding="utf-8"))
            except jinja2.TemplateSyntaxError:
                return []  # rendering reports it, with its line
            return [n for n in jinja2.meta.find_referenced_templates(ast) if n is not None]

        result: list[str] = self._cached("refs", path, parse)
        return result

    def _content_hash(self, found: _Found, defaults: Mapping[str, Any]) -> tuple[str, _Watch | None]:
        """The hash over the defaults and the sources of the template and what it includes,
        and the watch of those files (None when an include is missing: never kept)."""
        digest = hashlib.sha256(json.dumps(defaults, sort_keys=True, default=repr).encode())
        seen: set[Path] = set()
        watches: list[_Watch | None] = []
        pending = [found]
        while pending:
            file = pending.pop(0)
            if file.path in seen:
                continue
            seen.add(file.path)
            watches.append(file.watch)
            digest.update(self._cached("bytes", file.path, Path.read_bytes))
            for ref in self._references(file.path):
                try:
                    pending.append(self._find(ref))
                except TemplateNotFound:
                    digest.update(f"<missing {ref}>".encode())
                    watches.append(None)
        return digest.hexdigest()[:HASH_HEX_CHARS], _joined(*watches)

    # -- public queries

    def info(self, name: str) -> TemplateInfo:
        """Metadata and content hash of one template; TemplateNotFound if there is none.
        Each call gets its own ``parameters`` dict, as a remembered answer is shared."""
        _check_public(name)
        info = self._infos.get(name)
        if info is None:
            info, watch = self._read_info(name)
            self._infos.put(name, info, watch)
        return dataclasses.replace(info, parameters=dict(info.parameters))

    def _read_info(self, name: str) -> tuple[TemplateInfo, _Watch | None]:
        """info() worked out afresh, with the watch of every file it read or skipped."""
        found = self._find(name)
        meta, meta_watch = self._metadata(name, found.root)
        content_hash, hash_watch = self._content_hash(found, {p.name: p.default for p in meta.parameters.values()})
        info = TemplateInfo(
            name=name,
            description=meta.description,
            families=meta.families,
            hardware=meta.hardware,
            parameters=dict(meta.parameters),
            path=found.path,
            content_hash=content_hash,
        )
        return info, _joined(found.watch, meta_watch, hash_watch)

    def list(self) -> list[TemplateInfo]:
        """Every public template, sorted by name."""
        return [self.info(name) for name in self.names()]

    def resolve(self, family: str, hardware: str, explicit: str | None = None) -> str:
        """The template to use: ``explicit`` when given (it must exist), else the best
        one for the family on that hardware, else the best generic one, else
        generic/default. Best = named ``<family>/<hardware>``, then in the family's own
        folder, then the one supporting the fewest hardware kinds, then by name."""
        if explicit:
            self._find_public(explicit)
            return explicit
        if hardware not in HARDWARE_KINDS:
            raise HardwareError(f"unknown hardware kind {hardware!r}; known: {', '.join(HARDWARE_KINDS)}")
        infos = self.list()
        for wanted in dict.fromkeys((family, GENERIC_FAMILY)):
            best = _best_fit(infos, wanted, hardware)
            if best is not None:
                return best
        if any(i.name == DEFAULT_TEMPLATE for i in infos):
            return DEFAULT_TEMPLATE
        raise _not_found(DEFAULT_TEMPLATE, f"no template serves family {family!r} on {hardware!r}")

    # -- rendering

    def render(self, spec: TestSpec) -> RenderedTest:
        """Render the spec's template (resolved from family and hardware when the spec
        names none) into a self-contained Python test script."""
        if not spec.template:
            spec = dataclasses.replace(spec, template=self.resolve(spec.family, spec.hardware))
        info = self.info(spec.template)  # checks the name is a public template's
        _check_parameter_types(info, spec.params)
        source = self._render(spec.template, render_context(spec, info))
        return RenderedTest(spec, source, info.content_hash)

    def render_source(self, name: str, context: Mapping[str, Any]) -> str:
        """Render one public template with a context; every failure is a TemplateError
        naming the template and, where known, the line."""
        self._find_public(name)
        return self._render(name, context)

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        """render_source for a name already checked to be a public template's."""
        try:
            with time_limit(self.render_timeout_s):
                template = self._env.get_template(name)
                return _join_capped(template.generate(dict(context)), name, self.max_output_bytes)
        except (TemplateNotFound, _OutputTooLarge):
            raise
        except TimeLimitExceeded:
            raise TemplateError(f"template {name}: rendering took longer than {self.render_timeout_s:g} s") from None
        except Exception as exc:  # any failure inside a template is the template's
            raise _render_error(name, exc, self._filenames()) from exc

    def _filenames(self) -> dict[str, str]:
        """Real file path -> template name, to name the template in a traceback frame:
        a walk of every root, so it is done only once a render has failed."""
        mapping: dict[str, str] = {}
        for root in reversed(self.roots):  # earlier roots win
            for path in root.glob(f"*/*{TEMPLATE_SUFFIX}"):
                real = _inside(path, root)
                if real is not None:
                    mapping[str(real)] = f"{path.parent.name}/{path.name[: -len(TEMPLATE_SUFFIX)]}"
        return mapping


def _best_fit(infos: Iterable[TemplateInfo], family: str, hardware: str) -> str | None:
    fitting = [i for i in infos if i.supports(family, hardware)]
    if not fitting:
        return None

    def rank(info: TemplateInfo) -> tuple[bool, bool, int, str]:
        folder = info.name.split("/")[0]
        return (info.name != f"{family}/{hardware}", folder != family, len(info.hardware), info.name)

    return min(fitting, key=rank).name


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_parameter_types(info: TemplateInfo, params: Mapping[str, Any]) -> None:
    """A suite's value must have its default's type (an int may stand for a float), so a
    typo fails at render time rather than inside a worker. Unknown names pass through."""
    for key, value in params.items():
        declared = info.parameters.get(key)
        if declared is None or declared.default is None or _same_kind(declared.default, value):
            continue
        kind = type(declared.default).__name__
        raise TemplateError(
            f"template {info.name}: parameter {key} must be a {kind} like its default {declared.default!r}, got {value!r}"
        )


def render_context(spec: TestSpec, info: TemplateInfo) -> dict[str, Any]:
    """What a template sees: the spec as a dict, its main fields at top level, and
    ``params``: the spec's parameters merged over the template's defaults."""
    return {
        "spec": spec.to_dict(),
        "template": info.name,
        "test_id": spec.test_id,
        "model": spec.model,
        "family": spec.family,
        "hardware": spec.hardware,
        "batch_size": spec.batch_size,
        "precision": spec.precision,
        "iterations": spec.iterations,
        "warmup": spec.warmup,
        "timeout_s": spec.timeout_s,
        "params": {**info.defaults(), **dict(spec.params)},
    }

