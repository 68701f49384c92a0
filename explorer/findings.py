"""What should a reviewer look at first? The findings of a build, as a list.

A finding is a set of rows with a title, a severity and a sentence saying why: the outliers
(most unusual first), the images that are also in the training data, the label issues (one
finding per given -> predicted pair), and, for a build from a run, the images never learned
or forgotten again and again, and every group of near-duplicates. They are made from the
columns of OUT/default alone, so `explorer show` (as Spotlight issues), the Space (from the
`findings.json` that `explorer publish` writes) and `explorer findings` (a table, CSV or
JSON) list the same thing.

Read top to bottom: `Finding`, `findings` (one small function per kind, each over numpy
columns), then `finding_rows`, `write_rows` and `save_rows`, the flat form for the terminal,
scripts and labelling tools.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np

from explorer import output
from explorer.errors import ExplorerError
from explorer.files import written_in_place

Severity = Literal["high", "medium", "low"]
SEVERITIES = ("high", "medium", "low")  # the order findings are listed in
FORMATS = ("table", "csv", "json")
MAX_GROUPS = 50  # duplicate groups listed one by one; the rest share one finding
# outlier_score below it is a severe outlier: explorer.outliers maps an image's distance z to
# 2 ** (-z / T), so 0.5 is the is_outlier threshold T and 0.25 twice as far beyond it.
SEVERE_OUTLIER = 0.25
FORGOTTEN_OFTEN = 2  # forgotten this many times or more is a finding

# The columns findings are made from (embeddings and images are never read).
USED = (
    "label", "pred_label", "label_quality", "is_label_issue",
    "outlier_score", "is_outlier", "duplicate_group",
    "nn_reference_id", "nn_reference_distance", "is_leak",
    "confidence", "correctness", "forgetting_events",
)  # fmt: skip
# The facts `finding_rows` gives for every image, where the build wrote them.
FACTS = (
    "label", "pred_label", "outlier_score", "label_quality", "duplicate_group",
    "nn_reference_id", "forgetting_events",
)  # fmt: skip

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Finding:
    """Rows that share one reason to look at them; `rows` most important first."""

    kind: str  # outlier, leak, label_issue, never_learned, forgotten, duplicates
    title: str  # carries the count, e.g. "Outliers (12)"
    rows: list[int]  # rows of OUT/default
    severity: Severity
    description: str
    columns: list[str]  # the columns that show why (those the table has)

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready values (what `explorer publish` writes to findings.json)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The findings
# ---------------------------------------------------------------------------------------------


def findings(out: str | Path | output.Output | datasets.Dataset) -> list[Finding]:
    """The findings of an OUT folder (or of its default table), most severe first.

    Parameters
    ----------
    out : str, Path, Output or datasets.Dataset
        An OUT folder of `explorer build`, that folder read by `explorer.output.read`, or a
        table with OUT/default's columns.

    Returns
    -------
    list of Finding
        High, then medium, then low severity; within a severity in the order outliers,
        leaks, label issues, never learned, forgotten, duplicates. Empty when nothing was
        flagged. Columns a build did not write (no labels, no head, no run, no reference)
        give no finding of their kind.
    """
    table, names = _table(out)
    present = [name for name in USED if name in table.column_names]
    columns: Columns = dict(table.select_columns(present).with_format("numpy")[:])
    found: list[Finding] = []
    for kind in (_outliers, _leaks, _label_issues, _never_learned, _forgotten, _duplicates):
        found += kind(columns, names)
    shown = set(table.column_names)
    found = [_with_columns(finding, shown) for finding in found]
    return sorted(found, key=lambda finding: SEVERITIES.index(finding.severity))


def _table(out: str | Path | output.Output | datasets.Dataset) -> tuple[datasets.Dataset, list]:
    """OUT/default (or the table given) and its class names ([] without a ClassLabel)."""
    if isinstance(out, datasets.Dataset):
        table = out
    else:
        table = (out if isinstance(out, output.Output) else output.read(out)).default
    label = table.features.get("label")
    return table, list(label.names) if isinstance(label, datasets.ClassLabel) else []


def _with_columns(finding: Finding, shown: set[str]) -> Finding:
    """The finding naming only columns the table has (Spotlight shows each as a chip)."""
    return replace(finding, columns=[name for name in finding.columns if name in shown])


def _outliers(columns: Columns, names: list[str]) -> list[Finding]:
    """The outliers, in two findings: severe (high) and the rest (medium), most unusual first."""
    if not _has(columns, "is_outlier", "outlier_score"):
        return []
    score = columns["outlier_score"]
    tiers = [
        ("high", "Severe outliers", score < SEVERE_OUTLIER, "far beyond"),
        ("medium", "Outliers", score >= SEVERE_OUTLIER, "beyond"),
    ]
    result = []
    for severity, title, tier, how in tiers:
        rows = np.flatnonzero(columns["is_outlier"] & tier)
        if len(rows) == 0:
            continue
        rows = rows[np.argsort(score[rows], kind="stable")]
        result.append(
            Finding(
                "outlier",
                f"{title} ({len(rows)})",
                rows.tolist(),
                severity,  # type: ignore[arg-type]
                f"{how.capitalize()} what is typical of the reference data, in the "
                "foundation or the fine-tuned embeddings or in the pixels' brightness, "
                "contrast and sharpness (outlier_score, low = odd); most unusual first.",
                [
                    "outlier_score",
                    "outlier_score_found",
                    "outlier_score_ft",
                    "outlier_score_pixels",
                ],
            )
        )
    return result


def _leaks(columns: Columns, names: list[str]) -> list[Finding]:
    """The images that are in the reference (training) data, nearest copy first."""
    if not _has(columns, "is_leak", "nn_reference_distance"):
        return []
    rows = np.flatnonzero(columns["is_leak"])
    if len(rows) == 0:
        return []
    rows = rows[np.argsort(columns["nn_reference_distance"][rows], kind="stable")]
    return [
        Finding(
            "leak",
            f"Also in the training data ({len(rows)})",
            rows.tolist(),
            "high",
            "The image, or a near-duplicate of it, is in the reference (training) data: "
            "nn_reference_id names it. Scores on these overstate what the model generalises.",
            ["nn_reference_id", "nn_reference_distance"],
        )
    ]


def _label_issues(columns: Columns, names: list[str]) -> list[Finding]:
    """One finding per (given, predicted) pair, the largest first; lowest label quality first."""
    if not _has(columns, "is_label_issue", "label", "pred_label"):
        return []
    flagged = np.flatnonzero(columns["is_label_issue"])
    label, predicted = columns["label"], columns["pred_label"]
    quality = columns.get("label_quality", np.zeros(len(label)))
    pairs: dict[tuple[int, int], list[int]] = {}
    for row in flagged[np.argsort(quality[flagged], kind="stable")]:
        pairs.setdefault((int(label[row]), int(predicted[row])), []).append(int(row))
    result = []
    for (given, guess), rows in sorted(pairs.items(), key=lambda item: (-len(item[1]), item[0])):
        given_name, guess_name = _name(names, given), _name(names, guess)
        result.append(
            Finding(
                "label_issue",
                f"Labelled {given_name}, looks like {guess_name} ({len(rows)})",
                rows,
                "medium",
                f"Given label {given_name}; the model predicts {guess_name}. Likely mislabelled "
                "(label_quality, low = likely wrong; lowest first).",
                ["label", "pred_label", "label_quality"],
            )
        )
    return result


def _never_learned(columns: Columns, names: list[str]) -> list[Finding]:
    """The images no checkpoint predicted right, least confident first."""
    if not _has(columns, "correctness", "confidence"):
        return []
    rows = np.flatnonzero(columns["correctness"] == 0)
    if len(rows) == 0:
        return []
    rows = rows[np.argsort(columns["confidence"][rows], kind="stable")]
    return [
        Finding(
            "never_learned",
            f"Never learned ({len(rows)})",
            rows.tolist(),
            "medium",
            "No checkpoint predicted the given label: a wrong label, or a hard image "
            "(confidence, lowest first).",
            ["correctness", "confidence", "label", "pred_label"],
        )
    ]


def _forgotten(columns: Columns, names: list[str]) -> list[Finding]:
    """One finding per number of forgetting events (at least FORGOTTEN_OFTEN), most first."""
    if "forgetting_events" not in columns:
        return []
    events = columns["forgetting_events"]
    result = []
    for count in sorted({int(e) for e in events if e >= FORGOTTEN_OFTEN}, reverse=True):
        rows = np.flatnonzero(events == count).tolist()
        result.append(
            Finding(
                "forgotten",
                f"Forgotten {count} times ({len(rows)})",
                rows,
                "low",
                f"Predicted right, then wrong again, {count} times during fine-tuning: "
                "ambiguous or mislabelled.",
                ["forgetting_events", "learned_step", "label", "pred_label"],
            )
        )
    return result


def _duplicates(columns: Columns, names: list[str]) -> list[Finding]:
    """One finding per near-duplicate group, the largest first (ties: lowest group id); past
    MAX_GROUPS, one finding for all the rest."""
    if "duplicate_group" not in columns:
        return []
    group = columns["duplicate_group"]
    ids, sizes = np.unique(group[group >= 0], return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    why = ["duplicate_group", "duplicate_count", "nn_distance"]
    result = [
        Finding(
            "duplicates",
            f"Near-duplicates, group {ids[i]} ({sizes[i]})",
            np.flatnonzero(group == ids[i]).tolist(),
            "low",
            f"{sizes[i]} images with the same or nearly the same content (duplicate_group "
            f"{ids[i]}): keep one.",
            why,
        )
        for i in order[:MAX_GROUPS]
    ]
    rest = order[MAX_GROUPS:]
    if len(rest):
        rows = np.flatnonzero(np.isin(group, ids[rest])).tolist()
        result.append(
            Finding(
                "duplicates",
                f"Near-duplicates, {len(rest)} more groups ({len(rows)})",
                rows,
                "low",
                "Smaller groups of images with the same or nearly the same content: sort by "
                "duplicate_group to see each group together.",
                why,
            )
        )
    return result


def _has(columns: Columns, *names: str) -> bool:
    return all(name in columns for name in names)


def _name(names: list[str], code: int) -> str:
    return names[code] if 0 <= code < len(names) else str(code)


# ---------------------------------------------------------------------------------------------
# The flat form: one line per finding and image
# ---------------------------------------------------------------------------------------------


def finding_rows(
    out: str | Path | output.Output | datasets.Dataset, *, top: int | None = None
) -> list[dict[str, Any]]:
    """The findings, one dict per (finding, image), for the terminal, CSV or JSON.

    Parameters
    ----------
    out : str, Path, Output or datasets.Dataset
        As for `findings`.
    top : int or None, default=None
        At most that many images per finding (its first, the most important); None: all.

    Returns
    -------
    list of dict
        In the order of `findings`, each {"row", "image", "finding", "kind", "severity", and
        the FACTS the table has}: `row` is the image's row of OUT/default, `image` the file
        it came from ("" when the dataset kept none), `finding` the finding's title; labels
        are class names, floats rounded to 4 digits, a missing value (NaN) None.

    Raises
    ------
    ExplorerError
        For `top` below 1, or an OUT folder that cannot be read.
    """
    if top is not None and top < 1:
        raise ExplorerError(f"top must be at least 1, not {top}")
    table, names = _table(out)
    listed = findings(table)
    rows = sorted({row for finding in listed for row in finding.rows[:top]})
    shown = [name for name in FACTS if name in table.column_names]
    picked = table.select(rows)
    paths = dict(zip(rows, _image_paths(picked), strict=True))
    facts = {name: dict(zip(rows, picked[name], strict=True)) for name in shown}
    lines = []
    for finding in listed:
        for row in finding.rows[:top]:
            line: dict[str, Any] = {"row": row, "image": paths[row], "finding": finding.title,
                                    "kind": finding.kind, "severity": finding.severity}  # fmt: skip
            for name in shown:
                line[name] = _fact(facts[name][row], name, names)
            lines.append(line)
    return lines


def _fact(value: Any, name: str, names: list[str]) -> Any:
    """A value as the flat form shows it: a class name for a label, floats rounded, NaN None."""
    if name in ("label", "pred_label") and names and value is not None:
        return _name(names, int(value))
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def _image_paths(table: datasets.Dataset) -> list[str]:
    """The file each image came from, where the dataset kept it ("" for in-memory images)."""
    feature = table.features.get("image")
    if isinstance(feature, datasets.Image):
        import pyarrow.compute as pc

        column = table.select_columns(["image"]).with_format("arrow")[:]["image"]
        return [path or "" for path in pc.struct_field(column, "path").to_pylist()]
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        return [path or "" for path in table["image"]]
    return [""] * len(table)


def write_rows(lines: list[dict[str, Any]], format: str = "table") -> str:
    """`finding_rows` as text.

    Parameters
    ----------
    lines : list of dict
        From `finding_rows`.
    format : {"table", "csv", "json"}, default="table"
        An aligned table for the terminal ("no findings" when empty), CSV with a header
        row, or a JSON list of objects.

    Returns
    -------
    str
        The text, ending with a newline (CSV without lines: empty).
    """
    if format not in FORMATS:
        raise ExplorerError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    writers: dict[str, Callable[[list[dict[str, Any]]], str]] = {
        "table": _table_text,
        "csv": _csv_text,
        "json": lambda lines: json.dumps(lines, indent=2) + "\n",
    }
    return writers[format](lines)


def save_rows(lines: list[dict[str, Any]], file: str | Path, format: str | None = None) -> Path:
    """Write `write_rows(lines, format)` to `file`, whole or not at all; return its path.

    `format` None: from the suffix of `file` (.csv, .json), else "table".
    """
    file = Path(file)
    if format is None:
        format = {".csv": "csv", ".json": "json"}.get(file.suffix.lower(), "table")
    text = write_rows(lines, format)
    with written_in_place(file, folder=False) as partial:
        partial.write_text(text, encoding="utf-8")
    return file


def _csv_text(lines: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if lines:
        writer = csv.DictWriter(buffer, fieldnames=list(lines[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(lines)
    return buffer.getvalue()


def _table_text(lines: list[dict[str, Any]]) -> str:
    if not lines:
        return "no findings\n"
    header = list(lines[0])
    cells = [header] + [["" if line[k] is None else str(line[k]) for k in header] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )
