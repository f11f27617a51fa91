"""The template registry: the templates under a list of roots (extra roots first, then the
built-in ones), listing, metadata and content hashes, the one template-selection policy
(`TemplateRegistry.resolve`) and sandboxed rendering of a `TestSpec` into a test script."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from ..deadline import TimeLimitExceeded, time_limit
from ..errors import HardwareError, TemplateError, TemplateNotFound
from ..model import HARDWARE_KINDS, RenderedTest, TestSpec
from .lookup import (
    TEMPLATE_SUFFIX, _SEGMENT, _absent, _check_public, _Found, _inside, _is_partial, _joined, _Memo, _not_found,
    _plain_watch, _split_name, _stamp, _Watch,
)
from .metadata import (
    HASH_HEX_CHARS, METADATA_FILE, TemplateInfo, _check_parameter_types, _Metadata, _parse_metadata_file,
    render_context,
)
from .sandbox import MAX_OUTPUT_BYTES, RENDER_TIMEOUT_S, _join_capped, _make_environment, _OutputTooLarge, _render_error

__all__ = ["DEFAULT_TEMPLATE", "GENERIC_FAMILY", "TemplateRegistry", "builtin_root"]

GENERIC_FAMILY = "generic"
DEFAULT_TEMPLATE = "generic/default"


def builtin_root() -> Path:
    """The folder holding the built-in templates: ``dtf/_templates`` in an installed wheel
    (setup.py copies the repository's ``templates/`` there: a wheel cannot ship a top-level
    folder), else the repository's ``templates/`` (a checkout or ``pip install -e .``)."""
    here = Path(__file__).resolve().parent.parent  # the dtf package
    packaged = here / "_templates"
    if packaged.is_dir():
        return packaged
    return here.parent / "templates"


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
        self._env = _make_environment(_RootsLoader(self))
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
