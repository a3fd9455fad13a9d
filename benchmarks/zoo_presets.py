"""zoo_presets: size, step time and loss at init / after 100 Adam steps of every task preset.

    python benchmarks/zoo_presets.py [--names NAME ...] [--steps 100] [--lr 1e-3]

For each registered task preset (default: every registered task whose
constructor needs no argument, bar the generic task classes), one JSON line:
``params`` (trainable parameters), ``step_ms`` (median of 20 calls of one
jitted step, loss + gradient + Adam update on a fixed batch, after a warm-up),
``train_s`` (a warm ``train`` call of ``--steps`` Adam steps: host batch
drawing included), ``loss_init`` (train loss at step 0) and ``loss_after``
(mean train loss over the last 10 of ``--steps`` steps), with the test-split
loss at init and after (``test_init``, ``test_after``, 4 batches each) and
their ``normalizer`` values. Presets whose data is not on this machine
(MNIST, CIFAR-10 files) get a ``skipped`` line saying why.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()
import argparse  # noqa: E402
import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import emit, median, timed  # noqa: E402

from lopt_core.optimizers import Adam  # noqa: E402
from lopt_core.registry import get_registry  # noqa: E402
from lopt_core.training import train  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

GENERIC = {
    "CharLMTask", "ImageAutoencoderTask", "ImageConvTask", "ImageMLPTask", "ImageVAETask",
    "MixerTask", "QuadraticTask", "ResNetTask", "TabularLinearTask", "TabularMLPTask",
    "TransformerLMTask", "ViTTask",
}  # fmt: skip


def _step_ms(task, key) -> float:
    params, state = task.init_with_state(key)
    opt = Adam(1e-3)
    opt_state = opt.init(params, state)
    batch = None if task.datasets is None else next(iter(task.datasets.train))

    @jax.jit
    def step(opt_state, key):
        def loss(p):
            value, new_state = task.loss_with_state(p, opt.get_state(opt_state), key, batch)
            return value, new_state

        (value, new_state), grad = jax.value_and_grad(loss, has_aux=True)(opt.get_params(opt_state))
        return opt.update(opt_state, grad, value, new_state)

    opt_state = jax.block_until_ready(step(opt_state, key))
    times = []
    for i in range(20):
        dt, opt_state = timed(functools.partial(step, opt_state, jax.random.fold_in(key, i)))
        times.append(dt)
    return 1e3 * median(times)


def measure(name: str, steps: int, lr: float) -> dict:
    task = get_registry().create("task", name)
    key = jax.random.PRNGKey(0)
    params, _ = task.init_with_state(key)
    num_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
    step_ms = _step_ms(task, key)
    run = lambda: train(task, Adam(lr), key, steps, num_eval_batches=4, eval_splits=("test",))
    compile_and_run_s, _ = timed(run)
    train_s, result = timed(run)
    train_loss, test = np.asarray(result.train_loss), np.asarray(result.test_loss)
    normalize = lambda x: float(task.normalizer(jnp.float32(x)))
    return {
        "task": name,
        "params": num_params,
        "step_ms": round(step_ms, 3),
        "train_s": round(train_s, 3),
        "first_train_s": round(compile_and_run_s, 3),
        "steps": steps,
        "learning_rate": lr,
        "loss_init": float(train_loss[0]),
        "loss_after": float(np.mean(train_loss[-10:])),
        "test_init": float(test[0]),
        "test_after": float(test[-1]),
        "normalized_test_init": normalize(test[0]),
        "normalized_test_after": normalize(test[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="*", help="task presets (default: all)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    registry = get_registry()
    names = args.names or [n for n in registry.names("task") if n not in GENERIC]
    for name in names:
        try:
            row = measure(name, args.steps, args.lr)
        except (FileNotFoundError, OSError) as error:  # datasets the user must point at
            row = {"task": name, "skipped": str(error).splitlines()[0]}
        emit("zoo_presets", IMPORT_S, **row)


if __name__ == "__main__":
    main()
