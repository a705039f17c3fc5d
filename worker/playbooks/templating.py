"""Jinja2 in a sandbox over `incident`, `alerts`, `service` and `secrets`, with size limits.

The sandbox blocks attribute tricks but not resource use, so rendered output is capped; secrets are
read through a view that remembers which values were used, so they can be masked everywhere.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import escape
from pydantic import SecretStr

MAX_RENDERED = 64 * 1024  # characters per rendered value
MAX_DEPTH = 8  # nesting of with: values
MASK = "***"


class TemplateProblem(Exception):
    """A template that does not compile or render; `path` is inside the rendered value."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        self.path = path
        self.message = message
        super().__init__(message)


class _Env(ImmutableSandboxedEnvironment):
    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
        # A step renders the same for the same incident, or what was approved could differ from what runs
        # (the executor renders again just before running and asks again on any difference).
        del self.filters["random"]


_ENV = _Env()


class SecretsView(Mapping[str, str]):
    """`secrets.NAME` reads WORKER_SECRET_NAME; every value read is recorded for masking."""

    def __init__(self, values: Mapping[str, SecretStr], *, sample: bool = False):
        self._values = values
        self._sample = sample
        self.used: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if self._sample:
            value = f"sample-secret-{name}"
        elif name in self._values:
            value = self._values[name].get_secret_value()
        else:
            raise KeyError(f"secret {name!r} is not set (environment variable WORKER_SECRET_{name})")
        self.used[name] = value
        return value

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise TemplateError(str(exc.args[0])) from None

    def __iter__(self) -> Any:
        return iter(())  # never enumerable: templates name the secret they need

    def __len__(self) -> int:
        return 0


class SampleLabels(dict[str, str]):
    """At lint time any label exists, so templates using labels render against the sample incident."""

    def __missing__(self, key: str) -> str:
        return f"sample-{key}"


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def compile_problems(value: Any, path: tuple[str | int, ...] = ()) -> list[TemplateProblem]:
    """Syntax errors of every template inside a with: value."""
    problems: list[TemplateProblem] = []
    if isinstance(value, str) and is_template(value):
        try:
            _ENV.from_string(value)
        except TemplateError as exc:
            problems.append(TemplateProblem(path, f"template error: {exc}"))
        except RecursionError:  # expressions nested too deep for the compiler
            problems.append(TemplateProblem(path, "template error: nested too deeply"))
    elif isinstance(value, dict):
        for key, item in value.items():
            problems.extend(compile_problems(item, (*path, str(key))))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(compile_problems(item, (*path, index)))
    return problems


def render(value: Any, context: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Any:
    """Render every string template inside `value`; TemplateProblem says where and why."""
    if len(path) > MAX_DEPTH:
        raise TemplateProblem(path, f"values nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            rendered = _ENV.from_string(value).render(context)
        except TemplateError as exc:
            raise TemplateProblem(path, f"template error: {exc}") from None
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateProblem(path, f"template error: {exc}") from None
        except RecursionError:  # a macro calling itself: how deep may depend on the incident, so say so here
            raise TemplateProblem(path, "template error: recursion too deep") from None
        if len(rendered) > MAX_RENDERED:
            raise TemplateProblem(path, f"rendered value is longer than {MAX_RENDERED} characters")
        return rendered
    if isinstance(value, dict):
        return {key: render(item, context, (*path, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context, (*path, i)) for i, item in enumerate(value)]
    return value


def mask(value: Any, secrets: Mapping[str, str]) -> Any:
    """Replace every secret value used in rendering with ***, also as written inside JSON, a URL or HTML
    (a description shows a request's body as JSON, where a quote or an accented letter is escaped)."""
    return _masked(value, _written_forms(secrets.values()))


def _written_forms(secrets: Iterable[str]) -> list[str]:
    forms = set()
    for secret in filter(None, secrets):
        forms |= {
            secret,
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
            str(htmlsafe_json_dumps(secret))[1:-1],  # Jinja's |tojson
            quote(secret, safe=""),
            quote(secret, safe="/"),  # Jinja's |urlencode
            quote_plus(secret, safe=""),
            quote_plus(secret, safe="/"),
            html.escape(secret),
            str(escape(secret)),  # Jinja's |e
        }
    return sorted(forms, key=len, reverse=True)  # a longer form first: a shorter one may be part of it


def _masked(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        for form in forms:
            value = value.replace(form, MASK)
        return value
    if isinstance(value, dict):
        return {k: _masked(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, forms) for v in value]
    return value
