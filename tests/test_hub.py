"""`explorer.hub.publish` and the demo Space, on synthetic OUT folders, with no network.

The written repo is read back with `datasets.load_dataset` and compared value by value
(pixels included) with the OUT tables. The upload runs through huggingface_hub's real code
down to its HTTP client, whose transport is a fake Hub that records the requests; nothing
leaves the machine. The Space's app.py runs as a subprocess and is asked for its table and
its layout, which must be the layout `explorer show` serves for the same OUT.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import datasets
import httpx2
import huggingface_hub
import numpy as np
import pytest
import yaml
from synthetic import write_synthetic_out

from explorer import columns, enrich
from explorer import layouts as ly
from explorer.errors import ExplorerError
from explorer.hub import NO_TOKEN, publish

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "demo_space" / "app.py"
CONFIGS = ["default", "timeline", "training_log"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """An OUT folder with labels and a three-checkpoint timeline."""
    return write_synthetic_out(tmp_path_factory.mktemp("synthetic") / "out", n_images=24)


@pytest.fixture(scope="module")
def repo(out, tmp_path_factory) -> Path:
    """The repo folder that `publish(..., folder=)` writes for `out`."""
    folder = tmp_path_factory.mktemp("published") / "repo"
    assert publish(out, "someone/digits-explorer", folder=folder) == str(folder)
    return folder


def load_config(repo: Path, config: str, cache: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(repo), config, split="train", cache_dir=str(cache))


def assert_same_table(loaded: datasets.Dataset, original: datasets.Dataset) -> None:
    """Same features, rows and values; images compared pixel by pixel."""
    assert loaded.features == original.features
    assert loaded.num_rows == original.num_rows
    for name, feature in original.features.items():
        if isinstance(feature, datasets.Image):
            for got, want in zip(loaded[name], original[name], strict=True):
                assert got.size == want.size
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        else:  # NaNs (the training log's missing eval values) count as equal
            np.testing.assert_array_equal(
                np.asarray(loaded.with_format("numpy")[name]),
                np.asarray(original.with_format("numpy")[name]),
            )


def front_matter(readme: Path) -> tuple[dict, str]:
    """The card's YAML metadata, parsed, and the Markdown after it."""
    _, metadata, body = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(metadata), body


# ------------------------------------------------------------------ the repo folder


def test_every_config_loads_back_with_the_same_rows_and_features(out, repo, tmp_path):
    for config in CONFIGS:
        loaded = load_config(repo, config, tmp_path / "cache")
        assert_same_table(loaded, datasets.load_from_disk(str(out / config)))
    default = load_config(repo, "default", tmp_path / "cache")
    assert default.features["label"].names == ["zero", "one", "two", "three"]
    assert isinstance(default.features["nn_image"], datasets.Image)
    assert sorted(path.name for path in (repo / "data" / "default").iterdir()) == [
        "train-00000-of-00001.parquet"
    ]
    assert json.loads((repo / "run.json").read_text()) == json.loads((out / "run.json").read_text())


def test_card_metadata_names_the_configs_and_their_features(repo):
    metadata, _ = front_matter(repo / "README.md")
    assert [config["config_name"] for config in metadata["configs"]] == CONFIGS
    for config in metadata["configs"]:
        (data_files,) = config["data_files"]
        assert data_files["split"] == "train"
        assert list(repo.glob(data_files["path"])), data_files["path"]
    infos = {info["config_name"]: info for info in metadata["dataset_info"]}
    assert [feature["name"] for feature in infos["default"]["features"]][:3] == [
        "image",
        "label",
        "label_str",
    ]
    assert infos["default"]["features"][0]["dtype"] == "image"
    assert infos["timeline"]["splits"] == [
        {"name": "train", "num_bytes": infos["timeline"]["dataset_size"], "num_examples": 72}
    ]
    assert metadata["task_categories"] == ["image-classification"]
    assert metadata["license"] == "other"
    assert set(metadata["tags"]) >= {"spotlight", "embeddings", "outlier-detection", "explorer"}


