"""Tests for the character-level language model tasks of lopt_plugins.tasks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from lopt_plugins import datasets
from lopt_plugins.tasks import TASKS, CharLM_Text_GRU64, CharLMTask, char_lm

KEY = jax.random.PRNGKey(0)


def test_char_lm_init_loss_is_log_vocab_and_adam_lowers_it():
    task = CharLMTask(cell="lstm", hidden_size=32, embed_size=16, batch_size=4, sequence_length=16)
    assert task.vocab_size == 256 and task.name == "CharLM_Text_LSTM32"
    result = lopt_core.train(
        task, lopt_core.Adam(0.01), KEY, num_steps=50, eval_every=50, num_eval_batches=4
    )
    init_loss, final_loss = np.asarray(result.inner_valid_loss)
    assert np.isfinite(init_loss) and abs(init_loss - math.log(256)) < 0.2, init_loss
    # 50 steps are enough to learn the byte frequencies of source code, not much more.
    assert final_loss < 0.75 * init_loss, (init_loss, final_loss)
    assert abs(float(task.normalizer(init_loss)) - 1.0) < 0.05


def test_char_lm_shapes_and_gru_cell():
    task = CharLM_Text_GRU64(batch_size=2, sequence_length=8)
    assert task.name == "CharLM_Text_GRU64" and TASKS["CharLM_Text_GRU64"] is CharLM_Text_GRU64
    batch = next(task.datasets.train)
    assert batch["obs"].shape == (2, 8) and batch["target"].shape == (2, 8)

    @jax.jit  # one compile: eager flax RNNs dispatch (and compile) op by op
    def logits_loss_and_aux(key, batch):
        params = task.init(key)
        return task.module.apply(params, batch["obs"]), task.loss_and_aux(params, key, batch)

    logits, (loss, aux) = logits_loss_and_aux(KEY, batch)
    assert logits.shape == (2, 8, 256)
    assert np.isfinite(loss) and 0.0 <= float(aux["accuracy"]) <= 1.0
    assert set(char_lm.PRESETS) <= set(TASKS)


def test_char_lm_takes_a_datasets_object():
    data = datasets.text(batch_size=2, sequence_length=8)
    task = CharLMTask(data, hidden_size=8, embed_size=4)
    assert task.datasets is data and task.name == "CharLM_Text_LSTM8"


def test_char_lm_bad_arguments():
    with pytest.raises(ValueError, match="Unknown cell 'transformer'"):
        CharLMTask(cell="transformer")
    with pytest.raises(ValueError, match="Unknown text dataset 'wiki'"):
        CharLMTask("wiki")
    with pytest.raises(ValueError, match="sequence_length must be a positive int"):
        CharLMTask(sequence_length=0)


def _primitives(jaxpr) -> set[str]:
    from jax.extend.core import jaxprs_in_params

    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_kernels_are_orthogonal_without_a_qr(cell):
    # A vmapped QR (flax's orthogonal init) can hang XLA's CPU thread pool on 2 cores
    # when several run at once (an LSTM's gates): the init must not contain one.
    task = CharLMTask(cell=cell, hidden_size=16, embed_size=8, batch_size=2, sequence_length=4)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    jaxpr = jax.make_jaxpr(jax.vmap(task.init))(keys).jaxpr
    assert not _primitives(jaxpr) & {"qr", "geqrf", "geqp3", "householder_product"}
    params = jax.vmap(task.init)(keys)
    kernels = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if leaf.ndim == 3 and leaf.shape[1:] == (16, 16)  # the hidden-to-hidden kernels
    ]
    assert kernels
    for kernel in kernels:
        gram = jnp.einsum("bij,bik->bjk", kernel, kernel)
        np.testing.assert_allclose(gram, np.broadcast_to(np.eye(16), gram.shape), atol=1e-5)
