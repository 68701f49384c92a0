"""explorer.spotlight (serving) and explorer.layouts, against a real Spotlight server asked
over HTTP what it serves.

One server on a free port serves the whole module: `show(..., port=viewer.port)` hands
the running server a new dataset or layout, as Spotlight does for a port it already serves.
`explorer show` (the blocking `serve`) runs in a subprocess and is stopped with SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from importlib import import_module
from pathlib import Path

import datasets
import numpy as np
import psutil
import pytest
from PIL import Image
from synthetic import CLASS_NAMES, write_synthetic_out

from explorer import layouts as ly
from explorer import spotlight as sp
from explorer.cli import main as cli_main
from explorer.errors import ExplorerError

fd = import_module("explorer.findings")  # the module; explorer.findings is the function

# The server process reads it when it starts: no analytics from tests.
os.environ["SPOTLIGHT_OPT_OUT"] = "true"

REPO = Path(__file__).resolve().parent.parent
N_IMAGES = 40
DIM = 8


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a reparented child may wait a moment to be reaped)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def as_json(layout: ly.Layout) -> dict:
    """A layout as the server returns it (JSON round trip)."""
    return json.loads(layout.model_dump_json(by_alias=True))


def widgets(layout: dict) -> list[dict]:
    """Every widget of a layout (as JSON), in order."""
    found = []

    def walk(node: dict) -> None:
        if node.get("kind") == "widget":
            found.append(node)
        for child in node.get("children", []):
            walk(child)

    walk(layout)
    return found


def tabsets(layout: dict) -> list[list[dict]]:
    """The widgets of each tab set; the first one is what the page shows."""
    found = []

    def walk(node: dict) -> None:
        if node.get("kind") == "tab":
            found.append(node["children"])
        for child in node.get("children", []):
            if child.get("kind") != "widget":
                walk(child)

    walk(layout)
    return found


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OUT folder built from a run: labels, timeline, steps 0, 10, 20."""
    return write_synthetic_out(tmp_path_factory.mktemp("out"), N_IMAGES, dim=DIM)


@pytest.fixture(scope="module")
def out_nolabel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OUT folder of a two-model build without labels: no timeline, no label columns."""
    return write_synthetic_out(tmp_path_factory.mktemp("nolabel"), 24, steps=(), labels=False)


@pytest.fixture(scope="module")
def out_planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OUT folder with planted findings and the training dynamics (tests/synthetic.py)."""
    return write_synthetic_out(
        tmp_path_factory.mktemp("planted"), N_IMAGES, findings=True, image_dynamics=True
    )


@pytest.fixture(scope="module")
def viewer(out: Path):
    viewer = sp.show(out)
    yield viewer
    viewer.close()


# ----------------------------------------------------------------- layouts, no server


def test_committed_layouts_are_up_to_date(tmp_path: Path) -> None:
    written = ly.write_layouts(tmp_path)
    assert [path.name for path in written] == [f"{name}.json" for name in ly.LAYOUT_NAMES]
    for path in written:
        committed = REPO / "layouts" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `explorer layouts --out layouts`"
        )
        parsed = ly.Layout.model_validate_json(path.read_text())
        assert as_json(parsed) == as_json(ly.LAYOUTS[path.stem]())


COLUMN_SETS = {
    "all": ly.ALL_COLUMNS,
    "no labels": tuple(
        name
        for name in ly.ALL_COLUMNS
        if name
        not in {"label", "label_str", "pred_label", "pred_prob", "label_quality", "is_label_issue"}
    ),
    "labels, no predictions": tuple(
        name
        for name in ly.ALL_COLUMNS
        if name not in {"pred_label", "pred_prob", "label_quality", "is_label_issue"}
    ),
}


