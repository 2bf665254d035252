"""Rewrite the cards in trained/ so that they name no folder of the machine that trained them.

Cards written before the card writer made dataset sources portable recorded absolute paths
("MNIST full set, 60,000 train images (/home/…/MNIST/raw)"), and commands with `--out trained/…`,
which `train` now refuses (runs never go to trained/; tools/train_shipped.sh trains in runs/ and
moves the files). This rewrites those two fields in place, through the card writer's own rule
(`runs.portable_source`), and touches nothing else: the weights are not opened, and every other
key keeps its value and order.

    python tools/portable_cards.py --data-root DIR   # DIR: the data root the cards came from
    python tools/portable_cards.py --check           # exit 1 if a card still needs it
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.base import paths
from dashboard.training import runs

SHIPPED_OUT = re.compile(r"--out trained/")


def portable(card: dict, data_root: str | None) -> dict:
    """The card with its dataset source and command made portable."""
    out = dict(card)
    out["dataset_source"] = runs.portable_source(card.get("dataset_source", ""), data_root)
    out["command"] = SHIPPED_OUT.sub("--out runs/", card.get("command", ""))
    return out


def write(path: Path, card: dict) -> None:
    """As the card writer writes (two-space indent, UTF-8), atomically."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(temp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="the data root the cards' datasets were read from")
    parser.add_argument("--check", action="store_true", help="only report cards to rewrite")
    args = parser.parse_args()
    stale = []
    for path in sorted(paths.TRAINED_DIR.glob("*.json")):
        card = json.loads(path.read_text(encoding="utf-8"))
        rewritten = portable(card, args.data_root)
        if rewritten == card:
            continue
        stale.append(path.name)
        if not args.check:
            write(path, rewritten)
            print(f"{path.name}: {rewritten['dataset_source']}")
    if args.check and stale:
        print(f"not portable yet: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
