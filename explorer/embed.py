"""Images in, one embedding per image out (and class probabilities where the model has a head).

Three steps, each reusable on its own:

1. `Preprocessing.from_model(path)` reads the model's image-processor config (size, crop,
   resampling, rescale, mean, std); `image_processor` gives a model saved without one the
   processor `explorer finetune` saves beside it.
2. `prepare_pixels(images, preprocessing)` decodes and resizes every image once into a uint8
   tensor: the same tensor serves every checkpoint of a run (the seed ran the processor per batch
   per checkpoint, although its output never changes).
3. `embed_pixels(model, pixels, preprocessing)` rescales and normalises per batch in torch and
   pools the backbone's output: the CLS token where the architecture has one, the pooled output
   where it has none (Swin, ConvNeXt, ResNet: the seeds took token 0 of every model, wrong for
   those). `embed_model(path, pixels, preprocessing)` loads the model first and returns an
   `Embedded`: the embeddings, the probabilities and the model's `ModelFacts`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from explorer import offline
from explorer.config import DTYPES, POOLINGS
from explorer.errors import ExplorerError
from explorer.progress import quiet_libraries

if TYPE_CHECKING:
    from transformers.image_processing_utils import BaseImageProcessor

# Architectures whose token 0 is a CLS token trained to summarise the image.
CLS_TOKEN_MODELS = {
    "vit",
    "deit",
    "beit",
    "data2vec-vision",
    "dinov2",
    "dinov2_with_registers",
    "vit_msn",
    "vit_mae",
    "vit_hybrid",
    "clip_vision_model",
    "siglip_vision_model",
}
TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
# What a model saved without an image-processor config is given: inputs scaled to [-1, 1].
FALLBACK_MEAN = FALLBACK_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """What the model's image processor does, as plain numbers.

    `height`/`width` give an exact resize; `shortest_edge` resizes the short side (then `crop`
    centre-crops to a square of `crop` pixels, when set).
    """

    height: int | None
    width: int | None
    shortest_edge: int | None
    crop: int | None
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_model(cls, model_path: str | Path) -> Preprocessing:
        """Read the image-processor config saved beside a model (Hub id or folder); for a model
        saved without one, that of `image_processor`'s fallback."""
        return cls.from_processor(image_processor(model_path))

    @classmethod
    def from_processor(cls, processor: BaseImageProcessor) -> Preprocessing:
        """The numbers of a transformers image processor."""
        size = dict(getattr(processor, "size", None) or {}) if processor.do_resize else {}
        shortest = size.get("shortest_edge")
        crop = None
        if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
            crop = int(dict(processor.crop_size)["height"])
        crop_pct = getattr(processor, "crop_pct", None)
        if shortest is not None and crop_pct is not None and shortest < 384:
            # ConvNeXt's rule: resize to shortest/crop_pct, then centre-crop to shortest.
            crop, shortest = shortest, int(shortest / crop_pct)
        resample = getattr(processor, "resample", Image.BILINEAR)
        mean = processor.image_mean if processor.do_normalize else (0.0, 0.0, 0.0)
        std = processor.image_std if processor.do_normalize else (1.0, 1.0, 1.0)
        return cls(
            height=size.get("height"),
            width=size.get("width"),
            shortest_edge=shortest,
            crop=crop,
            resample=int(resample if resample is not None else Image.BILINEAR),
            rescale=float(processor.rescale_factor) if processor.do_rescale else 1.0,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        )

    def key(self) -> str:
        """These numbers as canonical JSON text: equal keys, equal preprocessing."""
        return json.dumps(asdict(self), sort_keys=True)

    def resize(self, image: Image.Image) -> Image.Image:
        """RGB, resized and centre-cropped as the model's processor would."""
        image = image.convert("RGB")
        if self.height and self.width:
            image = image.resize((self.width, self.height), resample=self.resample)
        elif self.shortest_edge:
            # transformers' rule: short side to size, long side scaled and floored
            short, long = sorted(image.size)
            long = int(self.shortest_edge * long / short)
            edge = self.shortest_edge
            size = (edge, long) if image.width <= image.height else (long, edge)
            image = image.resize(size, resample=self.resample)
        if self.crop:
            left = (image.width - self.crop) // 2
            top = (image.height - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        return image

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 model input."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() * self.rescale - mean) / std


def image_processor(
    name_or_path: str | Path, trust_remote_code: bool = False
) -> BaseImageProcessor:
    """The image processor saved beside a model (Hub id or folder).

    A model saved without one gets, with a warning, `vit_processor` of the model's own input
    size (its config's image_size, else 224): what `explorer finetune` saves into such a
    model's checkpoints, so that every checkpoint of a run is preprocessed alike.
    """
    from transformers import AutoImageProcessor

    try:
        with quiet_libraries(notices=True):  # only the processor's numbers are used
            return AutoImageProcessor.from_pretrained(
                str(name_or_path), trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError):
        pass
    size = int(getattr(load_config(name_or_path, trust_remote_code), "image_size", 224))
    warnings.warn(
        f"{name_or_path} has no image-processor config; resizing to {size}x{size} "
        "with mean 0.5 and std 0.5",
        stacklevel=3,
    )
    return vit_processor(size)


def vit_processor(size: int) -> BaseImageProcessor:
    """A transformers ViTImageProcessor resizing to `size` x `size`, mean and std 0.5."""
    # Naming the class without torchvision installed logs a notice (it falls back to PIL), so it
    # is looked up here, quieted, not at import.
    with quiet_libraries(notices=True):
        import transformers

        return transformers.ViTImageProcessor(
            size={"height": size, "width": size},
            image_mean=list(FALLBACK_MEAN),
            image_std=list(FALLBACK_STD),
        )


class UnreadableImages(ExplorerError):
    """Some images cannot be decoded; `rows` says which (names them in the message)."""

    def __init__(self, rows: list[int], names: list[str]) -> None:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        super().__init__(
            f"{len(names)} image(s) cannot be read: {shown}; "
            "fix or remove them, or pass --skip-bad-images"
        )
        self.rows, self.names = rows, names


def prepare_pixels(
    images: datasets.Dataset, preprocessing: Preprocessing, progress: bool = True
) -> torch.Tensor:
    """Decode and resize every image of `images` (a Dataset with an `image` column) once.

    Returns a uint8 tensor (N, 3, H, W). Raises UnreadableImages naming images that cannot be
    read, ExplorerError when sizes differ after preprocessing.
    """
    raw = images.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    pixels: torch.Tensor | None = None
    bad_rows, bad_names = [], []
    bar = tqdm(total=len(raw), desc="decode images", unit="img", disable=not progress)
    row = 0
    for batch in raw.iter(batch_size=1024):  # bytes of one batch at a time, not all of them
        for item in batch["image"]:
            try:
                with _open(item) as image:
                    array = torch.from_numpy(np.array(preprocessing.resize(image)))
            except (OSError, ValueError, SyntaxError):
                bad_rows.append(row)
                bad_names.append(str(item.get("path") or f"row {row}"))
                array = None
            if array is not None:
                if pixels is None:
                    pixels = torch.empty((len(raw), *array.shape), dtype=torch.uint8)
                if array.shape != pixels.shape[1:]:
                    raise ExplorerError(
                        "images have different sizes after preprocessing: the model's processor "
                        "config gives no fixed size (set size height/width or a crop)"
                    )
                pixels[row] = array
            row += 1
        bar.update(len(batch["image"]))
    bar.close()
    if bad_rows:
        raise UnreadableImages(bad_rows, bad_names)
    if pixels is None:
        raise ExplorerError("the dataset has no images")
    return pixels.permute(0, 3, 1, 2).contiguous()


def _open(item: dict) -> Image.Image:
    import io

    if item.get("bytes"):
        image = Image.open(io.BytesIO(item["bytes"]))
    else:
        image = Image.open(item["path"])
    image.load()  # surfaces truncated files here, not later
    return image


def load_config(name_or_path: str | Path, trust_remote_code: bool = False):
    """The model's transformers config; ExplorerError when there is no such model."""
    from transformers import AutoConfig

    name = str(name_or_path)
    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    if looks_local and not (Path(name).expanduser() / "config.json").exists():
        raise ExplorerError(f"model folder {name} has no config.json: give a saved model folder")
    if not looks_local:
        offline.use_cache_if_offline()
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ExplorerError(
            f"cannot load model {name!r}: give a Hub id (online) or a folder with config.json "
            f"({str(error).splitlines()[0][:160]})"
        ) from None


def load_model(
    name_or_path: str | Path, device: str = "cpu", trust_remote_code: bool = False
) -> torch.nn.Module:
    """Load an image backbone, with its classification head when the checkpoint has one.

    Raises ExplorerError when the model cannot be found or loaded.
    """
    name = str(name_or_path)
    config = load_config(name, trust_remote_code)
    try:
        model = _loader(config).from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ExplorerError(
            f"cannot load model {name!r}: give a Hub id (online) or a folder with config.json "
            f"and weights ({str(error).splitlines()[0][:160]})"
        ) from error
    return model.to(device).eval()


def _loader(config):
    """The transformers auto class a model of `config` loads with: with its classification
    head where it has one, else the bare backbone."""
    from transformers import AutoModel, AutoModelForImageClassification

    has_head = any(arch.endswith("ForImageClassification") for arch in config.architectures or [])
    return AutoModelForImageClassification if has_head else AutoModel


def planned_pooling(
    name_or_path: str | Path,
    pooling: str = "auto",
    *,
    size: tuple[int, int] = (224, 224),
    trust_remote_code: bool = False,
) -> str:
    """The pooling `embed_pixels` uses for a model, known before its weights are loaded.

    `pooling` itself unless it is `auto`. For `auto`, `resolve_pooling`'s choice: `cls` for a
    CLS-token architecture; else the model is built from its config without weights (on
    PyTorch's meta device, which allocates nothing) and run on one empty (3, *size) input, and
    its output says whether there is a pooled output. Never `auto`: the embedding cache is
    keyed on what this returns, and `embed_model` is given it.
    """
    if pooling not in POOLINGS:
        raise ExplorerError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if pooling != "auto":
        return pooling
    config = load_config(name_or_path, trust_remote_code)
    if config.model_type in CLS_TOKEN_MODELS:
        return "cls"
    captured = {}
    with quiet_libraries(), torch.device("meta"), torch.no_grad():
        model = _loader(config).from_config(config, trust_remote_code=trust_remote_code)
        hook = model.base_model.register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("out", out)
        )
        try:
            model(pixel_values=torch.empty((1, 3, *size)))
        finally:
            hook.remove()
    return resolve_pooling(config.model_type, captured["out"])


