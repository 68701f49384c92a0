"""Hugging Face Space: serve a dataset published by `explorer publish` in Renumics Spotlight.

Standalone on purpose (needs renumics-spotlight and datasets, not explorer). The layout
and the findings come from the dataset repo: `explorer publish` writes `layouts/default.json`,
the layout `explorer show` opens for that data, made by the same code for the columns the
repo has, and `findings.json`, the findings `explorer show` lists as Spotlight issues
(outliers, leaks, label issues, near-duplicates, ...), so the Space shows what `explorer show`
shows. Settings come from the environment (Space variables; HF_TOKEN as a secret for a
private dataset):

    HF_DATASET  Hub dataset id (USER/NAME) or local folder: a published repo folder, or a
                `save_to_disk` folder such as OUT/default. Required.
    HF_CONFIG   config to show (default: "default")
    HF_SPLIT    split to show (default: "train")
    LAYOUT      layout name looked up in the dataset's layouts/, or a JSON file. Default:
                "default" for the default config; for another config (other columns)
                none, i.e. Spotlight's own.
    HOST, PORT  where to serve (default: 0.0.0.0:7860, what Spaces expect)

Runs until stopped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
from huggingface_hub import hf_hub_download
from renumics import spotlight
from renumics.spotlight.analysis.typing import DataIssue

FINDINGS = "findings.json"  # written by `explorer publish`; rows of the default config
ISSUE_FIELDS = ("title", "rows", "severity", "description", "columns")


def load(source: str, config: str, split: str) -> datasets.Dataset:
    """The table to show: a `save_to_disk` folder as is, else `load_dataset(source, config)`."""
    if (Path(source) / "dataset_info.json").is_file():
        return datasets.load_from_disk(source)
    return datasets.load_dataset(source, config, split=split)


def repo_file(source: str, relative: str) -> str | None:
    """Path of the file `relative` in the dataset repo (a local folder or a Hub id), or None
    when it has none: a layout or findings are not worth failing for."""
    if Path(source).is_dir():
        path = Path(source) / relative
        return str(path) if path.is_file() else None
    try:
        return hf_hub_download(source, relative, repo_type="dataset")
    except Exception as error:  # no such file, or offline
        print(f"app: no {relative} in {source}: {type(error).__name__}", file=sys.stderr)
        return None


def find_layout(source: str, name: str) -> str | None:
    """Path of the layout `name` (a name in the dataset's layouts/, or a .json file), or
    None to use Spotlight's default."""
    if name.endswith(".json"):
        return name if Path(name).is_file() else None
    return repo_file(source, f"layouts/{name}.json")


def find_issues(source: str) -> list[DataIssue]:
    """The repo's findings as Spotlight issues, most severe first; [] without findings.json."""
    path = repo_file(source, FINDINGS)
    if path is None:
        return []
    listed = json.loads(Path(path).read_text(encoding="utf-8"))
    return [DataIssue(**{key: finding[key] for key in ISSUE_FIELDS}) for finding in listed]


def main() -> None:
    """Load the dataset named by the environment and serve it until the process is stopped."""
    source = os.environ.get("HF_DATASET")
    if not source:
        sys.exit("app: set HF_DATASET to a dataset id (USER/NAME) or a local folder")
    config, split = os.environ.get("HF_CONFIG", "default"), os.environ.get("HF_SPLIT", "train")
    dataset = load(source, config, split)
    # The published layouts are made for the columns of `default`: another config gets
    # Spotlight's own layout unless one is asked for.
    name = os.environ.get("LAYOUT", "default" if config == "default" else "")
    layout = find_layout(source, name) if name else None
    # The findings name rows of `default`: another config's rows are other rows.
    issues = find_issues(source) if config == "default" else []
    shown = layout or "Spotlight's own"
    print(
        f"app: {len(dataset)} rows from {source}, layout {shown}, {len(issues)} findings",
        flush=True,
    )
    spotlight.show(
        dataset,
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "7860")),
        layout=layout,
        no_browser=True,
        no_ssl=True,  # the Space's proxy terminates TLS
        allow_filebrowsing=False,  # visitors must not browse the container's files
        analyze=False,  # Spotlight's own analyzers: the published findings instead
        issues=issues,
        wait="forever",
    )


if __name__ == "__main__":
    main()
