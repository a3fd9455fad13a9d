"""lopt's built-in plugins: datasets, tasks, task families and optimizers.

Nothing in ``lopt_core`` imports this package; its modules are loaded through
the ``lopt`` entry-point group in ``setup.cfg``, as a third party's would be.
"""
