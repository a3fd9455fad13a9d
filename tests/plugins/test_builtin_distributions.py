"""The built-in task distributions: draws, cost bounds, equality of equal draws, registration."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import lopt_core
from lopt_core.task_distributions import FamilyMixture
from lopt_plugins.task_distributions import (
    AugmentedDistribution,
    CharLMDistribution,
    ConvNetDistribution,
    DistributionMixture,
    ImageMLPDistribution,
    ImageTaskDistribution,
)
from lopt_plugins.task_distributions._sampling import MAX_DRAWS

KEYS = [jax.random.PRNGKey(i) for i in range(12)]


def _param_count(task) -> int:
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize(
    "make, exact",
    [
        (lambda: ImageMLPDistribution(max_params=20_000), True),
        (lambda: ConvNetDistribution(max_params=20_000), True),
        (lambda: CharLMDistribution(max_params=20_000), False),
    ],
)
def test_draws_stay_in_the_cost_bound_and_count_parameters(make, exact):
    distribution = make()
    tasks = [distribution.sample(k).task for k in KEYS]
    assert len({t.name for t in tasks}) > 1  # the architectures vary
    for task in tasks:
        cost = distribution.cost(task)
        assert cost.params <= 20_000 and cost.step_mflops <= distribution.max_step_mflops
        counted = _param_count(task)
        if exact:
            assert cost.params == counted, task.name
        else:  # flax's GRU biases differ from the textbook count a little
            assert abs(cost.params - counted) / counted < 0.1, task.name


def test_equal_keys_draw_equal_families_that_share_programs():
    distribution = ImageTaskDistribution()
    first, again = distribution.sample(KEYS[3]), distribution.sample(KEYS[3])
    assert first is not again and first == again and hash(first) == hash(again)
    names = [distribution.sample(k).name for k in KEYS]
    assert any(n.startswith("ImageMLP_") for n in names)
    assert any(n.startswith("Conv_") for n in names)


def test_powers_of_two_limit_the_distinct_widths():
    distribution = ImageMLPDistribution(depth=1, widths=(16, 64), activations="relu")
    widths = {distribution.sample(k).task.hidden_sizes for k in KEYS}
    assert widths <= {(16,), (32,), (64,)} and len(widths) > 1


def test_an_impossible_bound_fails_at_construction():
    with pytest.raises(ValueError, match=f"no draw in {MAX_DRAWS} fits max_params=100"):
        ImageMLPDistribution(max_params=100)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ImageMLPDistribution(depth=(3, 1)), r"depth must have low <= high"),
        (lambda: ImageMLPDistribution(activations=("relu", "swishy")), "unknown \\['swishy'\\]"),
        (lambda: ConvNetDistribution(poolings=()), "at least one choice"),
        (lambda: ImageMLPDistribution(image_sizes=(8, 8)), "pairs"),
        (lambda: CharLMDistribution(cells="rnn"), "the choices are lstm, gru"),
        (lambda: DistributionMixture([]), "at least one TaskDistribution"),
        (lambda: DistributionMixture([ImageMLPDistribution()], [0.0]), "not all zero"),
        (lambda: AugmentedDistribution(ImageMLPDistribution(), "x"), "augmentation must be"),
    ],
)
def test_bad_arguments_fail_with_one_line(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_mixtures_pick_among_distributions_and_weight_their_draws():
    mlp = ImageMLPDistribution(depth=1, widths=16, activations="relu")
    conv = ConvNetDistribution(depth=1, channels=8, kernel_sizes=3, poolings="mean")
    mixture = DistributionMixture([mlp, conv], probabilities=[1.0, 0.0], weights=[3.0, 1.0])
    family = mixture.sample(KEYS[0])
    assert family.name.startswith("ImageMLP_")
    assert mixture.weight(family) == pytest.approx(1.5)  # weights normalized to mean 1


def test_augmented_draws_wrap_the_family_with_the_given_probability():
    from lopt_plugins.augmentations import ReparamWeights

    base = ImageMLPDistribution(depth=1, widths=16, activations="relu")
    always = AugmentedDistribution(base, ReparamWeights, probability=1.0)
    never = AugmentedDistribution(base, ReparamWeights, probability=0.0)
    assert isinstance(always.sample(KEYS[0]), ReparamWeights)
    assert not isinstance(never.sample(KEYS[0]), ReparamWeights)
    # An augmented family of a draw trains like any family (one vmapped call).
    family = always.sample(KEYS[1])
    result = lopt_core.train_family(family, lopt_core.Adam(1e-2), KEYS[2], 2, 3)
    assert np.all(np.isfinite(np.asarray(result.train_loss)))


def test_registered_under_task_distribution():
    registry = lopt_core.get_registry()
    for name in ("FamilyMixture", "ImageTaskDistribution", "CharLMDistribution"):
        assert registry.has("task_distribution", name)
    made = registry.create("task_distribution", "FamilyMixture", families=[mlp_task()])
    assert isinstance(made, FamilyMixture)


def mlp_task():
    from lopt_plugins.tasks import ImageMLP_Digits8_Relu32

    return ImageMLP_Digits8_Relu32(batch_size=8)
