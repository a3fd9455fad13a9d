"""Task distributions from gin: `task_families = [...]`, `task_distribution = @...`, and eval."""

from __future__ import annotations

import json
import textwrap

from lopt_core.cli import main

BASE = """
    meta_train.learned_optimizer = @LearnableSGD()
    LearnableSGD.initial_lr = 0.05
    meta_train.truncation_schedule = @ConstantTruncationSchedule()
    ConstantTruncationSchedule.length = 6
    meta_train.gradient_estimator = @TruncatedPES
    TruncatedPES.trunc_length = 3
    meta_train.num_tasks = 2
    meta_train.num_estimators = 2
    meta_train.num_steps = 4
    meta_train.checkpoint_every = 2
    meta_train.validate_every = 4
    meta_train.validation_tasks = 2
"""


def _config(path, *lines):
    path.write_text(textwrap.dedent(BASE) + "\n".join(lines) + "\n")
    return path


def test_task_families_list_in_gin_trains_resumes_and_evaluates(tmp_path, capsys):
    config = _config(
        tmp_path / "families.gin",
        "meta_train.task_families = [@a/FixedDimQuadraticFamily(), @b/FixedDimQuadraticFamily()]",
        "a/FixedDimQuadraticFamily.dim = 2",
        "b/FixedDimQuadraticFamily.dim = 5",
        "meta_train.family_weights = [1.0, 2.0]",
        "meta_train.resample_every = 2",
        "meta_train.validation_families = [@QuadraticTask()]",
        "QuadraticTask.dim = 3",
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert any(k.startswith("meta_loss/FixedDimQuadraticFamily_Dim") for k in rows[0])
    args = ["train", str(config), "-o", str(run), "--resume", "--no-progress"]
    assert main(args + ["-p", "meta_train.num_steps = 6"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6
    capsys.readouterr()
    # `lopt eval` of a distribution run: its validation families.
    assert main(["eval", str(run), "--seeds", "2", "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert [t["name"] for t in report["targets"]] == ["QuadraticTask_Dim3 (held-out tasks)"]


def test_a_registered_distribution_in_gin(tmp_path):
    config = _config(
        tmp_path / "distribution.gin",
        "meta_train.task_distribution = @ImageMLPDistribution()",
        "ImageMLPDistribution.depth = 1",
        "ImageMLPDistribution.widths = (8, 16)",
        "ImageMLPDistribution.batch_sizes = (8,)",
        "ImageMLPDistribution.activations = ('relu',)",
        "meta_train.validation_families = 1",
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    (row,) = [json.loads(r) for r in (run / "validation.jsonl").read_text().splitlines()]
    assert 0.0 <= row["normalized_inner_valid_loss"] <= 1.5


def test_two_task_sources_in_gin_is_a_one_line_error(tmp_path, capsys):
    config = _config(
        tmp_path / "both.gin",
        "meta_train.task_family = @FixedDimQuadraticFamily()",
        "meta_train.task_families = [@FixedDimQuadraticFamily()]",
    )
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "lopt: error:" in err and "exactly one of task_family" in err


def test_the_mixture_recipe_draws_three_architectures_with_augmentation():
    import jax

    from helpers import REPO_ROOT
    from lopt_core.gin_config import parse_config
    from lopt_core.run_report import query_built

    parse_config([REPO_ROOT / "gin" / "mixture_pes.gin"])
    distribution = query_built("meta_train.task_distribution")
    names = [distribution.sample(jax.random.PRNGKey(i)).name for i in range(40)]
    for kind in ("ImageMLP_", "Conv_", "CharLM_"):
        assert any(kind in n for n in names), kind
    assert any(n.startswith("ReparamWeights(") for n in names)
    assert any(not n.startswith("ReparamWeights(") for n in names)
    held_out = [f.name for f in query_built("meta_train.validation_families")]
    assert not set(held_out) & {n.removeprefix("ReparamWeights(").rstrip(")") for n in names}
