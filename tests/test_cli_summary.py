"""`python -m dashboard summary`: the table, the JSON, and failures as one line."""

from __future__ import annotations

import json

import torchvision

from tests.test_cli_train import run_cli


def test_summary_json_reproduces_alexnet_shapes_and_torchvision_parameters() -> None:
    result = run_cli("summary", "alexnet", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    convs_and_pools = [
        tuple(layer["output_shape"])
        for layer in payload["layers"]
        if layer["type"] in ("Conv2d", "MaxPool2d")
    ]
    assert convs_and_pools == [
        (64, 55, 55),
        (64, 27, 27),
        (192, 27, 27),
        (192, 13, 13),
        (384, 13, 13),
        (256, 13, 13),
        (256, 13, 13),
        (256, 6, 6),
    ]
    expected = sum(p.numel() for p in torchvision.models.alexnet().parameters())
    assert payload["totals"]["parameters"] == expected == 61_100_840
    assert sum(layer["parameters"] for layer in payload["layers"]) == expected
    first = payload["layers"][0]
    assert first["kernel"] == [11, 11]
    assert first["stride"] == [4, 4]
    assert first["padding"] == [2, 2]
    assert first["receptive_field"] == 11
    assert payload["broken"] is None


def test_summary_text_table_has_totals_and_formulas() -> None:
    result = run_cli("summary", "course-net")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Total parameters:     8,490" in text
    assert "⌊(28 − 5 + 2·0) / 1⌋ + 1 = 24" in text
    assert "1×28×28" in text
    assert "20×4×4" in text


def test_summary_names_the_breaking_layer_for_a_shape_the_model_cannot_take() -> None:
    result = run_cli("summary", "course-net", "--input-shape", "1,32,32", "--json")
    assert result.returncode != 0
    payload = json.loads(result.stdout)
    assert payload["broken"]["type"] == "Linear"
    assert "expects 320 features, gets 500" in payload["broken"]["reason"]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_name_lists_the_valid_ones_without_a_traceback() -> None:
    result = run_cli("summary", "lenet-7")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    for name in ("course-net", "lenet5", "resnet18-small", "tv:"):
        assert name in line


def test_bad_input_shape_is_one_line() -> None:
    result = run_cli("summary", "lenet5", "--input-shape", "1,28")
    assert result.returncode == 2
    assert "C,H,W" in result.stderr
    assert "Traceback" not in result.stderr


def test_architecture_facts_count_leaf_layers_and_parameters() -> None:
    from torch import nn

    from dashboard.analysis import summary

    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    )
    model[0].weight.requires_grad_(False)  # 2·1·3·3 = 18 frozen weights
    facts = summary.architecture_facts(model)
    assert facts["layers"] == 4  # the inner Sequential is a container, not a layer
    assert facts["kinds"] == [("Conv2d", 1), ("ReLU", 1), ("Flatten", 1), ("Linear", 1)]
    assert facts["params"] == 18 + 2 + 8 * 3 + 3 == 47
    assert facts["trainable"] == 47 - 18
    assert facts["text"] == str(model)
