"""Each model or checkpoint embedded once: in memory within a build, on disk across builds.

A model's embeddings are kept beside it, in its cache folder (`model_files`):
`MODEL/explorer-cache/` for a local folder (a checkpoint's, or a model's given with
`--foundation`/`--finetuned`), and `models--ORG--NAME/explorer-cache/` in the Hugging Face
cache for a Hub id. Each file, `embeddings-<key>.safetensors`, holds the embeddings
(`embeddings`), the class probabilities where there is a head (`probabilities`) and, in its
metadata, the model's facts as JSON (`facts`), so the file alone gives back the
`embed.Embedded`. A killed build leaves no half-written file (`explorer.files`).

The key (`cache_key`) hashes everything the embeddings depend on: the cache FORMAT, the
decoded pixels and their preprocessing (`pixels_hash`), the pooling used (what `auto` resolves
to, `embed.planned_pooling`), the dtype, the bytes of config.json (its id2label names the
cached probabilities' classes) and the weights' bytes (`weights_hashes`; a Hub model's commit,
which fixes them). Another dataset, setting, config or weights gives another file, never a
stale one; touching the weights without changing them keeps the file.

`Embedder` is what a build embeds through: it decodes the pixels once per preprocessing, reads
a model's cache or writes it, and returns what other processes embedded (`keep`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch

from explorer import embed, runs
from explorer.embed import Embedded, ModelFacts
from explorer.files import written_in_place

if TYPE_CHECKING:
    from explorer.config import BuildConfig
    from explorer.progress import Progress

FORMAT = 2  # of the cache files and their key: bump it when either changes (old files unread)
CACHE_FOLDER = "explorer-cache"
WEIGHTS_FILE = "weights.json"  # in the cache folder: each weights file's size, times, sha256
WEIGHT_FILES = ("*.safetensors", "*.bin")
NOT_WEIGHTS = ("training_args.bin",)  # what the Trainer saves beside the weights
_POOLINGS_USED = ("cls", "mean", "pooler")  # what `embed.planned_pooling` returns
_CHUNK = 1 << 24  # bytes read at a time while hashing weights


def pixels_hash(pixels: torch.Tensor, preprocessing: embed.Preprocessing) -> str:
    """Content hash of decoded pixels and the preprocessing that made them (hex)."""
    digest = hashlib.sha256(preprocessing.key().encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are, and where its embeddings are cached."""

    folder: Path  # config.json and the weights
    cache: Path  # the cache folder (CACHE_FOLDER)
    revision: str | None = None  # a Hub model's commit (it fixes every file's bytes)


def model_files(model: str | Path) -> ModelFiles | None:
    """The files of `model`: a local folder with config.json (caching in its CACHE_FOLDER), or
    a Hub id's snapshot in the local Hugging Face cache (caching in the repo's cache folder,
    `models--ORG--NAME/explorer-cache/`, which `hf cache delete` removes with it). None for a
    Hub id whose config.json is not in the local cache."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return ModelFiles(path, path / CACHE_FOLDER)
    from transformers.utils import cached_file

    try:
        config = cached_file(str(model), "config.json")
    except (OSError, ValueError):
        return None
    if config is None:
        return None
    snapshot = Path(config).parent  # models--ORG--NAME/snapshots/<commit>/config.json
    return ModelFiles(snapshot, snapshot.parent.parent / CACHE_FOLDER, snapshot.name)


def weights_hashes(files: ModelFiles) -> dict[str, str]:
    """{file name: sha256 of its bytes} of the weights files in `files.folder`.

    Each file is read once: its hash is kept in the cache folder's WEIGHTS_FILE with its size
    and modification times (mtime, and ctime, which also catches a file rewritten and given
    its old mtime back), and read again only when those change: a touched file is re-read,
    and keeps its hash. Where that file cannot be written, hashes are not kept.
    """
    known = _read_json(files.cache / WEIGHTS_FILE)
    current = {}
    for pattern in WEIGHT_FILES:
        for path in sorted(files.folder.glob(pattern)):
            if path.name in NOT_WEIGHTS or not path.is_file():
                continue
            stat = path.stat()
            seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            seen["ctime_ns"] = stat.st_ctime_ns
            entry = known.get(path.name) or {}
            if {name: entry.get(name) for name in seen} != seen:
                entry = {**seen, "sha256": _hash(path)}
            current[path.name] = entry
    if current != known:
        _write_json(files.cache / WEIGHTS_FILE, current)
    return {name: entry["sha256"] for name, entry in current.items()}


def cache_key(
    *, pixels_hash: str, pooling: str, dtype: str, config: bytes, weights: dict | str
) -> str:
    """The key (hex) of one model's embeddings of one set of pixels.

    pixels_hash: `pixels_hash` of the pixels; pooling: the pooling used, one of cls, mean or
    pooler (`embed.planned_pooling`; never `auto`, whose meaning may change); dtype: as
    embedded; config: the bytes of the model's config.json; weights: `weights_hashes`, or a
    Hub model's commit. FORMAT is part of the key.
    """
    if pooling not in _POOLINGS_USED:
        raise ValueError(f"the cache key takes the pooling used, one of {_POOLINGS_USED}")
    parts = {
        "format": FORMAT,
        "pixels": pixels_hash,
        "pooling": pooling,
        "dtype": dtype,
        "config": hashlib.sha256(config).hexdigest(),
        "weights": weights,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def write(path: Path, embedded: Embedded) -> None:
    """Write `embedded` to the cache file `path`, whole or not at all."""
    from safetensors.numpy import save_file

    tensors = {"embeddings": np.ascontiguousarray(embedded.vectors)}
    if embedded.probabilities is not None:
        tensors["probabilities"] = np.ascontiguousarray(embedded.probabilities)
    with written_in_place(path, folder=False, keep_suffix=False) as partial:
        save_file(tensors, str(partial), metadata={"facts": json.dumps(asdict(embedded.facts))})


def read(path: Path) -> Embedded:
    """The `Embedded` that `write` wrote to `path`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as file:
        facts = json.loads(file.metadata()["facts"])
        vectors = file.get_tensor("embeddings")
        names = set(file.keys())
        probabilities = file.get_tensor("probabilities") if "probabilities" in names else None
    if facts.get("id2label"):  # JSON made the class indices text
        facts["id2label"] = {int(i): name for i, name in facts["id2label"].items()}
    return Embedded(vectors, probabilities, ModelFacts(**facts))


