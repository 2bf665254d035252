"""The shipped checkpoints' stored shape-flow tables (trained/flows/shape-flows.json), which
the home page shows before torch is imported: equal to a fresh trace, true against a plain
forward pass, readable without torch, and never used for a card that changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from dashboard.analysis import shipped_flows
from dashboard.base import paths
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tools import shape_flows

STORED = json.loads(shipped_flows.INDEX.read_text(encoding="utf-8"))
ENTRIES = {entry["name"]: entry for entry in STORED["checkpoints"]}


def test_the_stored_tables_are_those_a_fresh_trace_gives() -> None:
    fresh = shape_flows.build_index()
    assert fresh == STORED, (
        "trained/flows/shape-flows.json is out of date: run tools/shape_flows.py"
    )
    shipped = [f"ckpt:trained/{card.path.name}" for card in checkpoints.list_checkpoints()]
    assert [entry["model_key"] for entry in STORED["checkpoints"]] == shipped  # sidebar order
    assert shipped_flows.default_key() == shipped[0]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_stored_shapes_and_counts_match_a_plain_forward_pass(name: str) -> None:
    """Every leaf layer's output shape and own parameters, found with forward hooks on the real
    model (no probe), equal the stored row's; the totals equal the model's."""
    table = ENTRIES[name]["table"]
    model = checkpoints.load_checkpoint(paths.TRAINED_DIR / f"{name}.safetensors").model
    shape = tuple(int(d) for d in table["input"].split("×"))
    seen: list[tuple[str, str, int]] = []
    hooks = [
        module.register_forward_hook(
            lambda m, _, out, name=module_name: seen.append(
                (name, "×".join(map(str, out.shape[1:])), sum(p.numel() for p in m.parameters()))
            )
        )
        for module_name, module in model.named_modules()
        if module_name and not list(module.children())
    ]
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *shape))
    finally:
        for hook in hooks:
            hook.remove()
    rows = [(row["Layer"], row["Output"], row["Params"]) for row in table["rows"]]
    assert rows == seen
    assert table["output"] == "×".join(map(str, out.shape[1:]))
    assert table["params"] == sum(p.numel() for p in model.parameters())
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert table["mult_adds"] >= sum(m.weight.numel() for m in convs)  # each weight used ≥ once


def test_a_stored_table_is_read_without_torch() -> None:
    code = (
        "import sys; from dashboard.analysis import shipped_flows as f; "
        "t = f.stored_table(f.default_key()); "
        "assert t is not None and t.rows; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print(t.label)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == STORED["checkpoints"][0]["table"]["label"]


def test_a_changed_card_is_traced_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = STORED["checkpoints"][0]["model_key"]
    assert shipped_flows.stored_table(key) is not None
    changed = json.loads(json.dumps(STORED))
    changed["checkpoints"][0]["card_sha256"] = "0" * 64  # as if the card had been edited
    index = tmp_path / "shape-flows.json"
    index.write_text(json.dumps(changed))
    monkeypatch.setattr(shipped_flows, "INDEX", index)
    assert shipped_flows.stored_table(key) is None
    assert shipped_flows.stored_table("ckpt:runs/not-shipped.safetensors") is None


@pytest.mark.parametrize("linked", [None, "vgg13-small-cifar10"])
def test_the_home_page_shows_the_stored_table_of_the_sidebars_model(linked: str | None) -> None:
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    if linked:
        app.query_params["model"] = linked
    app.run()
    assert not app.exception, app.exception
    selected = app.session_state["lens_model"]
    assert selected == (shipped_flows.key_for(linked) if linked else shipped_flows.default_key())
    table = shipped_flows.stored_table(selected)
    assert [dict(row) for row in app.dataframe[0].value.to_dict("records")] == table.rows
    assert len(app.dataframe) == 1  # drawn once, not stored and then traced
    shown = {m.label: m.value for m in app.metric}
    assert shown["Parameters"] == f"{table.params:,}"
    assert app.subheader[0].value == f"Shape flow — {table.label}"
