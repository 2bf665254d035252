"""Write trained/flows/shape-flows.json: every shipped checkpoint's shape-flow table, traced
from the real model at its card's input shape, for the home page to show without importing
torch (analysis/shipped_flows.py). Run after adding or retraining a checkpoint in trained/;
tests/test_shipped_flows.py fails while the file is out of date."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import ui
from dashboard.analysis import probe, shipped_flows
from dashboard.base import paths
from dashboard.models import checkpoints


def build_index() -> dict[str, Any]:
    """Every checkpoint of trained/ in the sidebar's order, with its sidebar label and table."""
    entries = []
    for card in checkpoints.list_checkpoints(paths.TRAINED_DIR):
        key = ui.checkpoint_key(card.path)
        model = checkpoints.load_checkpoint(card.path).model
        flow = probe.shape_flow(model, ui.input_shape_for(ui.Selection(key, card.dataset)))
        table = shipped_flows.traced_table(flow, ui.model_label(key))
        entries.append(
            {
                "model_key": key,
                "name": card.path.stem,
                "card_sha256": shipped_flows.card_digest(key),
                "table": json.loads(json.dumps(asdict(table))),
            }
        )
    return {"format": shipped_flows.FORMAT, "checkpoints": entries}


def main() -> None:
    index = shipped_flows.INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(build_index(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {index.relative_to(paths.REPO_ROOT)}")


if __name__ == "__main__":
    main()
