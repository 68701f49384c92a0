"""Publish an enriched OUT folder as a Hugging Face dataset repo.

`publish(out, repo_id)` turns the tables of `explorer build` (OUT/default, OUT/timeline,
OUT/training_log, OUT/checkpoints: `save_to_disk` folders) into a Hub dataset repo and uploads
it:

    README.md                      dataset card: YAML (configs, features, license, tags) + docs
    data/<config>/train-*.parquet  one config per table, images embedded as bytes
    layouts/*.json                 Spotlight layouts made for the columns of `default`;
                                   layouts/default.json is the one `explorer show` opens
    findings.json                  what to look at first (`explorer.findings`: title, rows of
                                   `default`, severity, description, columns), which the
                                   Space lists as Spotlight issues
    run.json                       how the data was made (`explorer build`'s record, with
                                   local absolute paths cut to their last component)
    animation.gif / .mp4           the fine-tuning animation, when OUT has one

OUT is read through `explorer.output` and the repo folder written through
`explorer.files.written_in_place`. Every table is published as the single split "train",
like `push_to_hub` and the seed article's datasets, so
`datasets.load_dataset(REPO, "timeline", split="train")` works for every config. With
`folder=` the repo is only written locally; the Space in `demo_space/` serves such a repo
with its `layouts/default.json`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import datasets
from datasets.features.features import require_decoding
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from explorer import columns, output
from explorer.errors import ExplorerError
from explorer.files import written_in_place
from explorer.findings import findings as find_findings
from explorer.layouts import DEFAULT_LAYOUT_FILE, choose_layout, write_layouts
from explorer.output import Output

TABLES = {  # config name -> what its columns mean
    "default": columns.DEFAULT,
    "timeline": columns.TIMELINE,
    "training_log": columns.TRAINING_LOG,
    "checkpoints": columns.CHECKPOINTS,
}
SPLIT = "train"
FINDINGS_FILE = "findings.json"  # what demo_space/app.py reads
MAX_SHARD_BYTES = 500 * 2**20  # push_to_hub's default shard size
TAGS = ["spotlight", "embeddings", "outlier-detection", "explorer"]
NO_TOKEN = (
    "no Hugging Face token: run `hf auth login` or set HF_TOKEN, "
    "or use --folder DIR to write the repo locally"
)


def publish(
    out: str | Path,
    repo_id: str,
    private: bool = False,
    folder: str | Path | None = None,
    embeddings_timeline: bool = True,
    token: str | None = None,
) -> str:
    """Publish OUT as the dataset repo `repo_id`; return the repo URL, or `folder` if given.

    `folder=DIR` writes the repo to DIR (which must not exist or be empty) and uploads
    nothing. Otherwise the repo is written to a temporary folder, the Hub repo is created
    if needed (`private` applies only then) and the folder is uploaded in one commit that
    also removes stale data shards and layouts. `embeddings_timeline=False` leaves out the
    `timeline` config (one row per image and checkpoint). The token is `token`, else
    HF_TOKEN, else the cached `hf auth login`. Bad input raises `ExplorerError`.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ExplorerError(f"bad repo id {repo_id!r}: use USER/NAME ({error})") from None
    # A wrong OUT is the likelier mistake: report it before a missing token.
    result = output.read(out)
    if folder is not None:
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ExplorerError(f"{folder} exists and is not an empty folder: remove it first")
        with written_in_place(folder) as repo:
            write_repo(result, repo, repo_id, embeddings_timeline)
        return str(folder)

    # Look for the token before the (slow) writing, so a missing login fails at once.
    token = token or get_token()
    if not token:
        raise ExplorerError(NO_TOKEN)
    with tempfile.TemporaryDirectory(prefix="explorer-publish-") as tmp:
        repo = Path(tmp) / "repo"
        write_repo(result, repo, repo_id, embeddings_timeline)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=repo,
                repo_type="dataset",
                commit_message="Publish with explorer",
                # A re-publish may have fewer shards or layouts; stale ones would be loaded too.
                delete_patterns=["data/**", "layouts/**"],
            )
        except HfHubHTTPError as error:
            first_line = str(error).strip().splitlines()[0]
            raise ExplorerError(f"publishing to {repo_id} failed: {first_line}") from None
    return str(url)