def resolve_pooling(model_type: str, output, pooling: str = "auto") -> str:
    """The pooling `auto` stands for, given the backbone's output: `cls` for CLS-token models,
    else `pooler` where the backbone gives a pooled output (Swin, ConvNeXt, ResNet), else `mean`."""
    if pooling not in POOLINGS:
        raise ExplorerError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if pooling != "auto":
        return pooling
    if model_type in CLS_TOKEN_MODELS and output.last_hidden_state.dim() == 3:
        return "cls"
    return "pooler" if getattr(output, "pooler_output", None) is not None else "mean"


def _pool(output, pooling: str) -> torch.Tensor:
    hidden = output.last_hidden_state
    if pooling == "cls":
        if hidden.dim() != 3:
            raise ExplorerError("pooling cls needs a model with tokens; use pooler or mean")
        return hidden[:, 0].clone()  # a view would keep the batch's hidden states alive
    if pooling == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ExplorerError("the model has no pooled output; use pooling cls or mean")
        return pooled.flatten(1)  # ResNet's is (B, C, 1, 1)
    # mean over tokens (B, T, D) or over the spatial grid (B, C, H, W)
    return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))


@functools.cache
def _onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's fused linear and it agrees with F.linear."""
    try:
        x, weight = torch.linspace(-1, 1, 15).view(3, 5), torch.linspace(2, -1, 20).view(4, 5)
        bias = torch.linspace(0, 1, 4)
        fused = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return torch.allclose(fused, torch.nn.functional.linear(x, weight, bias), atol=1e-5)
    except (AttributeError, RuntimeError):
        return False


