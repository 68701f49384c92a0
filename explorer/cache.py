"""Each model or checkpoint embedded once: in memory within a build, on disk across builds.

A checkpoint's embeddings are kept beside it, in
`checkpoint-N/explorer-cache/embeddings-<key>.safetensors`: the embeddings (`embeddings`),
the class probabilities where there is a head (`probabilities`) and, in the file's metadata,
the model's facts as JSON (`facts`), so the file alone gives back the `embed.Embedded`. The
key (`cache_file`) hashes everything that makes the embeddings: the decoded pixels and their
preprocessing (`pixels_hash`), the pooling, the dtype, and the names, sizes and times of the
weights files; another dataset, setting or save of the weights gives another file, never a
stale one. A killed build leaves no half-written file (`explorer.files`).

`Embedder` is what a build embeds through: it decodes the pixels once per preprocessing, reads
a checkpoint's cache or writes it, and returns what other processes embedded (`keep`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
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

CACHE_FOLDER = "explorer-cache"


def pixels_hash(pixels: torch.Tensor, preprocessing: embed.Preprocessing) -> str:
    """Content hash of decoded pixels and the preprocessing that made them (hex)."""
    digest = hashlib.sha256(preprocessing.key().encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


def cache_file(checkpoint: Path, pixels_hash: str, pooling: str, dtype: str) -> Path:
    """The cache file in checkpoint folder `checkpoint` for these pixels and settings."""
    key = hashlib.sha256(
        f"{pixels_hash}|{pooling}|{dtype}|{_weights_signature(checkpoint)}".encode()
    ).hexdigest()[:20]
    return checkpoint / CACHE_FOLDER / f"embeddings-{key}.safetensors"


def _weights_signature(folder: Path) -> str:
    """Name, size and modification time of every weights file: a new save changes it."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


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
    """Embeds the models or checkpoints of one build, each once.

    A model is given as its Hub id or folder (kept in memory only), a checkpoint as a
    `runs.Checkpoint` (also cached in its folder).
    """

    def __init__(self, config: BuildConfig, progress: Progress) -> None:
        self.config = config  # its device is the one to use (resolved)
        self.progress = progress
        self._pixels: dict[str, tuple[torch.Tensor, str]] = {}  # preprocessing key -> pixels
        self._kept: dict[str, Embedded] = {}  # model -> what other processes embedded

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
        """The embeddings of `images` by `model`: kept, cached, or computed now.

        With `rows`, only those images: read from the cache where it is there, else embedded
        and not cached (processes sharing a checkpoint by images each embed a slice, see
        `explorer.distributed.embed_share`).
        """
        if str(_path(model)) in self._kept:
            return self._kept[str(_path(model))].rows(rows)
        preprocessing = embed.Preprocessing.from_model(_path(model))
        pixels, digest = self.pixels(images, preprocessing)
        path = self._cache_file(model, digest)
        if path is not None and path.exists():
            return read(path).rows(rows)
        with self.progress.stage("embed"):
            embedded = embed.embed_model(
                str(_path(model)), pixels[rows], preprocessing,
                device=self.config.device, pooling=self.config.pooling,
                batch_size=self.config.batch_size, dtype=self.config.dtype,
                trust_remote_code=self.config.trust_remote_code, progress=self.progress.show,
            )  # fmt: skip
        if path is not None and rows == slice(None):
            write(path, embedded)
        return embedded

    def keep(
        self, model: str | runs.Checkpoint, images: datasets.Dataset, embedded: Embedded
    ) -> None:
        """Keep what the processes embedded of a whole model or checkpoint as `embeddings` would
        have: a checkpoint's in its cache (unless cached already), a model's in memory."""
        if not isinstance(model, runs.Checkpoint):
            self._kept[str(model)] = embedded
            return
        _, digest = self.pixels(images, embed.Preprocessing.from_model(model.path))
        path = self._cache_file(model, digest)
        if not path.exists():
            write(path, embedded)

    def _cache_file(self, model: str | runs.Checkpoint, digest: str) -> Path | None:
        if not isinstance(model, runs.Checkpoint):
            return None
        return cache_file(model.path, digest, self.config.pooling, self.config.dtype)


def _path(model: str | runs.Checkpoint) -> str | Path:
    return model.path if isinstance(model, runs.Checkpoint) else model