def write_repo(
    out: str | Path | Output, repo: str | Path, repo_id: str, embeddings_timeline: bool = True
) -> Path:
    """Write the dataset repo for OUT into the folder `repo` (created); return it.

    Parameters
    ----------
    out : str, Path or Output
        The OUT folder of `explorer build`, or that folder already read by `output.read`.
    repo : str or Path
        The folder to write into.
    repo_id : str
        USER/NAME; it only appears in the card's examples.
    embeddings_timeline : bool, default=True
        As for `publish`.

    Returns
    -------
    Path
        `repo`.

    Raises
    ------
    ExplorerError
        When OUT is not a build's output, or one of its tables cannot be read.
    """
    result = out if isinstance(out, Output) else output.read(out)
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    infos: dict[str, DatasetInfo] = {}
    for config in TABLES:
        if config == "timeline" and not embeddings_timeline:
            continue
        # timeline, training_log and checkpoints come only from a build with --run.
        table = result.default if config == "default" else result.table(config)
        if table is not None:
            infos[config] = _write_parquet(table, repo / "data" / config, config)
    layouts, default_layout = _write_layouts(result, repo / "layouts")
    listed = [finding.as_dict() for finding in find_findings(result)]
    (repo / FINDINGS_FILE).write_text(json.dumps(listed, indent=2) + "\n")
    animations = []
    for path in result.animations:
        shutil.copyfile(path, repo / path.name)
        animations.append(path.name)
    run = shareable_run(result.run)
    (repo / output.RUN_RECORD).write_text(json.dumps(run, indent=2) + "\n")
    card = _card(
        repo_id,
        run,
        infos,
        layouts,
        default_layout,
        animations,
        timeline_left_out=not embeddings_timeline and result.has("timeline"),
    )
    (repo / "README.md").write_text(card, encoding="utf-8")
    return repo


