"""explorer.findings and `explorer findings`, on synthetic OUT folders with planted flags.

`write_synthetic_out(findings=True, image_dynamics=True)` plants outliers, leaks,
near-duplicate groups, label issues, never-learned and forgotten images at known rows
(tests/synthetic.py, PLANTED_*); every finding, its rows and their order are checked against
those rows, and the CLI's CSV and JSON are parsed back.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import datasets
import numpy as np
import pytest
from synthetic import CLASS_NAMES, write_synthetic_out

from explorer import cli
from explorer.errors import ExplorerError

fd = import_module("explorer.findings")  # the module; explorer.findings is the function

N_IMAGES = 40
OUTLIER = ["outlier_score", "outlier_score_found", "outlier_score_ft"]
LABEL = ["label", "pred_label", "label_quality"]
FORGOTTEN = ["forgetting_events", "learned_step", "label", "pred_label"]
DUPLICATE = ["duplicate_group", "duplicate_count", "nn_distance"]

# (kind, title, rows, severity, columns) of the planted OUT, in the order listed: high, then
# medium, then low; rows most important first.
EXPECTED = [
    ("outlier", "Severe outliers (2)", [17, 3], "high", OUTLIER),  # scores 0.05, 0.2
    ("leak", "Also in the training data (2)", [21, 8], "high",  # distances 0.0, 0.01
     ["nn_reference_id", "nn_reference_distance"]),
    ("outlier", "Outliers (2)", [30, 29], "medium", OUTLIER),  # scores 0.4, 0.45
    ("label_issue", "Labelled one, looks like two (2)", [5, 1], "medium", LABEL),  # 0.01, 0.05
    ("label_issue", "Labelled two, looks like three (1)", [2], "medium", LABEL),
    ("never_learned", "Never learned (2)", [19, 7], "medium",  # confidence 0.05, 0.1
     ["correctness", "confidence", "label", "pred_label"]),
    ("forgotten", "Forgotten 3 times (1)", [4], "low", FORGOTTEN),
    ("forgotten", "Forgotten 2 times (2)", [9, 15], "low", FORGOTTEN),
    ("duplicates", "Near-duplicates, group 1 (3)", [12, 13, 14], "low", DUPLICATE),
    ("duplicates", "Near-duplicates, group 0 (2)", [10, 11], "low", DUPLICATE),
]  # fmt: skip


def with_image_paths(out: Path) -> Path:
    """Give every image of OUT/default a file name (img_000.png, ...), as a dataset read from
    an image folder has; the pixels stay the same."""
    table = datasets.load_from_disk(str(out / "default"))
    raw = table.cast_column("image", datasets.Image(decode=False))
    named = raw.map(
        lambda row, i: {"image": {"bytes": row["image"]["bytes"], "path": f"img_{i:03d}.png"}},
        with_indices=True,
    )
    named.cast_column("image", datasets.Image()).save_to_disk(str(out / "default.new"))
    del table, raw, named
    import shutil

    shutil.rmtree(out / "default")
    (out / "default.new").rename(out / "default")
    return out


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted") / "out"
    write_synthetic_out(folder, N_IMAGES, findings=True, image_dynamics=True)
    return with_image_paths(folder)


def as_tuples(found: list[fd.Finding]) -> list[tuple]:
    return [(f.kind, f.title, f.rows, f.severity, f.columns) for f in found]


# ----------------------------------------------------------------- findings


def test_planted_flags_give_exactly_the_expected_findings(out: Path) -> None:
    assert as_tuples(fd.findings(out)) == EXPECTED


def test_an_output_and_its_table_give_the_same_findings(out: Path) -> None:
    from explorer import output

    table = datasets.load_from_disk(str(out / "default"))
    assert fd.findings(output.read(out)) == fd.findings(table) == fd.findings(str(out))


def test_label_issues_name_the_predicted_label(out: Path) -> None:
    issues = [f for f in fd.findings(out) if f.kind == "label_issue"]
    assert [f.description.split(".")[0] for f in issues] == [
        "Given label one; the model predicts two",
        "Given label two; the model predicts three",
    ]


def test_label_issues_are_grouped_by_given_and_predicted_label(tmp_path: Path) -> None:
    """The plain synthetic OUT flags random rows (pred != label): grouped by brute force."""
    write_synthetic_out(tmp_path / "out", 60)
    table = datasets.load_from_disk(str(tmp_path / "out" / "default"))
    label, pred = np.array(table["label"]), np.array(table["pred_label"])
    quality = np.array(table["label_quality"])
    pairs: dict[tuple[int, int], list[int]] = {}
    for row in np.flatnonzero(pred != label):
        pairs.setdefault((int(label[row]), int(pred[row])), []).append(int(row))
    expected = sorted(
        (
            (-len(rows), given, guess, sorted(rows, key=lambda row: quality[row]))
            for (given, guess), rows in pairs.items()
        ),
    )
    found = fd.findings(tmp_path / "out")
    assert len(expected) > 1 and all(f.kind == "label_issue" for f in found)
    assert [(f.title, f.rows) for f in found] == [
        (f"Labelled {CLASS_NAMES[given]}, looks like {CLASS_NAMES[guess]} ({-size})", rows)
        for size, given, guess, rows in expected
    ]


def test_no_findings_without_the_columns_or_the_flags(tmp_path: Path) -> None:
    write_synthetic_out(tmp_path / "nolabel", 32, steps=(), labels=False)
    assert fd.findings(tmp_path / "nolabel") == []
    # The columns are there but flag nothing.
    write_synthetic_out(tmp_path / "calm", 32, findings=True, image_dynamics=True)
    table = datasets.load_from_disk(str(tmp_path / "calm" / "default"))
    n = len(table)
    calm = (
        table.remove_columns(["is_outlier", "is_leak", "is_label_issue", "duplicate_group"])
        .add_column("is_outlier", [False] * n)
        .add_column("is_leak", [False] * n)
        .add_column("is_label_issue", [False] * n)
        .add_column("duplicate_group", [-1] * n)
        .map(lambda row: {"correctness": 0.5, "forgetting_events": 1})
    )
    assert fd.findings(calm) == []


def test_past_max_groups_the_smaller_groups_share_one_finding() -> None:
    extra = 3
    sizes = [3] + [2] * (fd.MAX_GROUPS + extra - 1)  # group 0 has 3 images, the others 2
    group = np.repeat(np.arange(len(sizes)), sizes)
    table = datasets.Dataset.from_dict({"duplicate_group": np.concatenate([[-1, -1], group])})
    found = fd.findings(table)
    assert len(found) == fd.MAX_GROUPS + 1
    assert (found[0].title, found[0].rows) == ("Near-duplicates, group 0 (3)", [2, 3, 4])
    listed = [int(f.title.split("group ")[1].split(" ")[0]) for f in found[: fd.MAX_GROUPS]]
    assert listed == list(range(fd.MAX_GROUPS))
    rest = found[-1]
    first_rest = 2 + 3 + 2 * (fd.MAX_GROUPS - 1)
    assert rest.title == f"Near-duplicates, {extra} more groups ({2 * extra})"
    assert rest.rows == list(range(first_rest, first_rest + 2 * extra))
    assert rest.columns == ["duplicate_group"]  # only the columns the table has


# ----------------------------------------------------------------- the flat form


def test_finding_rows_put_row_and_image_path_first(out: Path) -> None:
    lines = fd.finding_rows(out)
    assert [(line["finding"], line["row"]) for line in lines] == [
        (title, row) for _, title, rows, _, _ in EXPECTED for row in rows
    ]
    assert list(lines[0])[:5] == ["row", "image", "finding", "kind", "severity"]
    table = datasets.load_from_disk(str(out / "default"))
    for line in lines:
        row = line["row"]
        assert line["image"] == f"img_{row:03d}.png"
        assert line["label"] == CLASS_NAMES[table["label"][row]]
        assert line["pred_label"] == CLASS_NAMES[table["pred_label"][row]]
        assert line["outlier_score"] == round(float(table["outlier_score"][row]), 4)
        assert line["duplicate_group"] == table["duplicate_group"][row]
    first = lines[0]
    assert (first["row"], first["outlier_score"], first["severity"]) == (17, 0.05, "high")
    issue = next(line for line in lines if line["kind"] == "label_issue")
    assert (issue["row"], issue["label"], issue["pred_label"]) == (5, "one", "two")


def test_top_keeps_the_first_images_of_each_finding(out: Path) -> None:
    lines = fd.finding_rows(out, top=1)
    assert [line["row"] for line in lines] == [rows[0] for _, _, rows, _, _ in EXPECTED]
    with pytest.raises(ExplorerError, match="top must be at least 1"):
        fd.finding_rows(out, top=0)


def test_missing_values_are_null_not_nan() -> None:
    table = datasets.Dataset.from_dict(
        {"is_outlier": [True, False], "outlier_score": [0.1, 0.9], "label_quality": [np.nan, 1]}
    )
    (line,) = fd.finding_rows(table)
    assert line["label_quality"] is None and line["image"] == ""
    assert json.loads(fd.write_rows([line], "json"))[0]["label_quality"] is None


# ----------------------------------------------------------------- `explorer findings`


def test_cli_prints_an_aligned_table(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["findings", str(out), "--top", "1"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == list(fd.finding_rows(out, top=1)[0])
    assert len(text) == 1 + len(EXPECTED)
    assert text[1].split()[:2] == ["17", "img_017.png"]
    # Columns are aligned: every line has its severity where the header has "severity".
    at = text[0].index("severity")
    assert [line[at:].split()[0] for line in text[1:]] == [e[3] for e in EXPECTED]


def test_cli_csv_parses_with_the_expected_rows(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["findings", str(out), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = fd.finding_rows(out)
    assert [(line["finding"], int(line["row"]), line["image"]) for line in parsed] == [
        (line["finding"], line["row"], line["image"]) for line in expected
    ]
    assert parsed == [{key: str(value) for key, value in line.items()} for line in expected]


def test_cli_json_file_parses_with_the_expected_rows(out: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "review" / "findings.json"  # the format from the suffix
    assert cli.main(["findings", str(out), "--top", "2", "--out", str(file)]) == 0
    assert capsys.readouterr().out.strip() == str(file)
    parsed = json.loads(file.read_text())
    assert parsed == fd.finding_rows(out, top=2)
    assert [(line["kind"], line["row"]) for line in parsed][:3] == [
        ("outlier", 17),
        ("outlier", 3),
        ("leak", 21),
    ]
    assert not list(file.parent.glob(".*partial*")), "the file is written in place"
    csv_file = tmp_path / "findings.csv"
    assert cli.main(["findings", str(out), "--out", str(csv_file)]) == 0
    assert len(list(csv.DictReader(csv_file.open()))) == sum(len(e[2]) for e in EXPECTED)


def test_cli_errors_are_one_line(out: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["findings", str(out), "--top", "0"]) == 2
    assert capsys.readouterr().err == "explorer: error: top must be at least 1, not 0\n"
    assert cli.main(["findings", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("explorer: error: ")


def test_cli_formats_are_the_library_formats() -> None:
    assert cli.FINDINGS_FORMATS == fd.FORMATS


def test_findings_is_a_public_name(out: Path) -> None:
    """`import explorer; explorer.findings(OUT)` in a fresh process (the first access)."""
    code = f"import explorer; print([f.title for f in explorer.findings({str(out)!r})])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([e[1] for e in EXPECTED])


def test_public_names_stay_functions_after_their_modules_are_imported():
    # Importing a submodule sets the package's attribute of that name to the module; explorer
    # keeps its public functions instead, so explorer.findings(...) works after explorer.show.
    code = (
        "import explorer, explorer.animate, explorer.plot, explorer.demo, explorer.finetune\n"
        "explorer.show\n"
        "from explorer.findings import finding_rows\n"
        "names = ['findings', 'animate', 'plot', 'demo', 'finetune', 'show', 'build']\n"
        "print([type(getattr(explorer, n)).__name__ for n in names])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["function"] * 7)
