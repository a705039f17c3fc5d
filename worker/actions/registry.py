"""Import every step type so it registers itself; discovery never swallows an import error."""

from __future__ import annotations

import importlib
import pkgutil

import worker.actions as package
from worker.actions.base import Action


def load_all() -> dict[str, type[Action]]:  # type: ignore[type-arg]
    """Import each module of worker.actions; a broken module fails loudly, it never just disappears."""
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in {"base", "registry", "scoping"}:
            importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(Action.registry)
