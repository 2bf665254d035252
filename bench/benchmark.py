"""CNN Lens benchmark: measures the budgets of DESIGN.md and writes bench/RESULTS.md.

    python bench/benchmark.py [--quick] [--only a,s,b,c,d,e,f,p,g,y,l,h,r,x] [--threads N]
                              [--data-root DIR]

Sections (all by default, in this order):
  a  fit() against the PyTorch tutorial loop on course-net and bn-cnn, one epoch each, alternated
  s  where a training step's time goes: input pipelines, fused optimizer, channels-last, threads
  b  time from scratch to ≥ 99.0 % MNIST test accuracy with the best recipe
  c  the confusion matrix over the 10,000 MNIST test images for the shipped small models
     (predictions not cached, and cached as the app keeps them), and a cell's gallery
  d  shape flow and every leaf's activations of resnet18 at 224×224
  e  the app: first page in Chromium after `streamlit run`, and each page's warm rerun (AppTest)
  f  the confusion-matrix page: a newly picked model's matrix, and a cell's gallery
  p  predictions kept on disk: the first classification through the result cache against
     metrics.predict alone, and the Confusion page after a server restart (CIFAR-10)
  g  every page in Chromium: a click in the sidebar to the page's figures drawn (warm caches)
  y  what recording the training dynamics (every layer's statistics) costs an epoch
  l  what the Train page's live view (filters, maps, prediction every 2 s) costs a run
  h  the channel atlas over the MNIST test set against predict, and feature visualizations
  r  representations: features of every block in one pass, PCA, t-SNE and UMAP maps, probes
  x  attribution methods, the sanity cascade, faithfulness curves, evaluation from predictions

A script, not a test: nothing here asserts. A full run writes bench/RESULTS.md; a run with
--only replaces those sections and keeps the others (read back from the raw JSON at the end of
RESULTS.md), each section saying when and under what load it was measured. --quick runs every
section small (minutes) and writes artifacts/bench-quick.md instead, for development.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Run as a script: the repository's root makes bench/ and dashboard/ importable as packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app_speed import section_e, section_f
from bench.atlas_speed import section_h
from bench.browser_speed import section_g
from bench.common import REPO, Context, Data, Report, Section, choose_threads, load, machine
from bench.explain_speed import section_x
from bench.live_speed import section_l
from bench.prediction_speed import section_c, section_d, section_p
from bench.repr_speed import section_r
from bench.training_speed import (
    section_a,
    section_b,
    section_s,
    section_y,
    thread_sweep_child,
)

RESULTS = REPO / "bench" / "RESULTS.md"


QUICK_RESULTS = REPO / "artifacts" / "bench-quick.md"


RAW_MARK = "<!-- raw results: read back by bench/benchmark.py -->"


SECTIONS = {
    "a": "fit() against the tutorial loop",
    "s": "Where a training step's time goes",
    "b": "Time to 99.0 % on MNIST",
    "c": "Confusion matrix over the MNIST test set",
    "d": "resnet18 at 224×224: shape flow and activations",
    "e": "The app: first page and warm reruns",
    "f": "Confusion-matrix page: new model and cell gallery",
    "p": "Predictions kept on disk (CIFAR-10)",
    "g": "Page switches in Chromium",
    "y": "What recording the training dynamics costs",
    "l": "What the Train page's live view costs a run",
    "h": "The channel atlas and feature visualization",
    "r": "Representations: features, maps and probes",
    "x": "Attribution and evaluation",
}


RUNNERS: dict[str, Callable[[Context, Report], None]] = {
    "a": section_a,
    "s": section_s,
    "b": section_b,
    "c": section_c,
    "d": section_d,
    "e": section_e,
    "f": section_f,
    "p": section_p,
    "g": section_g,
    "y": section_y,
    "l": section_l,
    "h": section_h,
    "r": section_r,
    "x": section_x,
}


def run_section(key: str, ctx: Context) -> Section:
    section = Section(key, SECTIONS[key], threads=ctx.threads, quick=ctx.quick)
    section.started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    section.load_start = load()
    print(f"== ({key}) {SECTIONS[key]}  load {section.load_start}", flush=True)
    rep = Report()
    start = time.perf_counter()
    try:
        RUNNERS[key](ctx, rep)
    except Exception as err:
        traceback.print_exc()
        rep.row(f"({key}) {SECTIONS[key]}", "–", "", "error", f"{type(err).__name__}: {err}")
    section.seconds = round(time.perf_counter() - start, 1)
    section.load_end = load()
    section.rows = [dataclasses.asdict(r) for r in rep.rows]
    section.text = "\n".join(rep.lines)
    section.raw = rep.raw
    return section


def read_previous(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text()
    if RAW_MARK not in text:
        return {}
    block = text.split(RAW_MARK, 1)[1]
    match = re.search(r"```json\n(.*?)\n```", block, re.S)
    return json.loads(match.group(1)) if match else {}


def under_load(sections: list[Section], cores: int) -> str:
    peak = max(max(s.load_start[0], s.load_end[0]) for s in sections)
    if peak >= cores:
        return (
            f"**Taken under load**: other developers' jobs shared the {cores} cores (1-minute "
            f"load average up to {peak:.1f}; each section gives its own). Times are wall "
            "clock, so every number here is pessimistic against a quiet machine; ratios come "
            "from alternated runs, which share the load evenly."
        )
    return f"The machine was quiet (1-minute load average ≤ {peak:.1f} on {cores} cores)."


def render(meta: dict[str, Any], sections: list[Section]) -> str:
    m = meta["machine"]
    order = [k for k in SECTIONS if any(s.key == k for s in sections)]
    by_key = {s.key: s for s in sections}
    out = [
        "# CNN Lens — benchmark results",
        "",
        f"Written by `{meta['command']}` on {meta['written']}. "
        "Re-run: `python bench/benchmark.py` (all, 15–40 min depending on the load), "
        "`--only e,f` to refresh some sections, `--quick` for a small trial run.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}; {m['logical_cpus']} logical CPUs, {m['physical_cores']} physical "
        f"cores, {m['threads_per_core']} thread(s) per core"
        + (f", {m['hypervisor']} virtual machine" if m["hypervisor"] else "")
        + f"; {m['memory_gb']} GB RAM",
        f"- Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}, "
        f"streamlit {m['streamlit']}, numpy {m['numpy']}, scikit-learn {m['sklearn']}; "
        f"oneDNN (mkldnn) {'on' if m['mkldnn'] else 'off'}; commit {m['commit']}",
        f"- torch threads: {m['torch_threads']} — {m['threads_why']}; interop threads "
        f"{m['interop_threads']}; OMP_WAIT_POLICY {m['omp_wait_policy']}",
        f"- Load average (1, 5, 15 min) at the start of this invocation: {meta['load_start']}; "
        f"at its end: {meta['load_end']} (every section below gives its own, and when it was "
        "measured)",
        "",
        under_load(sections, m["physical_cores"]),
        "",
        "## Results",
        "",
        "| what | measured | budget | result | notes |",
        "|---|---|---|---|---|",
    ]
    for key in order:
        for r in by_key[key].rows:
            out.append(
                f"| {r['what']} | {r['measured']} | {r['budget']} | {r['status']} | {r['note']} |"
            )
    for key in order:
        s = by_key[key]
        out += [
            "",
            f"## ({key}) {s.title}",
            "",
            f"_Measured {s.started}{' (quick run)' if s.quick else ''}, {s.seconds:.0f} s, "
            f"{s.threads} torch thread(s); load average {s.load_start} → {s.load_end}._",
            "",
            s.text,
        ]
    raw = {"meta": meta, "sections": [dataclasses.asdict(by_key[k]) for k in order]}
    out += [
        "",
        RAW_MARK,
        "<details><summary>Raw results (JSON)</summary>",
        "",
        "```json",
        json.dumps(raw, indent=1, default=str),
        "```",
        "</details>",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions of every section")
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: auto)")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("CNN_LENS_DATA", str(REPO.parent / "shared" / "datasets")),
        help="folder holding MNIST/raw (default: $CNN_LENS_DATA, else ../shared/datasets)",
    )
    parser.add_argument("--out", default=None, help="markdown file to write")
    parser.add_argument("--thread-sweep-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.data_root).resolve()
    if args.thread_sweep_child:
        thread_sweep_child(root, args.quick)
        return 0
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(SECTIONS)
    unknown = [k for k in keys if k not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not (root / "MNIST" / "raw").is_dir():
        parser.error(f"MNIST not found under {root} (--data-root)")
    os.environ["CNN_LENS_DATA"] = str(root)  # for the pages under AppTest and the server
    # The result cache (and decoded image folders) in a folder of the benchmark's own: every
    # run starts from an empty cache, and the user's is left alone.
    os.environ["CNN_LENS_CACHE"] = tempfile.mkdtemp(prefix="cnn-lens-bench-")
    threads, why = choose_threads(args.threads)
    torch.set_num_threads(threads)
    out = Path(args.out) if args.out else (QUICK_RESULTS if args.quick else RESULTS)
    meta = {
        "command": " ".join(
            ["python bench/benchmark.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "written": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_start": load(),
        "machine": machine(threads, why),
    }
    print(json.dumps(meta["machine"], indent=1), flush=True)
    ctx = Context(Data(root), args.quick, threads)
    try:
        fresh = [run_section(k, ctx) for k in keys]
    finally:
        shutil.rmtree(os.environ["CNN_LENS_CACHE"], ignore_errors=True)
    meta["load_end"] = load()
    kept: list[Section] = []
    if not args.quick and set(keys) != set(SECTIONS):
        previous = read_previous(out)
        for s in previous.get("sections", []):
            if s["key"] not in keys:
                kept.append(Section(**s))
    sections = sorted(kept + fresh, key=lambda s: list(SECTIONS).index(s.key))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(meta, sections))
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