def shareable_run(value: Any) -> Any:
    """`value` (a run record, or any part of one) with every absolute local path cut to its
    last component: `/home/me/runs/vit/checkpoint-120` becomes `checkpoint-120`.

    A published run.json must not show the folders of the machine it was built on; hub
    ids (`google/vit-base-patch16-224`) and URLs are not absolute paths and stay as they are.

    Parameters
    ----------
    value : dict, list, str or any JSON value

    Returns
    -------
    The same structure, with new containers (`value` is left as it was).
    """
    if isinstance(value, dict):
        return {key: shareable_run(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shareable_run(item) for item in value]
    if isinstance(value, str) and _is_local_path(value):
        return PureWindowsPath(value).name  # it splits at / and at \ alike
    return value


def _is_local_path(text: str) -> bool:
    """An absolute path on POSIX or Windows, or one under the home folder (~/...)."""
    return (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or text == "~"
        or text.startswith(("~/", "~\\"))
    )


def _write_parquet(table: datasets.Dataset, folder: Path, config: str) -> DatasetInfo:
    """Write `table` as Parquet shards `folder/train-0000i-of-0000n.parquet`; return its info.

    Images and other file columns are embedded as bytes, as `push_to_hub` does, so the
    repo is self-contained; the features travel in the Parquet schema and in the card.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dataset_size = table.data.nbytes
    num_shards = max(1, min(len(table), math.ceil(dataset_size / MAX_SHARD_BYTES)))
    embed = any(require_decoding(feature) for feature in table.features.values())
    download_size = 0
    for index in range(num_shards):
        shard = table.shard(num_shards=num_shards, index=index, contiguous=True)
        if embed:
            shard = shard.with_format("arrow").map(
                embed_table_storage, batched=True, keep_in_memory=True
            )
        path = folder / f"{SPLIT}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(path))
        download_size += path.stat().st_size
    splits = SplitDict()
    splits.add(SplitInfo(name=SPLIT, num_bytes=dataset_size, num_examples=len(table)))
    return DatasetInfo(
        config_name=config,
        features=table.features,
        splits=splits,
        download_size=download_size,
        dataset_size=dataset_size,
    )


def _write_layouts(result: Output, folder: Path) -> tuple[list[str], str]:
    """Write the Spotlight layouts into `folder`; return their file names and the name of
    the layout in `default.json`.

    The layouts are made for the columns of the published `default` table and titled as
    `explorer show` titles them, so each names only columns that exist and `default.json`
    is the very layout `explorer show OUT` opens. JSON files in OUT/layouts replace those
    of the same name.
    """
    columns = result.default.column_names
    write_layouts(folder, columns, result.embedding_names, default=True)
    for path in sorted((result.path / "layouts").glob("*.json")):
        shutil.copyfile(path, folder / path.name)
    return sorted(path.name for path in folder.glob("*.json")), choose_layout(columns)


def _card(
    repo_id: str,
    run: dict,
    infos: dict[str, DatasetInfo],
    layouts: list[str],
    default_layout: str,
    animations: list[str],
    timeline_left_out: bool,
) -> str:
    """The dataset card: YAML metadata that `load_dataset` and the Hub read, then prose."""
    data = DatasetCardData(
        pretty_name=f"{_dataset_name(run)}, enriched for Spotlight",
        license=run.get("license") or run.get("dataset", {}).get("license") or "other",
        task_categories=["image-classification"],
        tags=TAGS,
        size_categories=[_size_category(infos["default"].splits[SPLIT].num_examples)],
    )
    # The same YAML that push_to_hub writes: the data files of each config and its features,
    # which bring back Image and ClassLabel columns on load.
    MetadataConfigs(
        {
            config: {"data_files": [{"split": SPLIT, "path": f"data/{config}/{SPLIT}-*"}]}
            for config in infos
        }
    ).to_dataset_card_data(data)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    body = "\n".join(
        [
            f"# {data.pretty_name}",
            "",
            "Every image of the dataset with its embedding by a foundation model and by a "
            "fine-tuned model, cleanlab outlier scores for both, its nearest neighbour and 2-D "
            "projections, made with explorer for review in "
            "[Renumics Spotlight](https://github.com/Renumics/spotlight).",
            "",
            *_animation_section(animations),
            *_spotlight_section(repo_id, infos, layouts, default_layout),
            *_columns_section(infos, timeline_left_out),
            *_provenance_section(run),
        ]
    )
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _dataset_name(run: dict) -> str:
    source = str(run.get("dataset", {}).get("source") or "dataset")
    return source.rstrip("/").split("/")[-1]


def _size_category(rows: int) -> str:
    """The Hub's size bucket for `rows` rows, e.g. 'n<1K' or '10K<n<100K'."""
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B"]
    for index, bound in enumerate(bounds):
        if rows < 10 ** (3 + index):
            return f"n<{bound}" if index == 0 else f"{bounds[index - 1]}<n<{bound}"
    return "n>1B"


def _animation_section(animations: list[str]) -> list[str]:
    if not animations:
        return []
    gif = [name for name in animations if name.endswith(".gif")]
    lines = ["## The embeddings during fine-tuning", ""]
    if gif:
        lines += [f"![The test images at every checkpoint]({gif[0]})", ""]
    lines += ["Files: " + ", ".join(f"[{name}]({name})" for name in animations), ""]
    return lines


def _spotlight_section(
    repo_id: str, infos: dict[str, DatasetInfo], layouts: list[str], default_layout: str
) -> list[str]:
    listed = ", ".join(f"[`{name}`](layouts/{name})" for name in layouts)
    lines = [
        "## Open it in Spotlight",
        "",
        "`pip install renumics-spotlight datasets`, then:",
        "",
        "```python",
        "import datasets",
        "from huggingface_hub import hf_hub_download",
        "from renumics import spotlight",
        "",
        f'ds = datasets.load_dataset("{repo_id}", "default", split="{SPLIT}")',
        "layout = hf_hub_download(",
        f'    "{repo_id}", "layouts/{DEFAULT_LAYOUT_FILE}", repo_type="dataset"',
        ")",
        "spotlight.show(ds, layout=layout)",
        "```",
        "",
        f"`layouts/{DEFAULT_LAYOUT_FILE}` is `{default_layout}`, the layout `explorer show` "
        "opens for these columns. Layouts in this repo, each made for the columns of "
        f"`default`: {listed}.",
        "",
        f"[`{FINDINGS_FILE}`]({FINDINGS_FILE}) lists what to look at first (outliers, images "
        "also in the training data, label issues, near-duplicates, ...): per finding a title, "
        "the rows of `default`, a severity, a description and the columns that show why. "
        "Pass them to Spotlight as issues:",
        "",
        "```python",
        "import json",
        "from renumics.spotlight.analysis.typing import DataIssue",
        "",
        f'path = hf_hub_download("{repo_id}", "{FINDINGS_FILE}", repo_type="dataset")',
        'keys = ("title", "rows", "severity", "description", "columns")',
        "issues = [DataIssue(**{key: f[key] for key in keys}) for f in json.load(open(path))]",
        "spotlight.show(ds, layout=layout, issues=issues)",
        "```",
        "",
    ]
    if "timeline" in infos:
        lines += [
            "The `timeline` config has one row per image and checkpoint; its `row` column "
            "is the row of the image in `default`:",
            "",
            "```python",
            f'timeline = datasets.load_dataset("{repo_id}", "timeline", split="{SPLIT}")',
            "```",
            "",
        ]
    if "checkpoints" in infos:
        lines += [
            "The `checkpoints` config has one row per checkpoint of the fine-tuning run: the "
            "training loss at that step, the accuracy of its head (overall and per class), how "
            "well its embeddings alone separate the classes (k-NN accuracy, cosine silhouette), "
            "its outliers and label issues, and how far the neighbourhoods moved since the "
            "checkpoint before. `explorer plot` draws these curves.",
            "",
        ]
    return lines


def _columns_section(infos: dict[str, DatasetInfo], timeline_left_out: bool) -> list[str]:
    lines = ["## Configs and columns", ""]
    for config, info in infos.items():
        meanings = TABLES[config]
        rows = info.splits[SPLIT].num_examples
        lines += [
            f"### `{config}` ({rows:,} rows)",
            "",
            "| column | type | meaning |",
            "| --- | --- | --- |",
        ]
        for name, feature in info.features.items():
            meaning = meanings.get(name, "").replace("|", "\\|")  # a bare | ends the cell
            lines.append(f"| `{name}` | {_feature_type(feature)} | {meaning} |")
        lines.append("")
    if timeline_left_out:
        lines += [
            "The per-checkpoint `timeline` table was left out of this repo "
            "(`explorer publish --no-embeddings-timeline`).",
            "",
        ]
    return lines


def _feature_type(feature: object) -> str:
    """A short type name for the card: Image, ClassLabel (4 classes), float32, float32[768]."""
    if isinstance(feature, datasets.Image):
        return "Image"
    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel ({feature.num_classes} classes)"
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.List):
        inner = _feature_type(feature.feature)
        return f"{inner}[{feature.length if feature.length != -1 else ''}]"
    return type(feature).__name__


