"""`explorer.finetune`: train an image classifier with frequent checkpoints and a loss log.

In: a labelled dataset (anything `explorer.data.load` reads) and a model: a Hub id, a local
folder, or `tiny-vit` (a small ViT built from a config and trained from scratch, offline).
Out: a run folder in the shape `explorer.runs` describes, which `explorer build --run` reads:

- `checkpoint-0/`: the untouched model, so that the timeline starts at the foundation;
- `checkpoint-<step>/` at about `checkpoints` steps spaced geometrically, denser early where
  the embeddings change fastest (`checkpoint_steps`), or every `save_steps` steps and at the
  end: weights, config.json, the image processor's preprocessor_config.json and
  trainer_state.json (no optimizer state: the timeline needs only the weights, and Adam's
  moments would triple the disk used);
- `log.csv`: step, epoch, loss, learning_rate (and eval_loss, eval_accuracy with an eval split),
  one row per logged step, written as the run goes so that a killed run keeps its log;
- `explorer-run.json`: the data it was trained on (`runs.read_training_data`) and the settings.

Images are decoded and resized once (`embed.prepare_pixels`); each batch is only normalised.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForImageClassification,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    set_seed,
)

from explorer import data, embed, runs
from explorer.errors import ExplorerError
from explorer.progress import quiet_libraries

TINY_VIT = "tiny-vit"
PRETRAINED_LR = 5e-5  # the usual rate for fine-tuning a pretrained ViT
SCRATCH_LR = 1e-3  # tiny-vit learns from random weights: a rate this high, with warmup, works
WARMUP_RATIO = 0.1
DEFAULT_EPOCHS = 3.0  # when neither max_steps nor epochs is given (the Trainer's own default)
EVAL_BATCH_SIZE = 128
DEFAULT_CHECKPOINTS = 25  # frames enough for a smooth film; a build over them takes minutes


def finetune(
    dataset: str | Path,
    *,
    model: str | Path,
    out: str | Path,
    split: str | None = None,
    eval_split: str | None = None,
    limit: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | Path | None = None,
    sample: str = "random",
    checkpoints: int = DEFAULT_CHECKPOINTS,
    save_steps: int | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    trust_remote_code: bool = False,
    logging_steps: int = 1,
) -> Path:
    """Fine-tune `model` on `dataset` and write a run folder to `out`; return `out`.

    dataset: a Hub id, image folder, `save_to_disk` folder, `digits` or `fashion-mnist`; its
    `split` (default `train`) must have labels. eval_split: evaluated (loss and accuracy) at
    the start and at every checkpoint. limit: N images of each split, chosen by `sample`:
    `random` (seeded, stratified by label: `data.sample_rows`) or `first`; `explorer build`
    takes the same rows for the same arguments. checkpoints: about this many checkpoints
    (checkpoint-0 and the last step included), spaced geometrically over the planned steps
    (`checkpoint_steps`); save_steps: a checkpoint every N steps and at the end instead.
    model: a Hub id, a local folder, or `tiny-vit`; its head is replaced by one with the
    dataset's classes where the sizes differ. Train for `max_steps` steps or `epochs` epochs
    (default 3 epochs) at learning rate `lr` (default 5e-5, or 1e-3 for tiny-vit from scratch)
    with linear warmup and decay. logging_steps: a log.csv row every N steps. seed: model
    initialisation and batch order; the same seed gives the same run. device: `auto`, `cpu`
    or `cuda`. `out` must not exist or be empty. The data and settings are recorded in
    out/explorer-run.json (`runs.read_training_data`). Raises ExplorerError on bad input.
    """
    out = Path(out)
    split = split or "train"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExplorerError(f"{out} already exists and is not empty: give a new or empty --out")
    _check_numbers(save_steps, max_steps, epochs, lr, batch_size, logging_steps, checkpoints)
    device = embed.pick_device(device)

    reading = (image_column, label_column, data_dir)
    train_images, train_rows = data.load_with_rows(dataset, split, limit, *reading, sample=sample)
    names = data.class_names(train_images)
    if names is None:
        raise ExplorerError(
            f"fine-tuning needs labels, and {dataset} ({split}) has none: "
            "name the label column with --label-column"
        )
    eval_images, eval_rows = None, None
    if eval_split is not None:
        eval_images, eval_rows = data.load_with_rows(
            dataset, eval_split, limit, *reading, sample=sample
        )
        if data.class_names(eval_images) != names:
            raise ExplorerError(
                f"split {eval_split!r} has labels {data.class_names(eval_images)}, "
                f"split {split!r} has {names}: they must be the same"
            )

    set_seed(seed)  # before the model exists: tiny-vit's (and any new head's) weights are random
    with quiet_libraries():  # no bar per checkpoint save: the Trainer's own is enough
        network, processor, from_scratch = _load_model(str(model), names, trust_remote_code)
        preprocessing = embed.Preprocessing.from_processor(processor)
        train_set = _Pixels(train_images, preprocessing, progress)
        eval_set = None if eval_images is None else _Pixels(eval_images, preprocessing, progress)

        rate = lr if lr is not None else (SCRATCH_LR if from_scratch else PRETRAINED_LR)
        out.mkdir(parents=True, exist_ok=True)
        runs.write_training_record(
            out,
            data={
                "source": str(dataset),
                "data_dir": None if data_dir is None else str(data_dir),
                "split": split,
                "eval_split": eval_split,
                "limit": limit,
                "sample": sample,
                "seed": data.SAMPLE_SEED,
                "image_column": image_column,
                "label_column": label_column,
                "labels": names,
                "num_rows": train_images.num_rows,
                "eval_num_rows": None if eval_images is None else eval_images.num_rows,
                "rows": train_rows,
                "eval_rows": eval_rows,
            },
            training={
                "model": str(model),
                "max_steps": max_steps,
                "epochs": DEFAULT_EPOCHS if epochs is None and max_steps is None else epochs,
                "batch_size": batch_size,
                "lr": rate,
                "seed": seed,
                "checkpoints": checkpoints if save_steps is None else None,
                "save_steps": save_steps,
            },
        )
        # checkpoint-0 is the model before any step; its trainer_state.json comes at train begin.
        network.save_pretrained(out / "checkpoint-0")
        processor.save_pretrained(out / "checkpoint-0")
        trainer = _trainer(
            network,
            processor,
            preprocessing,
            train_set,
            eval_set,
            out,
            plan=_every(save_steps) if save_steps is not None else _spaced(checkpoints),
            max_steps=max_steps,
            epochs=epochs if epochs is not None else DEFAULT_EPOCHS,
            lr=rate,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=progress,
            logging_steps=logging_steps,
        )
        with _torch_threads(1 if from_scratch and device == "cpu" else None):
            trainer.train()
    return out


def tiny_vit(
    class_names: list[str],
    image_size: int = 16,
    patch_size: int = 4,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> tuple[torch.nn.Module, object]:
    """A small ViT image classifier with random weights, and its image processor.

    Sized for scikit-learn's 8x8 digits: 16 px images in 4 px patches give 16 tokens and a
    CLS token; 500 steps of 32 images take it from chance to about 96% test accuracy in well
    under a minute on a 2-core CPU.
    Returns (ViTForImageClassification, ViTImageProcessor resizing to image_size).
    """
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        **_label_config(class_names),
    )
    return ViTForImageClassification(config), embed.vit_processor(image_size)


@contextmanager
def _torch_threads(count: int | None):
    """Run on `count` CPU threads (None: as set). tiny-vit's matrices are too small to gain from
    more than one, and on a busy 2-core machine OpenMP's threads wait on each other: 500 steps
    took 7 s on one thread and 68 s on two (both at 96.4% accuracy, the same weights)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def checkpoint_steps(total: int, count: int = DEFAULT_CHECKPOINTS) -> list[int]:
    """The steps to checkpoint at in a run of `total` steps: `count` distinct steps from 0 to
    `total` (every step when the run has fewer), ascending, spaced geometrically so that they
    are denser early, where the embeddings change fastest.

    Each step after 1 is the previous one times the ratio that would reach `total` in the steps
    still to place (at least one more than the previous): for 5,625 steps and 25 checkpoints,
    0, 1, 2, 3, 4, 6, 8, 11, ... 3,443, 5,625. Raises ValueError for count < 2 or total < 1.
    """
    if count < 2 or total < 1:
        raise ValueError(f"need count >= 2 and total >= 1, not count={count}, total={total}")
    if total < count:
        return list(range(total + 1))
    if count == 2:
        return [0, total]
    steps = [0, 1]
    while len(steps) < count:
        left = count - len(steps)  # steps still to place, the last of them `total`
        previous = steps[-1]
        target = round(previous * (total / previous) ** (1 / left))
        # rounding up early could crowd the later steps: leave one step for each still to place
        steps.append(min(max(previous + 1, target), total - left + 1))
    return steps


