"""One preset of each task kind the zoo added, through `lopt train` and `lopt eval`.

One run meta-trains on a list of presets (`task_families`, one family per
kind) and validates on every one; `lopt eval` then trains the one with model
state (batch norm; each evaluated preset costs three compilations of about 5 s,
so the others are left to their own tests) with the learned optimizer and the
tuned baselines. Tiny horizons: this checks that each kind plugs into the CLI
(gin, checkpoints, model state, eval tables), not how well anything learns.
"""

from __future__ import annotations

import json
import math
import textwrap

from lopt_core.cli import main

# One per kind: transformer LM, stacked RNN, autoencoder, VAE, batch-norm ResNet (model
# state), ViT, MLP-Mixer, tabular MLP, tabular linear regression, synthetic.
PRESETS = (
    "TransformerLM_Text_L1_D16_H2",
    "CharLM_Text_LSTM64x2",
    "ImageMLPAE_Digits8_32x8x32",
    "ImageMLPVAE_Digits8_32x32x8",
    "ResNet_Digits8_BN_8x16",
    "ViT_Digits8_P2_D2_W32_H2",
    "Mixer_Digits8_P2_D2_W32_T32_C64",
    "TabularMLP_Iris_Relu16",
    "Linear_Diabetes",
    "TeacherStudent_Dim8_Relu32",
)


def test_one_preset_per_zoo_kind_trains_and_evaluates_from_the_cli(tmp_path, capsys):
    presets = ", ".join(f"@{name}()" for name in PRESETS)
    config = tmp_path / "zoo.gin"
    config.write_text(
        textwrap.dedent(
            f"""
            meta_train.task_families = [{presets}]
            meta_train.validation_families = [{presets}]
            meta_train.learned_optimizer = @LearnableSGD()
            LearnableSGD.initial_lr = 0.01
            meta_train.truncation_schedule = @ConstantTruncationSchedule()
            ConstantTruncationSchedule.length = 4
            meta_train.gradient_estimator = @TruncatedPES
            TruncatedPES.trunc_length = 2
            meta_train.num_tasks = 1
            meta_train.num_estimators = {len(PRESETS)}
            meta_train.num_steps = 1
            meta_train.validate_every = 1
            meta_train.validation_tasks = 1
            """
        )
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    (row,) = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    # Slots draw from the list at random; validation scores every preset.
    assert row["distinct_families"] >= 2 and math.isfinite(row["meta_loss"])
    (validation,) = [json.loads(r) for r in (run / "validation.jsonl").read_text().splitlines()]
    assert math.isfinite(validation["normalized_inner_valid_loss"])
    per_family = {k: v for k, v in validation.items() if "/" in k}
    assert len(per_family) == len(PRESETS), sorted(validation)
    assert all(math.isfinite(v) for v in per_family.values()), per_family
    capsys.readouterr()
    evaluated = ("ResNet_Digits8_BN_8x16",)
    args = ["eval", str(run), "--seeds", "1", "--steps", "2", "--tasks-only", "--no-progress"]
    assert main(args + [f"--task={name}" for name in evaluated]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert [t["name"] for t in report["targets"]] == list(evaluated)
    for name, target in zip(evaluated, report["targets"], strict=True):
        assert [r["optimizer"] for r in target["rows"]][:2] == ["LearnableSGD", "Adam lr=1e-3"]
        losses = {r["optimizer"]: r["test_loss_at_2x_horizon"][0] for r in target["rows"]}
        assert all(v is not None and math.isfinite(v) for v in losses.values()), (name, losses)