def _provenance_section(run: dict) -> list[str]:
    dataset = run.get("dataset", {})
    lines = ["## How it was made", ""]
    source = dataset.get("source")
    if source:
        split = f", split `{dataset['split']}`" if dataset.get("split") else ""
        rows = f", {dataset['num_rows']:,} images" if dataset.get("num_rows") else ""
        lines.append(f"- Dataset: `{source}`{split}{rows}.")
    for role, model in run.get("models", {}).items():
        pooling = f", pooling `{model['pooling']}`" if model.get("pooling") else ""
        role = {"finetuned": "fine-tuned"}.get(role, role)
        lines.append(f"- {role.capitalize()} model: `{model.get('name')}`{pooling}.")
    checkpoints = run.get("checkpoints") or []
    if checkpoints:
        steps = [str(checkpoint.get("step")) for checkpoint in checkpoints]
        lines.append(f"- {len(checkpoints)} checkpoints, at steps {', '.join(steps)}.")
    parameters = run.get("parameters") or {}
    if parameters:
        listed = ", ".join(f"`{key}={value}`" for key, value in parameters.items())
        lines.append(f"- Parameters: {listed}.")
    versions = dict(run.get("versions") or {})
    if run.get("explorer_version"):
        versions = {"explorer": run["explorer_version"], **versions}
    if versions:
        listed = ", ".join(f"{name} {version}" for name, version in versions.items())
        lines.append(f"- Versions: {listed}.")
    lines += [
        "",
        "Outlier scores are cleanlab's `OutOfDistribution` scores on the embeddings (k nearest "
        "neighbours, cosine); the nearest neighbour is taken in the fine-tuned embeddings. "
        "`run.json` holds every setting of the build.",
        "",
    ]
    return lines