def _spaced(count: int) -> Callable[[int], list[int]]:
    return lambda total: checkpoint_steps(total, count)


def _every(save_steps: int) -> Callable[[int], list[int]]:
    # the Trainer's own "steps" strategy: every save_steps steps, and the last step
    return lambda total: sorted({*range(0, total + 1, save_steps), total})


def _check_numbers(
    save_steps: int | None,
    max_steps: int | None,
    epochs: float | None,
    lr: float | None,
    batch_size: int,
    logging_steps: int,
    checkpoints: int = DEFAULT_CHECKPOINTS,
) -> None:
    if max_steps is not None and epochs is not None:
        raise ExplorerError("give --max-steps or --epochs, not both")
    if checkpoints < 2:
        raise ExplorerError(
            f"--checkpoints must be at least 2 (the start and the end), not {checkpoints}"
        )
    for name, value in (("--save-steps", save_steps), ("--batch-size", batch_size),
                        ("--max-steps", max_steps), ("logging_steps", logging_steps)):  # fmt: skip
        if value is not None and value < 1:
            raise ExplorerError(f"{name} must be at least 1, not {value}")
    for name, value in (("--epochs", epochs), ("--lr", lr)):
        if value is not None and not value > 0:
            raise ExplorerError(f"{name} must be above 0, not {value}")


