"""The PRNG fold-in tags of lopt's engines, in one table so that no two streams collide.

A run's keys all derive from ``PRNGKey(seed)``: outer step ``s`` uses
``fold_in(key, s)`` (``s`` counts up from 0), and every other stream folds in one
of the tags below, taken from the top of the int32 range so that they never meet
a step number.
"""

from __future__ import annotations

import jax

INIT = 2**31 - 1  # the learner's initial state (theta, worker states)
VALIDATION = 2**31 - 2  # meta_train's held-out validation tasks (the same every time)
EVAL_HELD_OUT = 2**31 - 3  # `lopt eval`: the held-out runs it reports
EVAL_TUNING = 2**31 - 4  # `lopt eval`: the baselines' learning-rate tuning runs
WORKER_REBUILD = 2**31 - 5  # worker states rebuilt from theta (restart, resume)
ASYNC_JOBS = 2**31 - 6  # asynchronous workers' jobs, by job number
TASK_DRAWS = 2**31 - 7  # task distributions: each slot's family, by resampling epoch and slot
VALIDATION_FAMILIES = 2**31 - 8  # task distributions: the held-out validation families

TAGS = {
    "INIT": INIT,
    "VALIDATION": VALIDATION,
    "EVAL_HELD_OUT": EVAL_HELD_OUT,
    "EVAL_TUNING": EVAL_TUNING,
    "WORKER_REBUILD": WORKER_REBUILD,
    "ASYNC_JOBS": ASYNC_JOBS,
    "TASK_DRAWS": TASK_DRAWS,
    "VALIDATION_FAMILIES": VALIDATION_FAMILIES,
}


def tagged(key: jax.Array, tag: int) -> jax.Array:
    """``fold_in(key, tag)``: the key of the stream ``tag`` names."""
    return jax.random.fold_in(key, tag)