def test_card_explains_every_column_and_how_the_data_was_made(out, repo):
    _, body = front_matter(repo / "README.md")
    tables = [("default", columns.DEFAULT), ("timeline", columns.TIMELINE)]
    tables.append(("training_log", columns.TRAINING_LOG))
    for config, meanings in tables:
        section = body.split(f"### `{config}`")[1].split("###")[0]
        for name in datasets.load_from_disk(str(out / config)).column_names:
            row = f"| `{name}` |"
            assert row in section, f"{config}.{name} missing from the card"
            line = next(line for line in section.splitlines() if line.startswith(row))
            assert line.endswith(f"| {meanings[name]} |")
    assert "`synthetic-foundation`, pooling `cls`" in body
    assert "`synthetic-finetuned`, pooling `cls`" in body
    assert "`k=10`" in body and "at steps 0, 10, 20" in body
    assert 'load_dataset("someone/digits-explorer", "default", split="train")' in body
    assert "spotlight.show(" in body


def test_layouts_and_animation_are_published(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=8, steps=(0, 5))
    (out / "animation.gif").write_bytes(b"GIF89a-not-really")
    (out / "layouts").mkdir()
    (out / "layouts" / "custom.json").write_text('{"children": []}')
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    assert (repo / "animation.gif").read_bytes() == b"GIF89a-not-really"
    assert (repo / "layouts" / "custom.json").read_text() == '{"children": []}'
    _, body = front_matter(repo / "README.md")
    assert "![The test images at every checkpoint](animation.gif)" in body
    assert "layouts/custom.json" in body


def test_published_findings_are_the_findings_of_out(tmp_path):
    """findings.json holds `explorer.findings` of OUT: planted flags, every field, in order."""
    from explorer.findings import findings

    out = write_synthetic_out(tmp_path / "out", 40, steps=(), findings=True, image_dynamics=True)
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    published = json.loads((repo / "findings.json").read_text())
    assert published == [finding.as_dict() for finding in findings(out)]
    assert [(f["title"], f["rows"]) for f in published][:2] == [
        ("Severe outliers (2)", [17, 3]),
        ("Also in the training data (2)", [21, 8]),
    ]
    assert len(published) == 10
    _, body = front_matter(repo / "README.md")
    assert "[`findings.json`](findings.json)" in body
    # Without anything flagged the file is an empty list, not missing.
    quiet = write_synthetic_out(tmp_path / "quiet", 8, steps=(), labels=False)
    assert json.loads((Path(publish(quiet, "a/b", folder=tmp_path / "r2")) / "findings.json")
                      .read_text()) == []  # fmt: skip


def test_without_labels_and_without_the_timeline(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=10, steps=(0, 4), labels=False)
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "license": "mit"}))
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo", embeddings_timeline=False))
    metadata, body = front_matter(repo / "README.md")
    assert [config["config_name"] for config in metadata["configs"]] == ["default", "training_log"]
    assert not (repo / "data" / "timeline").exists()
    assert metadata["license"] == "mit"
    assert "--no-embeddings-timeline" in body
    loaded = load_config(repo, "default", tmp_path / "cache")
    assert "label" not in loaded.column_names
    assert_same_table(loaded, datasets.load_from_disk(str(out / "default")))