def _onednn_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")


def _bias_in_the_product(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """On the CPU, route the model's float32 nn.Linear layers through oneDNN, which adds the
    bias inside the matrix product; PyTorch's addmm first copies the bias into every output
    row (a tenth of a small ViT's inference time). Returns the layers, for `_restore`."""
    if not (torch.backends.mkldnn.is_available() and _onednn_linear_works()):
        return []
    layers = [
        layer
        for layer in model.modules()
        if type(layer) is torch.nn.Linear
        and layer.weight.dtype == torch.float32
        and "forward" not in vars(layer)
    ]
    for layer in layers:
        layer.forward = functools.partial(_onednn_linear, layer)
    return layers


def _restore(layers: list[torch.nn.Linear]) -> None:
    for layer in layers:
        del layer.forward


def check_dtype(dtype: str, device: str) -> None:
    """ExplorerError unless `dtype` is one of DTYPES and runs on `device` (float16 is GPU only)."""
    if dtype not in DTYPES:
        raise ExplorerError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if device.startswith("cpu") and dtype == "float16":
        raise ExplorerError("--dtype float16 is for GPUs: on the CPU use bfloat16")


@torch.inference_mode()
def embed_pixels(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    preprocessing: Preprocessing,
    pooling: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "embed",
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Embed uint8 pixels (N, 3, H, W) with `model`, pooled as `pooling` (see resolve_pooling).

    Parameters
    ----------
    model : torch.nn.Module
        An image backbone, or a classifier around one (`load_model`), on its device.
    pixels : torch.Tensor
        uint8 (N, 3, H, W), from `prepare_pixels` with `preprocessing`.
    pooling : {"auto", "cls", "mean", "pooler"}, default="auto"
    batch_size : int, default=64
    progress : bool, default=True
        Show a progress bar labelled `desc`.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        `bfloat16` or `float16` runs the model under autocast on a GPU. On the CPU, `bfloat16`
        casts the model's weights to bfloat16, in place (autocast would cast them again for
        every batch): about 1.6x faster on CPUs with AVX512-BF16 or AMX, embeddings within
        cosine 1e-4 of float32. `float16` on the CPU is refused (several times slower there).

    Returns
    -------
    tuple
        (embeddings float32 (N, D), class probabilities float32 (N, C) or None when the model
        has no classification head, the pooling used).
    """
    device = next(model.parameters()).device
    check_dtype(dtype, device.type)
    if device.type == "cpu" and dtype != "float32":
        model.to(TORCH_DTYPES[dtype])
    input_dtype = next(model.parameters()).dtype if device.type == "cpu" else torch.float32
    captured = {}
    backbone = model.base_model
    has_head = backbone is not model
    # One forward pass gives both: the hook keeps the backbone's output on its way to the head.
    hook = backbone.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    on_gpu = device.type == "cuda"
    autocast = (
        torch.autocast("cuda", dtype=TORCH_DTYPES[dtype])
        if on_gpu and dtype != "float32"
        else contextlib.nullcontext()
    )
    if on_gpu:
        pixels = pixels.pin_memory()  # lets the next batch's copy overlap this batch's compute
    fused = _bias_in_the_product(model) if device.type == "cpu" else []
    embeddings, probabilities = [], []
    try:
        for start in tqdm(
            range(0, len(pixels), batch_size), desc=desc, unit="batch", disable=not progress
        ):
            batch = pixels[start : start + batch_size].to(device, non_blocking=True)
            with autocast:
                output = model(pixel_values=preprocessing.normalise(batch).to(input_dtype))
            pooling = resolve_pooling(model.config.model_type, captured["out"], pooling)
            # results stay on the device until the end: a .cpu() per batch would stall the queue
            embeddings.append(_pool(captured["out"], pooling).float())
            if has_head:
                probabilities.append(output.logits.float().softmax(-1))
    finally:
        hook.remove()
        _restore(fused)
    result = torch.cat(embeddings).cpu().numpy()
    if not np.isfinite(result).all():
        raise ExplorerError("the model gave NaN or infinite embeddings")
    return result, (torch.cat(probabilities).cpu().numpy() if has_head else None), pooling


@dataclass(frozen=True)
class ModelFacts:
    """What run.json says of a model or checkpoint that was embedded (its `models` entries)."""

    name: str  # Hub id or folder, as given
    model_type: str  # the transformers config's model_type, such as vit or swin
    pooling: str  # the pooling used (what `auto` became)
    dim: int  # embedding size D
    id2label: dict[int, str] | None  # the head's class names by output index; None: no head


@dataclass(frozen=True)
class Embedded:
    """One model's (or checkpoint's) output for a set of images, row i for image i."""

    vectors: np.ndarray  # embeddings, float32 (N, D)
    probabilities: np.ndarray | None  # of the head's classes, float32 (N, C); None: no head
    facts: ModelFacts

    def rows(self, rows: slice) -> Embedded:
        """The same output for the images in `rows` only."""
        probabilities = None if self.probabilities is None else self.probabilities[rows]
        return Embedded(self.vectors[rows], probabilities, self.facts)


def embed_model(
    name_or_path: str | Path,
    pixels: torch.Tensor,
    preprocessing: Preprocessing,
    *,
    device: str = "cpu",
    pooling: str = "auto",
    batch_size: int = 64,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> Embedded:
    """Load a model (Hub id or folder) and embed `pixels` with it.

    Parameters
    ----------
    name_or_path : str or Path
        The model: a Hub id or a folder with config.json and weights.
    pixels : torch.Tensor
        uint8 (N, 3, H, W), from `prepare_pixels` with `preprocessing`.
    device, pooling, batch_size, dtype, progress
        As for `load_model` and `embed_pixels`.
    trust_remote_code : bool, default=False
        Run model code from the Hub.

    Returns
    -------
    Embedded
        The embeddings, the class probabilities where the model has a head, and its facts.

    Raises
    ------
    ExplorerError
        When the model cannot be loaded, or embedding fails (the message then names the model).
    """
    name = str(name_or_path)
    model = load_model(name, device, trust_remote_code)
    try:
        vectors, probabilities, pooling = embed_pixels(
            model, pixels, preprocessing, pooling, batch_size, progress,
            desc=f"embed {Path(name).name}", dtype=dtype,
        )  # fmt: skip
    except ExplorerError as error:
        raise ExplorerError(f"{name}: {error}") from None
    facts = ModelFacts(
        name=name,
        model_type=model.config.model_type,
        pooling=pooling,
        dim=int(vectors.shape[1]),
        id2label=None if probabilities is None else _id2label(model),
    )
    return Embedded(vectors, probabilities, facts)


def _id2label(model: torch.nn.Module) -> dict[int, str]:
    return {int(i): str(name) for i, name in model.config.id2label.items()}


def pick_device(device: str = "auto") -> str:
    """`auto` means CUDA when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ExplorerError("device cuda, but torch sees no CUDA device: use device cpu")
    return device