def _label_config(class_names: list[str]) -> dict:
    # num_labels follows from id2label; passing both warns when a loaded config had another
    return {
        "id2label": dict(enumerate(class_names)),
        "label2id": {name: i for i, name in enumerate(class_names)},
    }


def _load_model(
    name: str, class_names: list[str], trust_remote_code: bool
) -> tuple[torch.nn.Module, object, bool]:
    """(model with a head for `class_names`, its image processor, whether it starts untrained)."""
    if name == TINY_VIT:
        model, processor = tiny_vit(class_names)
        return model, processor, True
    try:
        model = AutoModelForImageClassification.from_pretrained(
            name,
            ignore_mismatched_sizes=True,  # a head trained for other classes is replaced
            trust_remote_code=trust_remote_code,
            **_label_config(class_names),
        )
    except (OSError, ValueError) as error:
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        path = Path(name).expanduser()
        if path.exists():
            message = (
                f"cannot load model {name} ({detail}): give a folder with config.json and weights"
            )
        elif name.startswith((".", "/", "~")) or name.count("/") > 1:
            message = f"model folder {name} does not exist: give a folder, a Hub id or 'tiny-vit'"
        else:
            message = (
                f"cannot load model {name!r} from the Hub ({detail}): check the id and your "
                "connection, or give a local folder or 'tiny-vit'"
            )
        raise ExplorerError(message) from error
    # Every checkpoint must carry a processor config: a model without one gets embed's fallback.
    return model, embed.image_processor(name, trust_remote_code), False


class _Pixels(torch.utils.data.Dataset):
    """A labelled split as uint8 pixels (N, 3, H, W), decoded and resized once, and labels."""

    def __init__(
        self, images: datasets.Dataset, preprocessing: embed.Preprocessing, progress: bool
    ) -> None:
        self.pixels = embed.prepare_pixels(images, preprocessing, progress=progress)
        self.labels = torch.as_tensor(np.asarray(images["label"]), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.pixels[index], "labels": self.labels[index]}


