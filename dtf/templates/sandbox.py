"""Jinja's immutable sandbox as dtf renders tests in it, and `pyrepr`, the only way a value
enters rendered source.

StrictUndefined, a finalize hook that refuses any ``{{ }}`` output that did not come from
``pyrepr`` (which writes Python literals of plain data only), a short list of filters, no
``str.format`` or ``%``, and bounds on the sizes ``*``, ``**``, ``+`` and ``~`` build.
Also how a failure inside a template becomes a TemplateError naming template and line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TemplateError

__all__ = ["MAX_OUTPUT_BYTES", "RENDER_TIMEOUT_S", "PySource", "pyrepr"]

#: a rendered test larger than this (UTF-8 bytes) is refused.
MAX_OUTPUT_BYTES = 1 << 20
_MAX_LITERAL_DEPTH = 32
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


def _make_environment(loader: jinja2.BaseLoader) -> _TestSandbox:
    env = _TestSandbox(
        loader=loader,
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
