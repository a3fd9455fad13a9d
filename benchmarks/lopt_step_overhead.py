"""lopt_step_overhead: what a learned optimizer costs per step on a 1M-parameter flax MLP.

The model is an MLP 784 -> 1024 -> 256 -> 10 (1,068,810 parameters) on a fixed
batch of 128 random inputs. For ``Adam(1e-3)``, ``MLPLOpt``, ``AdafacMLPLOpt``,
``NormalizedMLPLOpt``, ``NormalizedMLPLOpt(orthogonalize=True)`` and
``NormalizedMLPLOpt(conditioner_size=8)`` (a per-tensor GRU) and ``ResidualAdamLOpt`` (at their
``init`` meta-parameters) two jitted functions are timed in steady
state (median of ``REPEATS`` calls, each until ready, the state donated and
chained from call to call):

- ``update``: ``opt.update(state, grad)`` alone, with a fixed gradient;
- ``train_step``: loss, gradient and update together, what a training loop pays.

Prints one JSON line with the times and the ratios to Adam, and per optimizer what
the update costs in arithmetic and memory traffic: XLA's cost analysis of the
compiled update (``flops``, ``bytes accessed``; compiled once more with the MLPs'
row chunking off, since the analysis counts a loop's body once), per parameter and
per second of the measured update time, and as a fraction of this machine's
matrix-multiply speed (``matmul_gflops``: the best of jitted 1024 and 2048 square float32
products).
"""

import functools
import time

_t0 = time.perf_counter()
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from lopt_core import Adam  # noqa: E402
from lopt_plugins.learned_optimizers import (  # noqa: E402
    AdafacMLPLOpt,
    MLPLOpt,
    NormalizedMLPLOpt,
    ResidualAdamLOpt,
    mlp,
)

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402

REPEATS = 30
BATCH = 128


class Model(nn.Module):
    """784 -> 1024 -> 256 -> 10, relu."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(1024)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


def measure(opt, params, loss_fn, grad) -> dict:
    """Compile seconds and steady seconds of ``update`` and ``train_step`` for ``opt``."""

    def update(state, g):
        return opt.update(state, g)

    def train_step(state):
        loss, g = jax.value_and_grad(loss_fn)(opt.get_params(state))
        return opt.update(state, g, loss=loss), loss

    out = {}
    for name, fn, extra in (("update", update, (grad,)), ("train_step", train_step, ())):
        jitted = jax.jit(fn, donate_argnums=0)
        # A copy: the state is donated, and it holds the parameters themselves.
        state = jax.block_until_ready(opt.init(jax.tree_util.tree_map(jnp.copy, params)))
        t0 = time.perf_counter()
        compiled = jitted.lower(state, *extra).compile()
        out[f"{name}_compile_s"] = round(time.perf_counter() - t0, 3)
        times = []
        for _ in range(REPEATS + 2):
            t0 = time.perf_counter()
            result = jax.block_until_ready(compiled(state, *extra))
            times.append(time.perf_counter() - t0)
            state = result[0] if name == "train_step" else result
        out[f"{name}_s"] = round(_common.median(times[2:]), 6)
    return out


def matmul_gflops(sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """The machine's peak: the best GFLOP/s of a jitted ``n x n`` float32 matrix product
    (median of 10 calls) over ``sizes``."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
        product = jax.jit(lambda x: x @ x).lower(a).compile()
        jax.block_until_ready(product(a))
        times = [_common.timed(functools.partial(product, a))[0] for _ in range(10)]
        best = max(best, 2 * n**3 / _common.median(times) / 1e9)
    return best


def update_cost(opt, params, grad) -> dict:
    """XLA's count of the update's flops and bytes accessed, with no chunk loop hiding work."""
    saved, mlp.CHUNK_ROWS = mlp.CHUNK_ROWS, 2**62
    try:
        state = opt.init(params)
        analysis = jax.jit(lambda s, g: opt.update(s, g)).lower(state, grad).compile()
        analysis = analysis.cost_analysis()
    finally:
        mlp.CHUNK_ROWS = saved
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return {"flops": float(analysis["flops"]), "bytes": float(analysis["bytes accessed"])}


def main() -> None:
    key = jax.random.PRNGKey(0)
    model = Model()
    x = jax.random.normal(key, (BATCH, 784))
    y = jax.random.randint(jax.random.fold_in(key, 1), (BATCH,), 0, 10)
    params = model.init(key, x)
    num_params = sum(p.size for p in jax.tree_util.tree_leaves(params))

    def loss_fn(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grad = jax.jit(jax.grad(loss_fn))(params)
    results = {"num_params": int(num_params)}
    optimizers = {
        "Adam": Adam(1e-3),
        "MLPLOpt": MLPLOpt().opt_fn(MLPLOpt().init(key)),
        "AdafacMLPLOpt": AdafacMLPLOpt().opt_fn(AdafacMLPLOpt().init(key)),
        "NormalizedMLPLOpt": NormalizedMLPLOpt().opt_fn(NormalizedMLPLOpt().init(key)),
        "ResidualAdamLOpt": ResidualAdamLOpt().opt_fn(ResidualAdamLOpt().init(key)),
        "NormalizedMLPLOpt_orthogonalized": NormalizedMLPLOpt(orthogonalize=True).opt_fn(
            NormalizedMLPLOpt(orthogonalize=True).init(key)
        ),
        "NormalizedMLPLOpt_gru8": NormalizedMLPLOpt(conditioner_size=8).opt_fn(
            NormalizedMLPLOpt(conditioner_size=8).init(key)
        ),
    }
    peak = matmul_gflops()
    results["matmul_gflops"] = round(peak, 1)
    for name, opt in optimizers.items():
        results[name] = measure(opt, params, loss_fn, grad)
        cost = update_cost(opt, params, grad)
        seconds = results[name]["update_s"]
        results[name].update(
            update_gflop=round(cost["flops"] / 1e9, 4),
            flops_per_param=round(cost["flops"] / num_params, 1),
            bytes_per_param=round(cost["bytes"] / num_params, 1),
            update_gflops_per_s=round(cost["flops"] / seconds / 1e9, 2),
            update_gb_per_s=round(cost["bytes"] / seconds / 1e9, 2),
            fraction_of_matmul_peak=round(cost["flops"] / seconds / 1e9 / peak, 3),
        )
    for name in [n for n in optimizers if n != "Adam"]:
        for what in ("update", "train_step"):
            ratio = results[name][f"{what}_s"] / results["Adam"][f"{what}_s"]
            results[f"{name}_{what}_ratio_to_adam"] = round(ratio, 2)
    _common.emit("lopt_step_overhead", IMPORT_S, **results)


if __name__ == "__main__":
    main()
