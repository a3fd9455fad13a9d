"""inner_vmap: lopt's ``train_family`` against the same loop hand-written in plain JAX.

``train_family(FixedDimQuadraticFamily(10), Adam(0.01), key, num_tasks, 100)`` for
32 and 256 tasks: compile seconds (first call), steady seconds per call (median
of 50 calls, each with a fresh key, until ready) and task-steps per second.
Twice: with lopt's default evaluation (losses at steps 0 and 100 on the data-free
"inner_valid" and "test" splits) and with ``eval_splits=()`` (the same work as the
hand-written loop). The hand-written loop is one jitted function: sample the
targets, initialize, and ``vmap`` over tasks a ``lax.scan`` of Adam (optax's
update rule written out) that records the loss of every step, as lopt does; and the
same loop with ``optax.adam`` (what ``lopt_core.Adam`` runs), which isolates lopt's
own overhead from optax's. Prints one JSON line.
"""

import time

_t0 = time.perf_counter()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import lopt_core  # noqa: E402
from lopt_plugins.tasks import FixedDimQuadraticFamily  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402

DIM, NUM_STEPS, LR, CALLS = 10, 100, 0.01, 50


def _problem(key):
    """One task of the hand-written loops: N(0, I) start, squared distance to an N(0, I) target."""
    target_key, init_key = jax.random.split(key)
    target = jax.random.normal(target_key, (DIM,))
    params = jax.random.normal(init_key, (DIM,))
    return params, lambda p: jnp.sum(jnp.square(p - target))


def hand_written(num_tasks: int):
    """Plain JAX: sample targets, init, vmap over tasks a scan of Adam; per-step losses."""
    b1, b2, eps = 0.9, 0.999, 1e-8

    def one(key):
        params, loss_fn = _problem(key)

        def step(carry, i):
            p, m, v = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            t = (i + 1).astype(jnp.float32)
            update = (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
            return (p - LR * update, m, v), loss

        zeros = jnp.zeros_like(params)
        (params, _, _), losses = jax.lax.scan(step, (params, zeros, zeros), jnp.arange(NUM_STEPS))
        return params, losses

    return jax.jit(lambda key: jax.vmap(one)(jax.random.split(key, num_tasks)))


def hand_written_optax(num_tasks: int):
    """As ``hand_written``, with ``optax.adam`` (the Adam inside ``lopt_core.Adam``)."""
    tx = optax.adam(LR)

    def one(key):
        params, loss_fn = _problem(key)

        def step(carry, _):
            p, state = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            updates, state = tx.update(g, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, NUM_STEPS)
        return params, losses

    return jax.jit(lambda key: jax.vmap(one)(jax.random.split(key, num_tasks)))


def measure(call) -> dict:
    """Compile (first call) and steady seconds (median of CALLS calls, fresh keys)."""
    key = jax.random.PRNGKey(0)
    compile_s, _ = _common.timed(lambda: call(key))
    times = []
    for i in range(CALLS):
        k = jax.random.fold_in(key, i + 1)
        t, _ = _common.timed(lambda k=k: call(k))
        times.append(t)
    return {"compile_s": round(compile_s, 4), "steady_s": round(_common.median(times), 7)}


def main() -> None:
    family = FixedDimQuadraticFamily(DIM)
    opt = lopt_core.Adam(LR)
    results = {}
    for num_tasks in (32, 256):
        row = {}
        row["lopt"] = measure(
            lambda k, n=num_tasks: lopt_core.train_family(family, opt, k, n, NUM_STEPS)
        )
        row["lopt_no_eval"] = measure(
            lambda k, n=num_tasks: lopt_core.train_family(
                family, opt, k, n, NUM_STEPS, eval_splits=()
            )
        )
        row["hand_written"] = measure(hand_written(num_tasks))
        row["hand_written_optax"] = measure(hand_written_optax(num_tasks))
        for name in ("lopt", "lopt_no_eval", "hand_written", "hand_written_optax"):
            row[name]["task_steps_per_s"] = round(num_tasks * NUM_STEPS / row[name]["steady_s"])
        for name in ("lopt", "lopt_no_eval", "hand_written_optax"):
            row[f"{name}_ratio_to_hand_written"] = round(
                row[name]["steady_s"] / row["hand_written"]["steady_s"], 3
            )
        results[f"tasks_{num_tasks}"] = row
    _common.emit("inner_vmap", IMPORT_S, num_steps=NUM_STEPS, **results)


if __name__ == "__main__":
    main()
