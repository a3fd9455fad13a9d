"""Tests for the byte-level transformer LMs, their distribution and the stacked char RNNs."""

from __future__ import annotations

import math
import pickle

import jax
import numpy as np
import pytest

import lopt_core
from lopt_plugins import datasets
from lopt_plugins.task_distributions.transformer_lm import TransformerLMDistribution
from lopt_plugins.tasks import char_lm, transformer_lm
from lopt_plugins.tasks.transformer_lm import TransformerLMTask

KEY = jax.random.PRNGKey(0)

# The parameter counts docs/_zoo_text.md gives (at each preset's default sequence length).
TRANSFORMER_PARAMS = {
    "TransformerLM_Text_L1_D16_H2": 12_272,
    "TransformerLM_Text_L2_D32_H2": 44_160,
    "TransformerLM_Text_L4_D64_H4": 237_184,
    "TransformerLM_Text_L4_D128_H8": 875_520,
}
DEEP_RNN_PARAMS = {
    "CharLM_Text_LSTM64x2": 82_688,
    "CharLM_Text_LSTM128x2": 255_232,
    "CharLM_Text_GRU64x3": 93_184,
    "CharLM_Text_GRU128x2": 201_984,
}


def _param_count(task) -> int:
    shapes = jax.eval_shape(task.init, KEY)
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


def tiny(**kwargs) -> TransformerLMTask:
    args = dict(num_layers=1, d_model=16, num_heads=2, batch_size=8, sequence_length=32)
    return TransformerLMTask(**{**args, **kwargs})


def test_init_loss_is_log_vocab_and_adam_lowers_it():
    task = tiny()
    assert task.vocab_size == 256 and task.name == "TransformerLM_Text_L1_D16_H2"
    result = lopt_core.train(
        task, lopt_core.Adam(3e-3), KEY, num_steps=100, eval_every=100, num_eval_batches=4
    )
    init_loss, final_loss = np.asarray(result.inner_valid_loss)
    assert np.isfinite(init_loss) and abs(init_loss - math.log(256)) < 0.2, init_loss
    assert abs(float(task.normalizer(init_loss)) - 1.0) < 0.05
    # Measured: 5.56 -> 2.92 (byte frequencies and common bigrams of source code).
    assert np.isfinite(final_loss) and final_loss < 0.65 * init_loss, (init_loss, final_loss)


def test_attention_is_causal():
    task = tiny(num_layers=2, sequence_length=16)
    tokens = jax.random.randint(KEY, (2, 16), 0, 256)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 256)

    @jax.jit
    def logits(key, a, b):
        params = task.init(key)
        return task.module.apply(params, a), task.module.apply(params, b)

    before, after = logits(KEY, tokens, changed)
    assert before.shape == (2, 16, 256)
    np.testing.assert_allclose(before[:, :9], after[:, :9], atol=1e-6)  # the past is untouched
    assert np.abs(np.asarray(before[:, 9:] - after[:, 9:])).max(axis=-1).min() > 1e-6


def test_train_family_over_eight_seeds_in_one_call():
    task = tiny(d_model=8, num_heads=1, batch_size=2, sequence_length=8)
    family = lopt_core.single_task_to_family(task)
    adam = lopt_core.Adam(1e-3)
    result = lopt_core.train_family(family, adam, KEY, 8, 3, eval_splits=("inner_valid",))
    losses = np.asarray(result.train_loss)
    assert losses.shape == (8, 3) and np.all(np.isfinite(losses))
    assert len(np.unique(losses[:, 0])) > 1  # each seed has its own init and batches


def _primitives(jaxpr) -> set[str]:
    from jax.extend.core import jaxprs_in_params

    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


def test_vmapped_init_has_no_qr():
    # XLA's CPU QR can hang a vmapped init on 2 cores (see _common.orthogonal_init).
    jaxpr = jax.make_jaxpr(jax.vmap(tiny().init))(jax.random.split(KEY, 3)).jaxpr
    assert not _primitives(jaxpr) & {"qr", "geqrf", "geqp3", "householder_product"}


@pytest.mark.parametrize("name", sorted(TRANSFORMER_PARAMS))
def test_presets_have_the_documented_parameter_counts(name):
    cls = transformer_lm.PRESETS[name]
    task = cls()
    assert task.name == name and type(task).__name__ == name
    assert _param_count(task) == task.num_params == TRANSFORMER_PARAMS[name]
    assert pickle.loads(pickle.dumps(cls)) is cls  # importable by name
    assert cls(batch_size=4) == cls(batch_size=4) != cls(batch_size=8)


def test_equal_arguments_make_equal_tasks():
    first, again = tiny(), tiny()
    assert first == again and hash(first) == hash(again)
    assert first != tiny(num_heads=4) and first != tiny(mlp_ratio=2)
    assert tiny(mlp_ratio=2).name == "TransformerLM_Text_L1_D16_H2_M2"
    assert "d_model=16" in repr(first)


def test_takes_a_datasets_object_of_shorter_sequences():
    data = datasets.text(batch_size=2, sequence_length=8)
    task = TransformerLMTask(data, num_layers=1, d_model=8, num_heads=1, sequence_length=16)
    assert task.datasets is data and task.name == "TransformerLM_Text_L1_D8_H1"
    loss = jax.jit(lambda k, b: task.loss(task.init(k), k, b))(KEY, next(data.train))
    assert np.isfinite(loss)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide d_model \(16\)"):
        tiny(num_heads=3)
    with pytest.raises(ValueError, match="d_model must be a positive int"):
        tiny(d_model=0)
    with pytest.raises(ValueError, match="Unknown text dataset 'wiki'"):
        TransformerLMTask("wiki")


def test_distribution_draws_stay_in_bounds_with_exact_parameter_counts():
    distribution = TransformerLMDistribution(max_params=60_000, max_step_mflops=200.0)
    tasks = [distribution.sample(jax.random.PRNGKey(i)).task for i in range(12)]
    assert len({t.name for t in tasks}) > 1
    for task in tasks:
        assert 1 <= task.num_layers <= 4 and task.d_model in (16, 32, 64, 128)
        assert task.d_model % task.num_heads == 0 and task.sequence_length in (32, 64, 128)
        cost = distribution.cost(task)
        assert cost.params <= 60_000 and cost.step_mflops <= 200.0
        assert cost.params == _param_count(task), task.name
    again = distribution.sample(jax.random.PRNGKey(3))
    assert again == distribution.sample(jax.random.PRNGKey(3))


def test_distribution_cost_counts_attention():
    distribution = TransformerLMDistribution()
    task = tiny(batch_size=2, sequence_length=32)
    # Per token: 12 d^2 (block matmuls) + 2 T d (attention) + d V (logits) multiply-adds.
    macs = 12 * 16**2 + 2 * 32 * 16 + 16 * 256
    assert distribution.cost(task).step_mflops == pytest.approx(6 * macs * 64 / 1e6)
    with pytest.raises(ValueError, match="no draw in"):
        TransformerLMDistribution(max_params=1_000)


@pytest.mark.parametrize("name", sorted(DEEP_RNN_PARAMS))
def test_stacked_char_rnn_presets(name):
    cls = char_lm.PRESETS[name]
    task = cls(batch_size=2, sequence_length=8)
    assert task.name == name and task.num_layers in (2, 3)
    assert _param_count(task) == DEEP_RNN_PARAMS[name]
    assert pickle.loads(pickle.dumps(cls)) is cls
