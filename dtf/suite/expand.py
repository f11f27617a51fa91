"""A suite's test matrix: models x hardware x batch sizes x precisions as `TestSpec`s in a
deterministic order, with ids, templates, priorities, memory estimates and dependencies,
and `render_suite`, which names the suite file and model when rendering one fails."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TypeVar

from ..errors import DtfError, SuiteError
from ..model import TestSpec
from ..models.source import MODEL_SOURCE_KEY, template_for
from .data import PYTEST_FAMILY, Suite
from ..requirements import merge_requires
from .families import estimate_memory_gb, model_slug, priority
from .graph import _dependency_map, validate_dependencies

__all__ = ["DEFAULT_MAX_TESTS", "MAX_PARAMS_TEXT", "TemplateResolver", "expand_suite", "format_test_id", "render_suite"]

DEFAULT_MAX_TESTS = 100_000
MAX_PARAMS_TEXT = 64 << 20  # characters of params text across all tests (each test carries its model's)

# (family, hardware, explicit template or None) -> template name
TemplateResolver = Callable[[str, str, str | None], str]
R = TypeVar("R")  # what render_suite's render returns (a RenderedTest in dtf)


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

    Which template a test uses is `TemplateRegistry.resolve`'s decision (dtf.templates),
    the one template-selection policy: pass it as ``resolve_template``. Without one, a test
    keeps only the template its entry or its real model source names, and otherwise none
    (``""``): `TemplateRegistry.render` resolves that from the family and hardware.

    A suite with `tests:` needs ``collect_tests`` (``dtf.testtasks.collect_tests``: it
    reads and collects the pytest files, which this pure module does not); its specs come
    after the models' and take part in `depends_on` like any other test."""
    _check_count(suite, max_tests)
    slugs = _unique_slugs([m.name for m in suite.models])
    specs = [spec for i, m in enumerate(suite.models) for spec in _expand_model(suite, i, slugs[m.name], resolve_template)]
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


def _expand_model(suite: Suite, index: int, slug: str, resolve: TemplateResolver | None) -> Iterator[TestSpec]:
    entry = suite.models[index]
    family = entry.resolved_family
    settings = entry.run_settings(suite.defaults)
    params = dict(entry.params)
    if entry.source.real:
        params[MODEL_SOURCE_KEY] = entry.source.to_dict()
    for hardware in entry.hardware or suite.hardware:
        explicit = entry.template or template_for(entry.source, hardware)
        template = (explicit or "") if resolve is None else _resolve(suite, index, resolve, family, hardware, explicit)
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
                    requires=merge_requires(suite.requires, entry.requires),
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

