"""The hooks a lopt plugin implements (pluggy project name ``lopt``).

A plugin is a module, named by an entry point in the ``lopt`` group, with
functions marked ``@lopt_core.hookimpl`` whose names match the specs below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from lopt_core.registry import Registry

PROJECT_NAME = "lopt"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def lopt_register(registry: Registry) -> None:
    """Register named factories: ``registry.register(kind, name, factory)``.

    ``kind`` is one of ``lopt_core.registry.KINDS``; ``factory`` is a callable
    (usually a class) that builds the thing from keyword arguments.
    """
