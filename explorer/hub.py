"""Publish an enriched OUT folder as a Hugging Face dataset repo.

`publish(out, repo_id)` turns the tables of `explorer build` (OUT/default, OUT/timeline,
OUT/training_log: `save_to_disk` folders) into a Hub dataset repo and uploads it:

    README.md                      dataset card: YAML (configs, features, license, tags) + docs
    data/<config>/train-*.parquet  one config per table, images embedded as bytes
    layouts/*.json                 Spotlight layouts
    run.json                       how the data was made, as written by `explorer build`
    animation.gif / .mp4           the fine-tuning animation, when OUT has one

Every table is published as the single split "train", like `push_to_hub` and the seed
article's datasets, so `datasets.load_dataset(REPO, "timeline", split="train")` works for
every config. With `folder=` the repo is only written locally.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
from datasets.features.features import require_decoding
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from explorer import columns
from explorer.errors import ExplorerError

TABLES = {  # config name -> what its columns mean
    "default": columns.DEFAULT,
    "timeline": columns.TIMELINE,
    "training_log": columns.TRAINING_LOG,
}
SPLIT = "train"
MAX_SHARD_BYTES = 500 * 2**20  # push_to_hub's default shard size
ANIMATION_SUFFIXES = (".gif", ".mp4", ".webm")
TAGS = ["spotlight", "embeddings", "outlier-detection", "explorer"]
# Layouts checked into a source checkout; used when explorer.spotlight cannot write them.
CHECKED_IN_LAYOUTS = Path(__file__).resolve().parent.parent / "layouts"
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
    out = Path(out)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ExplorerError(f"bad repo id {repo_id!r}: use USER/NAME ({error})") from None
    _read_run(out)  # a wrong OUT is the likelier mistake: report it before a missing token
    if folder is not None:
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ExplorerError(f"{folder} exists and is not an empty folder: remove it first")
        _write_atomically(folder, lambda repo: write_repo(out, repo, repo_id, embeddings_timeline))
        return str(folder)

    # Look for the token before the (slow) writing, so a missing login fails at once.
    token = token or get_token()
    if not token:
        raise ExplorerError(NO_TOKEN)
    with tempfile.TemporaryDirectory(prefix="explorer-publish-") as tmp:
        repo = Path(tmp) / "repo"
        write_repo(out, repo, repo_id, embeddings_timeline)
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
    out: str | Path, repo: str | Path, repo_id: str, embeddings_timeline: bool = True
) -> Path:
    """Write the dataset repo for OUT into the folder `repo` (created); return it.

    `repo_id` only appears in the card's examples. See `publish` for `embeddings_timeline`.
    """
    out, repo = Path(out), Path(repo)
    run = _read_run(out)
    repo.mkdir(parents=True, exist_ok=True)
    infos: dict[str, DatasetInfo] = {}
    for config in TABLES:
        if not (out / config).exists():
            if config == "default":
                raise ExplorerError(f"{out / 'default'} is missing: run `explorer build` first")
            continue  # timeline and training_log come only from a build with --run
        if config == "timeline" and not embeddings_timeline:
            continue
        table = _load_table(out / config)
        infos[config] = _write_parquet(table, repo / "data" / config, config)
    layouts = _write_layouts(out, repo / "layouts")
    animations = _copy_animations(out, repo)
    shutil.copyfile(out / "run.json", repo / "run.json")
    card = _card(
        repo_id,
        run,
        infos,
        layouts,
        animations,
        timeline_left_out=not embeddings_timeline and (out / "timeline").exists(),
    )
    (repo / "README.md").write_text(card, encoding="utf-8")
    return repo


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)` on a fresh sibling folder of `target`, then rename it to `target`.

    A failure removes the temporary folder, so no half-written repo is ever left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private to the user
        if target.exists():
            target.rmdir()  # empty, checked by the caller
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_run(out: Path) -> dict:
    """OUT/run.json as a dict; `ExplorerError` when OUT is not a build's output."""
    if not out.is_dir():
        raise ExplorerError(f"{out} is not a folder: pass the output folder of `explorer build`")
    try:
        return json.loads((out / "run.json").read_text())
    except FileNotFoundError:
        raise ExplorerError(f"{out / 'run.json'} is missing: run `explorer build` first") from None
    except json.JSONDecodeError as error:
        raise ExplorerError(f"{out / 'run.json'} is not valid JSON: {error}") from None


def _load_table(path: Path) -> datasets.Dataset:
    """Load one `save_to_disk` table of OUT; `ExplorerError` when it cannot be read."""
    try:
        table = datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises many kinds for a damaged folder
        raise ExplorerError(f"{path} is not a readable dataset folder: {error}") from None
    if not isinstance(table, datasets.Dataset):
        raise ExplorerError(f"{path} holds several splits; expected one table")
    return table


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


def _write_layouts(out: Path, folder: Path) -> list[str]:
    """Write the Spotlight layouts into `folder`; return their file names.

    The layouts come from `explorer.spotlight.write_layouts` (or, without that module, the
    checked-in `layouts/`); JSON files in OUT/layouts replace those of the same name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from explorer.spotlight import write_layouts
    except ImportError as error:
        if error.name not in ("explorer.spotlight", None):
            raise  # the module exists but one of its imports is broken: say so
        write_layouts = None
    if write_layouts is not None:
        write_layouts(folder)
    elif CHECKED_IN_LAYOUTS.is_dir():
        for path in CHECKED_IN_LAYOUTS.glob("*.json"):
            shutil.copyfile(path, folder / path.name)
    for path in sorted((out / "layouts").glob("*.json")):
        shutil.copyfile(path, folder / path.name)
    names = sorted(path.name for path in folder.glob("*.json"))
    if not names:
        folder.rmdir()
    return names


def _copy_animations(out: Path, repo: Path) -> list[str]:
    """Copy OUT/animation.{gif,mp4,webm} into the repo; return the file names copied."""
    names = []
    for suffix in ANIMATION_SUFFIXES:
        path = out / f"animation{suffix}"
        if path.is_file():
            shutil.copyfile(path, repo / path.name)
            names.append(path.name)
    return names


def _card(
    repo_id: str,
    run: dict,
    infos: dict[str, DatasetInfo],
    layouts: list[str],
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
            *_spotlight_section(repo_id, infos, layouts),
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
    repo_id: str, infos: dict[str, DatasetInfo], layouts: list[str]
) -> list[str]:
    code = [
        "```python",
        "import datasets",
        "from renumics import spotlight",
        "",
        f'ds = datasets.load_dataset("{repo_id}", "default", split="{SPLIT}")',
    ]
    if "pre_post_ft.json" in layouts:
        code = code[:2] + ["from huggingface_hub import hf_hub_download"] + code[2:]
        code += [
            "layout = hf_hub_download(",
            f'    "{repo_id}", "layouts/pre_post_ft.json", repo_type="dataset"',
            ")",
            "spotlight.show(ds, layout=layout)",
        ]
    else:
        code += ["spotlight.show(ds)"]
    lines = [
        "## Open it in Spotlight",
        "",
        "`pip install renumics-spotlight datasets`, then:",
        "",
        *code,
        "```",
        "",
    ]
    if layouts:
        listed = ", ".join(f"[`{name}`](layouts/{name})" for name in layouts)
        lines += [f"Layouts in this repo: {listed}.", ""]
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