@pytest.mark.parametrize("name", ly.LAYOUT_NAMES)
@pytest.mark.parametrize("column_set", list(COLUMN_SETS))
def test_layouts_fit_the_columns_and_compute_nothing_at_first(name: str, column_set: str) -> None:
    columns = COLUMN_SETS[column_set]
    layout = ly.LAYOUTS[name](columns)
    assert ly.layout_columns(layout) <= set(columns)
    data = as_json(layout)
    names = [widget["name"] for widget in widgets(data)]
    assert len(names) == len(set(names)), "widget names must be unique (the page shows them)"
    # Every layout lists the findings, where the page shows it (first in its tab set).
    assert [
        (s[0]["type"], s[0]["name"]) for s in tabsets(data) if s[0]["type"] == "IssuesWidget"
    ] == [("IssuesWidget", "Findings")]
    for tabset in tabsets(data):
        # The page shows each tab set's first widget: never a similarity map, which
        # would run UMAP/PCA in the server on load.
        assert tabset[0]["type"] != "similaritymap"
    for widget in widgets(data):
        if widget["type"] == "scatterplot" and widget["name"] != "Data map":
            x, y = widget["config"]["xAxisColumn"], widget["config"]["yAxisColumn"]
            assert x.endswith("_x") and y.endswith("_y") and x[:-2] == y[:-2]
            colour = widget["config"]["colorBy"]
            if "label" in columns:
                assert colour == "label"
            else:
                assert colour.startswith("outlier_score_")
    lens_columns = {
        column
        for widget in widgets(data)
        if widget["type"] == "inspector"
        for view in widget["config"]["views"]
        for column in view["columns"]
    }
    assert {"image", "nn_image", "outlier_score_found", "outlier_score_ft"} <= lens_columns


def test_pre_post_ft_is_the_seed_review() -> None:
    data = as_json(ly.pre_post_ft())
    types = [(widget["type"], widget["name"]) for widget in widgets(data)]
    assert types == [
        ("table", "Table"),
        ("scatterplot", "UMAP foundation"),
        ("similaritymap", "UMAP foundation: Spotlight UMAP (computes)"),
        ("scatterplot", "UMAP fine-tuned"),
        ("similaritymap", "UMAP fine-tuned: Spotlight UMAP (computes)"),
        ("IssuesWidget", "Findings"),
        ("inspector", "Inspector"),
        ("inspector", "Nearest neighbour"),
    ]
    maps = [widget["config"] for widget in widgets(data) if widget["type"] == "similaritymap"]
    assert [config["placeBy"] for config in maps] == [["embedding_foundation"], ["embedding_ft"]]
    inspectors = [widget for widget in widgets(data) if widget["type"] == "inspector"]
    first_lenses = [(view["view"], view["columns"]) for view in inspectors[0]["config"]["views"]]
    assert first_lenses[0] == ("ImageView", ["image"])
    assert ("ScalarView", ["label"]) in first_lenses
    assert inspectors[1]["config"]["views"][0]["columns"] == ["nn_image"]


def test_checkpoint_review_ranks_the_outliers_of_each_checkpoint() -> None:
    data = as_json(ly.checkpoint_review(ly.ALL_COLUMNS, ("step 0", "step 90")))
    scatter = [w for w in widgets(data) if w["type"] == "scatterplot"]
    assert [(w["name"], w["config"]["xAxisColumn"]) for w in scatter] == [
        ("PCA step 0", "pca_found_x"),
        ("PCA step 90", "pca_ft_x"),
    ]
    tables = [w for w in widgets(data) if w["type"] == "table"]
    assert [(w["name"], w["config"]["sorting"]) for w in tables] == [
        ("Top outliers step 0", [["outlier_score_found", "ASC"]]),
        ("Top outliers step 90", [["outlier_score_ft", "ASC"]]),
    ]


def test_outlier_review_shows_label_issues_only_where_present() -> None:
    data = as_json(ly.outlier_review())
    by_name = {widget["name"]: widget for widget in widgets(data)}
    assert by_name["Outliers"]["config"]["sorting"] == [["outlier_score", "ASC"]]
    assert by_name["Outliers"]["config"]["visibleColumns"][:4] == [
        "outlier_score", "outlier_score_ft", "outlier_score_found", "outlier_score_pixels",
    ]  # fmt: skip
    older = as_json(ly.outlier_review([c for c in ly.ALL_COLUMNS if c != "outlier_score"]))
    older_table = next(w for w in widgets(older) if w["name"] == "Outliers")
    assert older_table["config"]["sorting"] == [["outlier_score_ft", "ASC"]]
    histograms = [w["config"]["columnKey"] for w in widgets(data) if w["type"] == "histogram"]
    assert histograms == ["outlier_score_found", "outlier_score_ft"]
    assert by_name["Label issues"]["config"]["sorting"] == [["label_quality", "ASC"]]
    assert by_name["Label vs prediction"]["config"] == {
        "xColumn": "label",
        "yColumn": "pred_label",
        "filter": False,
    }
    without = as_json(ly.outlier_review(COLUMN_SETS["labels, no predictions"]))
    assert {w["name"] for w in widgets(without)}.isdisjoint({"Label issues", "Label vs prediction"})


