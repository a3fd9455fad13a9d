"""The plugin registry: named factories of each kind, provided by installed plugins.

``records`` (kinds, errors, plugin and entry records), ``messages`` (the text of
its errors and summaries), ``registry`` (the ``Registry`` and ``get_registry``).

A plugin is a module (or any object) with a ``@lopt_core.hookimpl`` function
``lopt_register(registry)`` that calls ``registry.register(kind, name, factory)``.
Plugins are found through the entry-point group ``lopt``; the built-in ones in
``lopt_plugins`` are declared there too, so the core never imports them.

``get_registry()`` loads every plugin on first use and caches the result.
A plugin that fails to import, or whose hook raises, is reported with a
``PluginLoadWarning`` naming its distribution and entry point, and every other
plugin still loads. Environment variables, named like pytest's:

- ``LOPT_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (plugins may still be
  added with ``Registry.load_module``), except those named in ``LOPT_PLUGINS``;
- ``LOPT_PLUGINS=name,...``: load only the entry points whose distribution name
  or entry-point name is listed;
- ``LOPT_STRICT_PLUGINS=1``: a failing or conflicting plugin is an error, not a warning.
"""

from lopt_core.registry import records
from lopt_core.registry.records import *  # noqa: F403  (its __all__: kinds, errors, records)
from lopt_core.registry.registry import Registry, get_registry, reset_registry, set_registry

__all__ = [*records.__all__, "Registry", "get_registry", "reset_registry", "set_registry"]
