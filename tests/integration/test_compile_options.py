"""lopt's compile options are in force with the built-in plugins' learned optimizers.

``MLPLOpt`` initializes its MLP with a function compiled with lopt's options, so
it shows that such functions also nest inside a caller's ``jit`` and ``vmap``.
(How the options follow the environment: tests/core/test_no_retrace.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys

# lopt's compile options (CPU: XLA backend optimization level 2). The suite itself
# compiles with --xla_backend_optimization_level=0 in XLA_FLAGS, which overrides them;
# this runs a fresh process without that flag, so the options are really in force.
_OPTIONS_SCRIPT = """
import jax, optax
from lopt_core.jit import compiler_options
from lopt_core.outer import (
    ConstantTruncationSchedule, GradientLearner, TruncatedPES, VectorizedLOptTruncatedStep,
)
from lopt_plugins.learned_optimizers import MLPLOpt
from lopt_plugins.tasks import FixedDimQuadraticFamily
assert compiler_options() == {"xla_backend_optimization_level": 2}, compiler_options()
lopt = MLPLOpt(hidden_size=4)
family, schedule = FixedDimQuadraticFamily(2), ConstantTruncationSchedule(4)
step = VectorizedLOptTruncatedStep(family, lopt, schedule, 2)
learner = GradientLearner(lopt, [TruncatedPES(step, trunc_length=2)], optax.adam(1e-3))
# Functions compiled with options must also work inside a caller's jit and vmap.
state = jax.jit(learner.init)(jax.random.PRNGKey(0))
jax.vmap(lopt.init)(jax.random.split(jax.random.PRNGKey(1), 2))
for i in range(2):
    state, metrics = learner.update(state, jax.random.PRNGKey(i))
assert learner._update_jit._cache_size() == 1
print("OK", float(metrics["meta_loss"]))
"""


def test_compile_options_are_used_and_nest_inside_a_callers_jit():
    env = {
        k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LOPT_CPU_BACKEND_OPT_LEVEL")
    }
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _OPTIONS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