def test_the_checkpoints_table_is_a_fourth_config_described_by_the_card(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=8, steps=(0, 5))
    nan = float("nan")
    table = enrich.columns_table(
        {
            "step": np.array([0, 5]),
            "epoch": np.array([0.0, 0.25]),
            "loss": np.array([nan, 1.5]),
            "accuracy": np.array([0.25, 0.75]),
            "per_class_accuracy": np.array([[0.0, 0.5, 0.5, 0.0], [1.0, 0.5, 0.5, 1.0]]),
            "knn_accuracy": np.array([0.125, 0.625]),
            "class_separation": np.array([-0.1, 0.2]),
            "mean_outlier_score": np.array([0.5, 0.4]),
            "outliers": np.array([1, 0]),
            "label_issues": np.array([6, 2]),
            "movement": np.array([nan, 0.5]),
        }
    )
    table.save_to_disk(str(out / "checkpoints"))
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    metadata, body = front_matter(repo / "README.md")
    names = [config["config_name"] for config in metadata["configs"]]
    assert sorted(names) == sorted([*CONFIGS, "checkpoints"])  # the YAML lists them sorted
    assert_same_table(load_config(repo, "checkpoints", tmp_path / "cache"), table)
    section = body.split("### `checkpoints`")[1].split("###")[0]
    for name in table.column_names:
        line = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        assert line.endswith(f"| {columns.CHECKPOINTS[name]} |")
    assert "The `checkpoints` config has one row per checkpoint" in body


def test_a_two_model_build_has_only_the_default_config(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=6, steps=())
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    metadata, _ = front_matter(repo / "README.md")
    assert [config["config_name"] for config in metadata["configs"]] == ["default"]
    with pytest.raises(ValueError):
        load_config(repo, "timeline", tmp_path / "cache")


