"""Meta-training across machines on Ray (``pip install lopt[ray]``).

One learner actor applies meta-gradients and writes the run's files; N worker
actors hold their own tasks, data and worker states, pull theta through Ray's
object store and return estimates tagged with the theta step they used. The
protocol (synchronous, or asynchronous with a staleness bound) is
``lopt_core.outer.executors.PoolExecutor``; this package only provides the Ray
pool and the actors. Ray is imported when a run starts, never at import time,
so lopt works without it. Usage: docs/distributed.md, or
``lopt train CONFIG.gin --ray [--ray-address ADDR] [--workers N]``.
"""

from lopt_core.distributed.ray_backend import RayWorkers, init_ray, ray_meta_train, require_ray

__all__ = ["RayWorkers", "init_ray", "ray_meta_train", "require_ray"]