def test_training_dynamics_is_the_data_map_and_the_most_forgotten_first() -> None:
    data = as_json(ly.training_dynamics())
    by_name = {widget["name"]: widget for widget in widgets(data)}
    assert [(w["type"], w["name"]) for w in widgets(data)] == [
        ("table", "Forgetting"),
        ("scatterplot", "Data map"),
        ("IssuesWidget", "Findings"),
        ("inspector", "Inspector"),
        ("inspector", "Nearest neighbour"),
    ]
    config = by_name["Data map"]["config"]
    assert (config["xAxisColumn"], config["yAxisColumn"], config["colorBy"]) == (
        "variability",
        "confidence",
        "correctness",
    )
    table = by_name["Forgetting"]["config"]
    assert table["sorting"] == [["forgetting_events", "DESC"]]
    assert table["visibleColumns"][:2] == ["forgetting_events", "learned_step"]
    assert by_name["Nearest neighbour"]["config"]["views"][0]["columns"] == ["nn_image"]


def test_a_named_layout_needs_its_columns(out: Path) -> None:
    columns = datasets.load_from_disk(str(out / "default")).column_names
    with pytest.raises(ExplorerError, match=r"layout training_dynamics needs columns .*confidence"):
        ly.resolve_layout("training_dynamics", columns)
    no_umap = [name for name in columns if not name.startswith("umap_")]
    with pytest.raises(ExplorerError, match=r"layout pre_post_ft needs columns .*umap_ft_x"):
        ly.resolve_layout("pre_post_ft", no_umap)


def test_choose_layout() -> None:
    assert ly.choose_layout(ly.ALL_COLUMNS) == "pre_post_ft"
    assert ly.choose_layout(COLUMN_SETS["no labels"]) == "pre_post_ft"
    no_umap = [name for name in ly.ALL_COLUMNS if not name.startswith("umap_")]
    assert ly.choose_layout(no_umap) == "checkpoint_review"
    assert ly.choose_layout(["image", "outlier_score_ft"]) == "outlier_review"
    assert ly.choose_layout(["image", "label"]) == "basic"


def test_dtypes_from_features(out: Path) -> None:
    features = datasets.load_from_disk(str(out / "default")).features
    dtypes = sp.spotlight_dtypes(features)
    assert set(dtypes) == {
        "image",
        "nn_image",
        "embedding_foundation",
        "embedding_ft",
        "label",
        "pred_label",
    }
    assert dtypes["embedding_ft"].length == DIM
    assert dtypes["label"].categories == {name: i for i, name in enumerate(CLASS_NAMES)}


# ----------------------------------------------------------------- bad input, no server


def test_unknown_layout_name(out: Path) -> None:
    with pytest.raises(ExplorerError, match="unknown layout 'pre_post'.*pre_post_ft"):
        sp.show(out, layout="pre_post")


def test_missing_and_wrong_folders(tmp_path: Path, out: Path) -> None:
    with pytest.raises(ExplorerError, match="does not exist.*explorer build"):
        sp.show(tmp_path / "nowhere")
    with pytest.raises(ExplorerError, match="neither an OUT folder"):
        sp.show(tmp_path)
    with pytest.raises(ExplorerError, match="is a file"):
        sp.show(out / "run.json")
    split = datasets.load_from_disk(str(out / "training_log"))
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(tmp_path / "dict")
    with pytest.raises(ExplorerError, match="several splits.*pass one split"):
        sp.show(tmp_path / "dict")


def test_layout_files_are_checked(tmp_path: Path, out_nolabel: Path) -> None:
    ly.write_layouts(tmp_path)
    with pytest.raises(ExplorerError, match="lacks .*label"):
        sp.show(out_nolabel, layout=tmp_path / "pre_post_ft.json")
    (tmp_path / "broken.json").write_text('{"children": [{"kind": "nonsense"}]}')
    with pytest.raises(ExplorerError, match="not a Spotlight layout"):
        sp.show(out_nolabel, layout=tmp_path / "broken.json")
    with pytest.raises(ExplorerError, match="does not exist"):
        sp.show(out_nolabel, layout=tmp_path / "missing.json")


