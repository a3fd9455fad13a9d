"""meta_train from another run's theta (initial_theta), with parts of theta frozen."""

from __future__ import annotations

import numpy as np
import pytest

from lopt_core import meta_train
from lopt_core.outer.theta_init import frozen_mask
from toys import QuadraticFamily, ToyLearnableAdam, build_args


def _run(output_dir, num_steps=3, **kwargs):
    args = build_args(QuadraticFamily(), ToyLearnableAdam(initial_lr=0.01))
    return meta_train(output_dir, **args, num_steps=num_steps, progress=False, **kwargs)


def _theta(result):
    return {k: float(v) for k, v in result.state.theta.items()}


def test_initial_theta_starts_from_another_runs_checkpoint(tmp_path):
    first = _run(tmp_path / "first")
    fresh = _run(tmp_path / "fresh", num_steps=1)
    path = tmp_path / "first" / "checkpoints" / "latest.msgpack"
    second = _run(tmp_path / "second", num_steps=1, initial_theta=str(path))
    # One step from the first run's theta, not from the learned optimizer's init.
    moved = lambda r, start: max(abs(_theta(r)[k] - start[k]) for k in start)
    assert moved(second, _theta(first)) < moved(fresh, _theta(first))
    assert moved(second, _theta(first)) < 0.05
    with pytest.raises(FileNotFoundError, match="initial_theta: no checkpoint at"):
        _run(tmp_path / "third", initial_theta=str(tmp_path / "nope.msgpack"))


def test_frozen_theta_leaves_the_named_parts_unchanged(tmp_path):
    start = {k: float(v) for k, v in ToyLearnableAdam(initial_lr=0.01).init(None).items()}
    result = _run(tmp_path / "run", frozen_theta=["log_lr", "log_epsilon"])
    theta = _theta(result)
    assert theta["log_lr"] == start["log_lr"] and theta["log_epsilon"] == start["log_epsilon"]
    assert theta["log_one_minus_beta1"] != start["log_one_minus_beta1"]  # the rest trains


def test_frozen_theta_names_are_checked():
    with pytest.raises(ValueError, match="'mlp' names no part of theta; its parts are log_"):
        _run("/nonexistent", frozen_theta=["mlp"])
    with pytest.raises(ValueError, match="freezes all of theta"):
        _run("/nonexistent", frozen_theta=["log_lr", "log_one_minus_beta1",
                                          "log_one_minus_beta2", "log_epsilon"])  # fmt: skip
    with pytest.raises(TypeError, match="list of parts of theta"):
        _run("/nonexistent", frozen_theta="log_lr")


def test_frozen_mask_matches_key_prefixes():
    theta = {"mlp": {"params": {"Dense_0": np.zeros(2), "Dense_1": np.zeros(2)}}, "lr": 0.0}
    mask = frozen_mask(theta, ["mlp/params/Dense_0"])
    assert mask == {"mlp": {"params": {"Dense_0": True, "Dense_1": False}}, "lr": False}
    assert frozen_mask(theta, ["mlp"])["mlp"]["params"]["Dense_1"] is True