class Embedder:
    """Embeds the models or checkpoints of one build, each once, through their caches.

    A model is given as its Hub id or folder, a checkpoint as a `runs.Checkpoint`; both are
    cached where `model_files` says (a Hub id not in the local cache: in memory only).
    """

    def __init__(self, config: BuildConfig, progress: Progress) -> None:
        self.config = config  # its device is the one to use (resolved)
        self.progress = progress
        self._pixels: dict[str, tuple[torch.Tensor, str]] = {}  # preprocessing key -> pixels
        self._kept: dict[str, Embedded] = {}  # model -> what other processes embedded
        self._models: dict[str, tuple[str, ModelFiles | None, dict | str]] = {}  # _identity

    def pixels(
        self, images: datasets.Dataset, preprocessing: embed.Preprocessing
    ) -> tuple[torch.Tensor, str]:
        """Decoded, resized pixels and their `pixels_hash`, computed once per preprocessing."""
        key = preprocessing.key()
        if key not in self._pixels:
            with self.progress.stage("decode and resize images"):
                pixels = embed.prepare_pixels(images, preprocessing, progress=self.progress.show)
                self._pixels[key] = (pixels, pixels_hash(pixels, preprocessing))
        return self._pixels[key]

    def embeddings(
        self, model: str | runs.Checkpoint, images: datasets.Dataset, rows: slice = slice(None)
    ) -> Embedded:
        """The embeddings of `images` by `model`: kept, cached, or computed now (and cached).

        With `rows`, only those images: read from the cache where it is there, else embedded
        and not cached (processes sharing a model by images each embed a slice, see
        `explorer.distributed.embed_share`).
        """
        if str(_path(model)) in self._kept:
            return self._kept[str(_path(model))].rows(rows)
        preprocessing = embed.Preprocessing.from_model(_path(model))
        pixels, digest = self.pixels(images, preprocessing)
        pooling, _, _ = self._identity(model, pixels)
        path = self._cache_file(model, pixels, digest)
        if path is not None and path.exists():
            return read(path).rows(rows)
        with self.progress.stage("embed"):
            embedded = embed.embed_model(
                str(_path(model)), pixels[rows], preprocessing,
                device=self.config.device, pooling=pooling,
                batch_size=self.config.batch_size, dtype=self.config.dtype,
                trust_remote_code=self.config.trust_remote_code, progress=self.progress.show,
            )  # fmt: skip
        if path is not None and rows == slice(None):
            self._write(path, embedded)
        return embedded

    def keep(
        self, model: str | runs.Checkpoint, images: datasets.Dataset, embedded: Embedded
    ) -> None:
        """Keep what the processes embedded of a whole model or checkpoint as `embeddings` would
        have: in its cache (unless cached already) and, for a model (not a checkpoint, of
        which a run may have many), in memory too."""
        if not isinstance(model, runs.Checkpoint):
            self._kept[str(model)] = embedded
        pixels, digest = self.pixels(images, embed.Preprocessing.from_model(_path(model)))
        path = self._cache_file(model, pixels, digest)
        if path is not None and not path.exists():
            self._write(path, embedded)

    def _identity(
        self, model: str | runs.Checkpoint, pixels: torch.Tensor
    ) -> tuple[str, ModelFiles | None, dict | str]:
        """(the pooling it is embedded with, its files, its weights' identity), found once."""
        name = str(_path(model))
        if name not in self._models:
            pooling = embed.planned_pooling(
                name, self.config.pooling, size=tuple(pixels.shape[2:]),
                trust_remote_code=self.config.trust_remote_code,
            )  # fmt: skip
            files = model_files(_path(model))
            weights = None if files is None else (files.revision or weights_hashes(files))
            self._models[name] = (pooling, files, weights)
        return self._models[name]

    def _cache_file(
        self, model: str | runs.Checkpoint, pixels: torch.Tensor, digest: str
    ) -> Path | None:
        pooling, files, weights = self._identity(model, pixels)
        if files is None:
            return None
        key = cache_key(
            pixels_hash=digest, pooling=pooling, dtype=self.config.dtype,
            config=(files.folder / "config.json").read_bytes(), weights=weights,
        )  # fmt: skip
        return files.cache / f"embeddings-{key}.safetensors"

    def _write(self, path: Path, embedded: Embedded) -> None:
        """`write`, or a warning where the cache folder cannot be written (a read-only model
        folder): the build goes on, and a later one embeds again."""
        try:
            write(path, embedded)
        except OSError as error:
            warnings.warn(
                f"cannot cache embeddings in {path.parent} ({error.strerror or error}): "
                "a later build embeds this model again",
                stacklevel=3,
            )


def _path(model: str | runs.Checkpoint) -> str | Path:
    return model.path if isinstance(model, runs.Checkpoint) else model


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_json(path: Path, value: dict) -> None:
    """Write `value` to `path` through a name of this process's own and a rename, so processes
    that write it at once leave one whole file; nothing (no error) where it cannot be written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