def test_busy_port(out: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ExplorerError, match=f"127.0.0.1:{port}.*--port"):
            sp.show(out, port=port)


def test_cli_reports_bad_input_in_one_line(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["show", str(out), "--layout", "nope", "--no-browser"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("explorer: error: unknown layout 'nope'")


# ----------------------------------------------------------------- a real server


def test_table_lists_columns_with_dtypes(viewer, out: Path) -> None:
    dataset = datasets.load_from_disk(str(out / "default"))
    table = get_json(f"{viewer.url}api/table/")
    # Spotlight's Hugging Face data source, i.e. the Dataset itself (images read lazily).
    assert table["filename"].startswith("🤗 Dataset")
    columns = {column["name"]: column for column in table["columns"]}
    assert list(columns) == dataset.column_names
    dtypes = {name: column["dtype"]["name"] for name, column in columns.items()}
    assert dtypes["image"] == dtypes["nn_image"] == "Image"
    assert dtypes["embedding_foundation"] == dtypes["embedding_ft"] == "Embedding"
    assert columns["embedding_ft"]["dtype"]["length"] == DIM
    categories = {name: i for i, name in enumerate(CLASS_NAMES)}
    for name in ("label", "pred_label"):
        assert columns[name]["dtype"] == {"name": "Category", "categories": categories}
    for name in ("umap_found_x", "pca_ft_y", "outlier_score_ft", "nn_distance", "label_quality"):
        assert dtypes[name] == "float", name
    assert dtypes["nn_flag"] == dtypes["is_label_issue"] == "bool"
    assert dtypes["nn_id"] == "int"
    assert columns["label"]["values"] == dataset["label"]
    np.testing.assert_allclose(columns["outlier_score_ft"]["values"], dataset["outlier_score_ft"])
    # The table lists image cells without their bytes; one cell serves one image.
    assert set(columns["image"]["values"]) == {"<bytes>"}
    generation = table["generation_id"]
    with urllib.request.urlopen(
        f"{viewer.url}api/table/nn_image/3?generation_id={generation}", timeout=30
    ) as response:
        served = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    np.testing.assert_array_equal(served, np.asarray(dataset[3]["nn_image"].convert("RGB")))


def test_default_layout_is_pre_post_ft_titled_by_checkpoint(viewer, out: Path) -> None:
    sp.show(out, port=viewer.port)
    columns = datasets.load_from_disk(str(out / "default")).column_names
    served = get_json(f"{viewer.url}api/layout/")
    assert served == as_json(ly.pre_post_ft(columns, ("step 0", "step 20")))
    assert "UMAP step 20" in [widget["name"] for widget in widgets(served)]


@pytest.mark.parametrize("name", ly.LAYOUT_NAMES)
def test_named_layouts_are_served(viewer, out: Path, out_planted: Path, name: str) -> None:
    shown = out_planted if name == "training_dynamics" else out
    sp.show(shown, layout=name, port=viewer.port)
    columns = datasets.load_from_disk(str(shown / "default")).column_names
    served = get_json(f"{viewer.url}api/layout/")
    assert served == as_json(ly.LAYOUTS[name](columns, ("step 0", "step 20")))


def served_issues(viewer) -> list[tuple]:
    """The issues the server lists (what the issues widget fetches once told over the
    websocket), as (title, rows, severity, columns, description)."""
    answer = get_json(f"{viewer.url}api/issues/")
    assert answer["running"] is False, "Spotlight's own analyzers must stay off"
    keys = ("title", "rows", "severity", "columns", "description")
    return [tuple(issue[key] for key in keys) for issue in answer["issues"]]


def test_the_findings_are_the_issues_and_only_they(viewer, out_planted: Path, out: Path) -> None:
    sp.show(out_planted, port=viewer.port)
    expected = [
        (f.title, f.rows, f.severity, f.columns, f.description) for f in fd.findings(out_planted)
    ]
    assert len(expected) == 10 and served_issues(viewer) == expected
    # The plain synthetic OUT's label issues (random rows); a reused port shows the new ones.
    sp.show(out, port=viewer.port)
    titles = [issue[0] for issue in served_issues(viewer)]
    assert titles == [f.title for f in fd.findings(out)] and titles


def test_a_dataset_without_findings_clears_the_previous_issues(
    viewer, out_planted: Path, out_nolabel: Path
) -> None:
    """Spotlight 1.8 ignores `issues=[]` on a server it updates; explorer clears them."""
    sp.show(out_planted, port=viewer.port)
    assert served_issues(viewer)
    sp.show(out_nolabel, port=viewer.port)
    assert fd.findings(out_nolabel) == [] and served_issues(viewer) == []


def test_layout_file_is_served(viewer, out_planted: Path, tmp_path: Path) -> None:
    # The committed files name every column of OUT/default, as the planted OUT has them.
    path = ly.write_layouts(tmp_path)[1]
    sp.show(out_planted, layout=path, port=viewer.port)
    assert get_json(f"{viewer.url}api/layout/") == json.loads(path.read_text())


def test_dataset_without_labels_or_timeline(viewer, out_nolabel: Path) -> None:
    dataset = datasets.load_from_disk(str(out_nolabel / "default"))
    sp.show(dataset, port=viewer.port)  # a datasets.Dataset, not a folder
    table = get_json(f"{viewer.url}api/table/")
    names = [column["name"] for column in table["columns"]]
    assert names == dataset.column_names and "label" not in names
    assert len(table["columns"][0]["values"]) == 24
    served = get_json(f"{viewer.url}api/layout/")
    assert served == as_json(ly.pre_post_ft(names))
    assert ly.layout_columns(ly.Layout.model_validate(served)) <= set(names)
    colours = {w["config"]["colorBy"] for w in widgets(served) if w["type"] == "scatterplot"}
    assert colours == {"outlier_score_found", "outlier_score_ft"}
    sp.show(dataset, layout="outlier_review", port=viewer.port)
    served = get_json(f"{viewer.url}api/layout/")
    assert "Label issues" not in [widget["name"] for widget in widgets(served)]


@pytest.mark.parametrize("started_ignoring_sigint", [False, True])
def test_explorer_show_serves_until_ctrl_c(out: Path, started_ignoring_sigint: bool) -> None:
    """Ctrl-C stops the server and frees the port, also in a process started with SIGINT
    ignored (a shell's background job), which Python would otherwise leave ignored."""
    ignore = (
        (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if started_ignoring_sigint else None
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "explorer",
            "show",
            str(out),
            "--no-browser",
            "--layout",
            "outlier_review",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=ignore,
        text=True,
        cwd=REPO,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("Spotlight running on http://127.0.0.1:"), line
        assert "(layout outlier_review)" in line and "Ctrl-C" in line
        url = line.split()[3]
        served = get_json(f"{url}api/layout/")
        assert widgets(served)[0]["name"] == "Outliers"
        server_processes = psutil.Process(process.pid).children(recursive=True)
        assert server_processes, "the Spotlight server runs in a child process"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Spotlight stopped" in stdout
    assert not [child for child in server_processes if running(child)]
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still served"


def test_closing_does_not_wait_forever_for_a_server_that_does_not_answer(out: Path) -> None:
    """Spotlight's close asks the server for its table and waits without a timeout; a server
    that never answers must not keep `serve` from returning."""
    import time

    viewer = sp.show(out, browser=False)
    server = viewer._server
    process = psutil.Process(server.process.pid)
    server.get_df = lambda: threading.Event().wait()  # a server that never answers
    started = time.monotonic()
    sp._close(viewer, seconds=1)
    assert time.monotonic() - started < 10
    assert not running(process)
    port = int(viewer.url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still served"


def test_serve_stops_cleanly_on_sigterm(out_nolabel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (docker stop, systemd) ends `serve` like Ctrl-C, server and port included."""
    printed = io.StringIO()
    serving = threading.Event()

    class Stdout(io.StringIO):
        def write(self, text: str) -> int:
            printed.write(text)
            if "press Ctrl-C" in printed.getvalue():
                serving.set()
            return len(text)

    monkeypatch.setattr(sys, "stdout", Stdout())
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    served: list[dict] = []

    def terminate_once_serving() -> None:
        if serving.wait(120):
            served.append(get_json(f"http://127.0.0.1:{port}/api/layout/"))
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=terminate_once_serving, daemon=True)
    watcher.start()
    sp.serve(out_nolabel, port=port, browser=False)  # returns once SIGTERM arrives
    watcher.join(5)
    assert served and widgets(served[0])[0]["name"] == "Table"
    assert printed.getvalue().endswith("Spotlight stopped\n")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler put back
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still served"