def test_images_stored_as_file_paths_are_embedded(tmp_path):
    """An OUT whose image column points at files: the repo must carry the bytes."""
    out = write_synthetic_out(tmp_path / "out", n_images=4, steps=())
    default = datasets.load_from_disk(str(out / "default"))
    pixels = []
    for row, image in enumerate(default["image"]):
        pixels.append(np.asarray(image))
        image.save(tmp_path / f"{row}.png")
    by_path = default.remove_columns("image").add_column(
        "image", [str(tmp_path / f"{row}.png") for row in range(len(default))]
    )
    by_path = by_path.cast_column("image", datasets.Image())
    assert by_path.data.column("image")[0]["bytes"].as_py() is None  # really only a path
    by_path.save_to_disk(str(tmp_path / "by_path"))
    (out / "default").rename(tmp_path / "old_default")
    (tmp_path / "by_path").rename(out / "default")

    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    for row in range(len(default)):
        (tmp_path / f"{row}.png").unlink()
    loaded = load_config(repo, "default", tmp_path / "cache")
    for got, want in zip(loaded["image"], pixels, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_folder_is_written_whole_or_not_at_all(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=6, steps=(0, 2))
    # Damage the timeline: its table fails to load after `default` has been written.
    (arrow,) = (out / "timeline").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(ExplorerError, match="timeline"):
        publish(out, "someone/x", folder=tmp_path / "published" / "repo")
    assert list((tmp_path / "published").iterdir()) == []  # no repo, no .partial folder

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ExplorerError, match="not an empty folder"):
        publish(out, "someone/x", folder=tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_bad_input_is_an_explorer_error(tmp_path):
    with pytest.raises(ExplorerError, match="run.json"):
        publish(tmp_path, "someone/x", folder=tmp_path / "repo")
    with pytest.raises(ExplorerError, match="not a folder"):
        publish(tmp_path / "missing", "someone/x", folder=tmp_path / "repo")
    with pytest.raises(ExplorerError, match="USER/NAME"):
        publish(tmp_path, "not a repo id!", folder=tmp_path / "repo")


def strings(value) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        return [*value, *(text for item in value.values() for text in strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return [value] if isinstance(value, str) else []


def test_published_run_json_holds_no_local_paths(tmp_path):
    out = write_synthetic_out(tmp_path / "out", n_images=6, steps=(0, 3))
    run = json.loads((out / "run.json").read_text())
    run["dataset"]["source"] = "/home/someone/data/digits"
    run["request"] = {"dataset": "/home/someone/data/digits", "run": "~/runs/vit", "k": 10}
    run["run"] = "/home/someone/runs/vit"
    run["models"]["finetuned"]["name"] = "/home/someone/runs/vit/checkpoint-3"
    run["models"]["foundation"]["name"] = "google/vit-base-patch16-224"  # a hub id
    run["skipped_images"] = ["C:\\Users\\someone\\bad.png"]
    (out / "run.json").write_text(json.dumps(run))
    before = (out / "run.json").read_bytes()

    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    published = json.loads((repo / "run.json").read_text())
    assert (out / "run.json").read_bytes() == before  # OUT's own record is untouched
    assert published["dataset"]["source"] == published["request"]["dataset"] == "digits"
    assert published["request"]["run"] == published["run"] == "vit"
    assert published["models"]["finetuned"]["name"] == "checkpoint-3"
    assert published["models"]["foundation"]["name"] == "google/vit-base-patch16-224"
    assert published["skipped_images"] == ["bad.png"]
    assert published["checkpoints"] == run["checkpoints"]
    assert not [text for text in strings(published) if text.startswith(("/", "~", "C:"))]
    card = (repo / "README.md").read_text(encoding="utf-8")
    assert "someone/data" not in card and "/home/" not in card
    assert "`checkpoint-3`" in card


def test_published_layouts_name_only_the_columns_published(tmp_path):
    """An OUT without UMAP coordinates: no pre_post_ft (its maps would name missing columns),
    and default.json is what `explorer show` opens for it, titled by the checkpoints."""
    out = write_synthetic_out(tmp_path / "out", n_images=8, steps=(0, 4), labels=False)
    default = datasets.load_from_disk(str(out / "default"))
    umap = [name for name in default.column_names if name.startswith("umap_")]
    default.remove_columns(umap).save_to_disk(str(tmp_path / "no_umap"))
    (out / "default").rename(tmp_path / "old_default")
    (tmp_path / "no_umap").rename(out / "default")
    names = datasets.load_from_disk(str(out / "default")).column_names

    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    written = sorted(path.name for path in (repo / "layouts").iterdir())
    assert written == ["checkpoint_review.json", "default.json", "outlier_review.json"]
    for path in (repo / "layouts").iterdir():
        layout = ly.Layout.model_validate_json(path.read_text())
        assert ly.layout_columns(layout) <= set(names), path.name
    expected = ly.resolve_layout(None, names, ("step 0", "step 4"))
    assert expected[0] == "checkpoint_review"
    assert (repo / "layouts" / "default.json").read_text() == ly.layout_json(expected[1])
    _, body = front_matter(repo / "README.md")
    assert "`layouts/default.json` is `checkpoint_review`" in body


# ------------------------------------------------------------------ the upload


class FakeHub:
    """The Hub's HTTP API as far as `create_repo` + `upload_folder` use it; records requests.

    `remote_files` are the files the repo already has (listed when stale files are deleted).
    """

    def __init__(self, remote_files: tuple[str, ...] = ()) -> None:
        self.remote_files = remote_files
        self.requests: list[tuple[str, str]] = []
        self.created: dict | None = None
        self.authorization: set[str] = set()
        self.uploaded: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self.refuse_with: int | None = None  # answer every request with this status

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        body = request.read()
        self.requests.append((request.method, path))
        if self.refuse_with:
            return httpx2.Response(self.refuse_with, json={"error": "Invalid credentials"})
        if request.headers.get("authorization"):
            self.authorization.add(request.headers["authorization"])
        if path == "/api/repos/create":
            self.created = json.loads(body)
            name = f"{self.created['organization']}/{self.created['name']}"
            return httpx2.Response(200, json={"url": f"https://huggingface.co/datasets/{name}"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if path.endswith("/tree/main"):
            return httpx2.Response(
                200,
                json=[
                    {"type": "file", "path": p, "size": 1, "oid": "0"} for p in self.remote_files
                ],
            )
        if path.endswith("/preupload/main"):
            files = json.loads(body)["files"]  # every file small enough for a regular upload
            modes = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            return httpx2.Response(200, json={"files": modes})
        if path.endswith("/commit/main"):
            for line in body.splitlines():
                operation = json.loads(line)
                value = operation["value"]
                if operation["key"] == "file":
                    self.uploaded[value["path"]] = base64.b64decode(value["content"])
                elif operation["key"] == "deletedFile":
                    self.deleted.append(value["path"])
            repo_id = path.removeprefix("/api/datasets/").removesuffix("/commit/main")
            commit = f"https://huggingface.co/datasets/{repo_id}/commit/0123"
            return httpx2.Response(200, json={"commitUrl": commit, "commitOid": "0123"})
        return httpx2.Response(404, json={"error": f"the fake Hub has no {path}"})


@pytest.fixture
def fake_hub():
    """Route every huggingface_hub request to a `FakeHub`; restore the real client after."""
    hub = FakeHub(remote_files=("data/default/train-00001-of-00002.parquet", "README.md"))
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=httpx2.MockTransport(hub), follow_redirects=True)
    )
    huggingface_hub.set_async_client_factory(
        lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(hub))
    )
    yield hub
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
    huggingface_hub.set_async_client_factory(
        huggingface_hub.utils._http.default_async_client_factory
    )


@pytest.mark.parametrize("private", [True, False])
def test_upload_creates_the_dataset_repo_and_commits_the_folder(
    out, repo, fake_hub, private, tmp_path
):
    url = publish(out, "someone/digits-explorer", private=private, token="hf_test_token")
    assert url == "https://huggingface.co/datasets/someone/digits-explorer"
    assert fake_hub.created["type"] == "dataset"
    assert fake_hub.created["organization"] == "someone"
    assert fake_hub.created["name"] == "digits-explorer"
    assert (fake_hub.created.get("visibility") == "private") is private
    assert fake_hub.authorization == {"Bearer hf_test_token"}
    commits = [path for method, path in fake_hub.requests if path.endswith("/commit/main")]
    assert commits == ["/api/datasets/someone/digits-explorer/commit/main"]

    # The commit carries the very repo that --folder writes...
    written = {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}
    assert set(fake_hub.uploaded) == written
    assert fake_hub.uploaded["README.md"] == (repo / "README.md").read_bytes()
    # ...drops the stale shard of an earlier publish, and keeps files outside data/ and layouts/.
    assert fake_hub.deleted == ["data/default/train-00001-of-00002.parquet"]
    # What was sent loads back as the OUT tables.
    for name, content in fake_hub.uploaded.items():
        (tmp_path / "sent" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sent" / name).write_bytes(content)
    for config in CONFIGS:
        loaded = load_config(tmp_path / "sent", config, tmp_path / "cache")
        assert_same_table(loaded, datasets.load_from_disk(str(out / config)))


def test_hub_errors_become_one_line_explorer_errors(out, fake_hub):
    fake_hub.refuse_with = 401
    with pytest.raises(ExplorerError, match="publishing to someone/x failed") as error:
        publish(out, "someone/x", token="hf_bad")
    assert "\n" not in str(error.value)


def test_no_token_is_an_explorer_error_before_anything_is_sent(
    out, fake_hub, monkeypatch, tmp_path
):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    # Hide a login cached on this machine.
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ExplorerError) as error:
        publish(out, "someone/x")
    assert str(error.value) == NO_TOKEN
    assert fake_hub.requests == []


def test_the_token_is_taken_from_hf_token(out, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    publish(out, "someone/x")
    assert fake_hub.authorization == {"Bearer hf_from_env"}


# ------------------------------------------------------------------ the Space


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def widgets(node: dict) -> list[tuple[str, str | None]]:
    """(type, name) of every widget in a layout, depth first."""
    if node.get("kind") == "widget":
        return [(node["type"], node.get("name"))]
    return [found for child in node.get("children", []) for found in widgets(child)]


def space_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    return {
        **env,
        "HOME": str(tmp_path / "home"),  # Spotlight's settings and the datasets cache
        "HF_HUB_OFFLINE": "1",
        "SPOTLIGHT_OPT_OUT": "true",
        **settings,
    }


def space_serves(repo: Path, tmp_path: Path) -> tuple[dict, dict, dict]:
    """Run the Space's app.py on the repo folder; (its `api/table/`, `api/layout/`,
    `api/issues/`)."""
    port = free_port()
    log = tmp_path / "app.log"
    env = space_env(tmp_path, HF_DATASET=str(repo), HOST="127.0.0.1", PORT=str(port))
    with log.open("w") as output:
        app = subprocess.Popen(
            [sys.executable, str(APP)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Spotlight's server goes with it
        )
    try:
        url = f"http://127.0.0.1:{port}/api/"
        deadline = time.monotonic() + 180
        while True:
            assert app.poll() is None, f"app.py exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url + "table/", timeout=10) as response:
                    table = json.load(response)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no table after 180 s:\n{log.read_text()}"
                time.sleep(0.5)
        with urllib.request.urlopen(url + "layout/", timeout=10) as response:
            served_layout = json.load(response)
        with urllib.request.urlopen(url + "issues/", timeout=10) as response:
            issues = json.load(response)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
    return table, served_layout, issues


def test_space_serves_the_published_dataset(out, repo, tmp_path):
    table, served_layout, issues = space_serves(repo, tmp_path)
    default = datasets.load_from_disk(str(out / "default"))
    served = {column["name"]: column["dtype"]["name"] for column in table["columns"]}
    assert list(served) == default.column_names
    assert served["image"] == served["nn_image"] == "Image"
    assert served["label"] == "Category"
    assert served["embedding_ft"] == "Embedding"
    assert len(table["columns"][0]["values"]) == default.num_rows
    # The layout is the dataset's own pre_post_ft (the Space ships none).
    expected = repo / "layouts" / "pre_post_ft.json"
    assert widgets(served_layout) == widgets(json.loads(expected.read_text()))
    # The findings of OUT (the synthetic label issues), as Spotlight issues, and no others.
    from explorer.findings import findings

    keys = ("title", "rows", "severity", "columns", "description")
    found = [{key: getattr(finding, key) for key in keys} for finding in findings(out)]
    assert found and issues == {"running": False, "issues": found}


def test_space_serves_the_layout_explorer_show_serves(tmp_path, monkeypatch):
    """Without labels the layout colours by outlier score and titles by checkpoint: the
    Space must serve exactly what `explorer show OUT` serves, naming only served columns."""
    from explorer import spotlight

    monkeypatch.setenv("SPOTLIGHT_OPT_OUT", "true")  # read by the server process
    out = write_synthetic_out(tmp_path / "out", n_images=12, steps=(0, 7), labels=False)
    repo = Path(publish(out, "someone/x", folder=tmp_path / "repo"))
    viewer = spotlight.show(out)
    try:
        with urllib.request.urlopen(f"{viewer.url}api/layout/", timeout=30) as response:
            shown = json.load(response)
    finally:
        viewer.close()

    table, served, _ = space_serves(repo, tmp_path)
    assert served == shown
    names = {column["name"] for column in table["columns"]}
    assert "label" not in names
    assert ly.layout_columns(ly.Layout.model_validate(served)) <= names
    scatter = [node for node in widgets(served) if node[0] == "scatterplot"]
    assert scatter == [("scatterplot", "UMAP step 0"), ("scatterplot", "UMAP step 7")]


def test_space_without_a_dataset_says_what_to_set(tmp_path):
    done = subprocess.run(
        [sys.executable, str(APP)], env=space_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "set HF_DATASET" in done.stderr
