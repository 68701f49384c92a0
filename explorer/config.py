"""The settings of one `explorer build`, declared once: `BuildConfig`, and their choices.

One frozen dataclass holds every setting of a build and checks them when it is made. The same
fields are what `run.json` records: `request()` (the settings that decide what OUT holds: a
build with the same request resumes an existing OUT in place) and `parameters()` (how the
geometry was computed). This module imports nothing heavy, so the CLI takes its choices and
defaults from here without loading torch.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

from explorer.errors import ExplorerError

# The seed article's datasets and models (need the Hub): name -> (dataset, foundation, fine-tuned).
PRESETS = {
    "cifar10": ("cifar10", "google/vit-base-patch16-224-in21k",
                "aaraki/vit-base-patch16-224-in21k-finetuned-cifar10"),
    "cifar100": ("cifar100", "microsoft/swin-base-patch4-window7-224",
                 "MazenAmria/swin-tiny-finetuned-cifar100"),
    "mnist": ("mnist", "google/vit-base-patch16-224-in21k",
              "farleyknight/mnist-digit-classification-2022-09-04"),
    "beans": ("beans", "google/vit-base-patch16-224-in21k", "nateraw/vit-base-beans"),
}  # fmt: skip
POOLINGS = ("auto", "cls", "mean", "pooler")  # what `auto` picks: embed.resolve_pooling
KNN_METHODS = ("exact", "annoy")
TIMELINE_UMAPS = ("off", "aligned")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
SAMPLES = ("random", "first")  # as explorer.data.SAMPLES

# Settings that change how fast, or from where, OUT is made but not what it holds: a build
# that differs from an existing OUT's only in these still resumes it.
NOT_REQUESTED = ("data_dir", "batch_size", "device", "trust_remote_code")
# The geometry's settings, as run.json's `parameters` records them.
GEOMETRY = ("knn", "annoy_trees", "nn_threshold", "timeline_umap", "batch_size", "device")
# Fields that run.json names otherwise: as a parameter, `neighbors` would hide the module.
RECORDED_AS = {"knn": "neighbors"}
_PATHS = ("dataset", "foundation", "finetuned", "run", "data_dir")  # kept as text, as recorded


@dataclass(frozen=True)
class BuildConfig:
    """Every setting of one build, checked when made: ExplorerError names a bad one.

    Paths are kept as text, as run.json records them. Make one with a preset through
    `BuildConfig.with_preset`.
    """

    # What is embedded
    dataset: str | None  # Hub id, image folder, save_to_disk folder, digits or fashion-mnist
    split: str | None = None  # None: test where there is one, else the only split
    limit: int | None = None  # None: every image
    sample: str = "random"  # which `limit` images: SAMPLES; random is seeded and stratified
    image_column: str | None = None  # None: found by its name or type
    label_column: str | None = None  # None: found by its name or type
    foundation: str | None = None  # Hub id or model folder; given with finetuned, or run
    finetuned: str | None = None
    run: str | None = None  # folder of checkpoint-<step> folders, from `explorer finetune`
    # What the images are measured against (explorer.reference): SRC[:SPLIT], "none", or None
    # for the default (the run's training data; else the source's train split)
    reference: str | None = None
    reference_limit: int = 5000  # reference images at most: a seeded stratified sample
    # How it is embedded and measured
    pooling: str = "auto"  # POOLINGS; auto: the CLS token where trained as one, else pooled
    knn: str = "exact"  # exact: blocked exact cosine k-NN; annoy: the seed's approximate index
    annoy_trees: int = 100  # trees of the Annoy index, with knn="annoy"
    # None: nn_flag = has a near-duplicate (explorer.duplicates); a number: nn_flag =
    # nn_distance < nn_threshold, a cosine distance (the seed's Annoy 0.3 is 0.045)
    nn_threshold: float | None = None
    timeline_umap: str = "aligned"  # aligned: a UMAP per checkpoint, each from the one before;
    # off: UMAP only for the first and last checkpoint
    skip_bad_images: bool = False  # drop unreadable images (listed in run.json), not fail
    dtype: str = "float32"  # bfloat16/float16: autocast on a GPU; bfloat16 weights on the CPU
    # How fast, and from where (NOT_REQUESTED)
    data_dir: str | None = None  # folder of fashion-mnist's IDX files
    batch_size: int = 64
    device: str = "auto"  # auto: cuda when there is one; `build` records the device used
    trust_remote_code: bool = False  # run model code from the Hub

    def __post_init__(self) -> None:
        for name in _PATHS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))
        if self.dataset is None:
            raise ExplorerError("no dataset: give dataset (or preset)")
        if self.run is None and (self.foundation is None or self.finetuned is None):
            raise ExplorerError("give foundation and finetuned models, or a run with checkpoints")
        if self.run is not None and (self.foundation is not None or self.finetuned is not None):
            raise ExplorerError("give either run or foundation/finetuned, not both")
        if self.reference_limit < 1:
            raise ExplorerError(f"reference_limit must be at least 1, not {self.reference_limit}")
        for name in ("batch_size", "annoy_trees"):  # counts: 0 would embed or index nothing
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ExplorerError(f"{name} must be a whole number of at least 1, not {value!r}")
        for name, choices in (("knn", KNN_METHODS), ("timeline_umap", TIMELINE_UMAPS),
                              ("pooling", POOLINGS), ("dtype", DTYPES),
                              ("sample", SAMPLES)):  # fmt: skip
            value = getattr(self, name)
            if value not in choices:
                raise ExplorerError(f"{name} must be one of {', '.join(choices)}, not {value!r}")

    @classmethod
    def with_preset(cls, preset: str | None = None, **settings) -> BuildConfig:
        """A config of `settings` whose dataset and models, where not given, come from `preset`.

        Parameters
        ----------
        preset : {"cifar10", "cifar100", "mnist", "beans"} or None, default=None
            One of PRESETS: the seed article's dataset, foundation and fine-tuned model.
        **settings
            BuildConfig's fields.

        Raises
        ------
        ExplorerError
            For an unknown preset, or settings that `BuildConfig` refuses.
        """
        if preset is not None:
            if preset not in PRESETS:
                raise ExplorerError(
                    f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}"
                )
            roles = ("dataset", "foundation", "finetuned")
            for name, value in zip(roles, PRESETS[preset], strict=True):
                settings[name] = settings.get(name) or value
        return cls(**settings)

    def request(self) -> dict:
        """The settings that decide what OUT holds, under run.json's names: an OUT built with
        the same request is resumed in place."""
        return {
            RECORDED_AS.get(name, name): value
            for name, value in asdict(self).items()
            if name not in NOT_REQUESTED
        }

    def parameters(self) -> dict:
        """The geometry's settings under run.json's names; annoy_trees only for Annoy."""
        settings = asdict(self)
        recorded = {RECORDED_AS.get(name, name): settings[name] for name in GEOMETRY}
        if self.knn != "annoy":
            recorded["annoy_trees"] = None
        return recorded


def defaults() -> dict:
    """{setting: default} of every BuildConfig field that has one (for the CLI's options)."""
    return {field.name: field.default for field in fields(BuildConfig) if field.name != "dataset"}