class _Collator:
    """Stacks uint8 items into one batch and normalises it: the only per-batch preprocessing."""

    def __init__(self, preprocessing: embed.Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([item["pixels"] for item in items])
        return {
            "pixel_values": self.preprocessing.normalise(pixels),
            "labels": torch.stack([item["labels"] for item in items]),
        }


def _accuracy(prediction) -> dict[str, float]:
    """compute_metrics for the Trainer: the share of eval images whose top class is right."""
    logits = prediction.predictions
    if isinstance(logits, tuple):  # models that return more than their logits
        logits = logits[0]
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


class _SaveAt(TrainerCallback):
    """Saves a checkpoint (and evaluates, with `evaluate`) at the steps `plan(total steps)`
    gives; the Trainer's own save and eval strategies are off."""

    def __init__(self, plan: Callable[[int], list[int]], evaluate: bool) -> None:
        self.plan = plan
        self.evaluate = evaluate
        self.steps: set[int] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = set(self.plan(state.max_steps))  # known only once the Trainer has the data

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True
            if self.evaluate:
                control.should_evaluate = True


class _StartState(TrainerCallback):
    """Writes checkpoint-0's trainer_state.json once the Trainer knows the run's numbers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            start = dataclasses.replace(state, epoch=0.0, global_step=0, log_history=[])
            start.save_to_json(str(self.folder / "trainer_state.json"))


class _LogFile(TrainerCallback):
    """Appends one row per logged step to `log.csv` (columns runs.LOG_COLUMNS), at once.

    The Trainer logs the training loss and, at evaluation steps, the eval metrics a moment
    later in a second call: a row waits for its eval metrics only when an evaluation is due.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: dict[str, float] | None = None
        with open(path, "w", newline="") as file:
            csv.writer(file).writerow(runs.LOG_COLUMNS)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = {name: logs[name] for name in runs.LOG_COLUMNS if name in logs}
        if "loss" not in values and "eval_loss" not in values:
            return  # the end-of-training summary (train_loss, train_runtime, ...)
        step = state.global_step
        if self.pending is not None and self.pending["step"] != step:
            self._write()
        if self.pending is None:
            self.pending = {"step": step, "epoch": state.epoch or 0.0}
        self.pending.update(values)
        if "eval_loss" in values or not control.should_evaluate:
            self._write()

    def on_train_end(self, args, state, control, **kwargs):
        if self.pending is not None:
            self._write()

    def _write(self) -> None:
        row = self.pending or {}
        with open(self.path, "a", newline="") as file:  # closed per row: a killed run keeps it
            csv.writer(file).writerow(
                [_number(row[name]) if name in row else "" for name in runs.LOG_COLUMNS]
            )
        self.pending = None


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else f"{float(value):.8g}"


class _ProgressBar(ProgressCallback):
    """The Trainer's progress bar, with the latest loss and accuracy beside it rather than
    every log printed as a line (one a step here)."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.shown: dict[str, str] = {}
        if self.training_bar is not None:
            self.training_bar.set_description("fine-tune")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            for name in ("loss", "eval_accuracy"):
                if name in logs:
                    self.shown[name] = f"{logs[name]:.3g}"
            self.training_bar.set_postfix(self.shown, refresh=False)


def _trainer(
    model: torch.nn.Module,
    processor,
    preprocessing: embed.Preprocessing,
    train_set: _Pixels,
    eval_set: _Pixels | None,
    out: Path,
    *,
    plan: Callable[[int], list[int]],
    max_steps: int | None,
    epochs: float,
    lr: float,
    batch_size: int,
    seed: int,
    device: str,
    progress: bool,
    logging_steps: int,
):
    """A Trainer that checkpoints into `out` at the steps `plan(total steps)` gives (step 0
    excepted: finetune saves it) and logs to out/log.csv."""
    evaluate = eval_set is not None
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, EVAL_BATCH_SIZE),
        max_steps=max_steps if max_steps is not None else -1,
        num_train_epochs=epochs,
        learning_rate=lr,
        warmup_steps=WARMUP_RATIO,  # below 1: a share of the steps
        lr_scheduler_type="linear",
        save_strategy="no",  # _SaveAt saves (and evaluates) at the planned steps
        save_total_limit=None,  # every checkpoint is a frame of the timeline
        save_only_model=True,
        eval_strategy="no",
        eval_on_start=evaluate,  # the accuracy of checkpoint-0
        logging_strategy="steps",
        logging_steps=logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda",
        remove_unused_columns=False,  # the datasets are plain torch datasets
        disable_tqdm=not progress,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=_Collator(preprocessing),
        processing_class=processor,  # saved into every checkpoint
        compute_metrics=_accuracy if evaluate else None,
        callbacks=[
            _SaveAt(plan, evaluate),
            _LogFile(out / runs.LOG_FILE),
            _StartState(out / "checkpoint-0"),
        ],
    )
    # The Trainer prints every log as a line (PrinterCallback when quiet, a progress bar's
    # write() otherwise); with a log a step that is a flood: show a bar or nothing.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_ProgressBar())
    return trainer
