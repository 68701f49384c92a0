"""The `explorer` console script: every command is a thin call into a library function.

Bad input raises `ExplorerError`; here it becomes one line on stderr and exit code 2
(`--debug` shows the traceback instead). The libraries are imported by the command that needs
them, so that `explorer --help` answers at once; choices and defaults come from
`explorer.config`, which imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from explorer import __version__
from explorer.config import (
    DEVICES,
    DTYPES,
    KNN_METHODS,
    POOLINGS,
    PRESETS,
    TIMELINE_UMAPS,
    BuildConfig,
    defaults,
)
from explorer.errors import ExplorerError

EXIT_BAD_INPUT = 2
# explorer.findings.FORMATS, retyped: that module imports datasets (a test keeps them equal).
FINDINGS_FORMATS = ("table", "csv", "json")
BUILD = defaults()  # BuildConfig's defaults: the build options' defaults


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, not {text!r}") from None
    return width, height


def _port(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be 'auto' or a number, not {text!r}") from None


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        help="Hub id, image folder, save_to_disk folder, 'digits' or 'fashion-mnist' "
        "(no default: required, but for build --preset)",
    )
    parser.add_argument("--split", help="split to use (default: test, else the only split)")
    parser.add_argument("--limit", type=int, help="use only N images (default: all)")
    parser.add_argument(
        "--sample",
        choices=["random", "first"],
        default="random",
        help="which N images --limit keeps: a seeded random sample stratified by label, "
        "the same each time, or the first N (default: random)",
    )
    parser.add_argument("--image-column", help="name of the image column (default: found)")
    parser.add_argument("--label-column", help="name of the label column (default: found)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder of fashion-mnist's IDX files (default: Debian's, else the Hub)",
    )


def _build(args: argparse.Namespace) -> int | None:
    from explorer.distributed import launched

    code = launched(args.argv, args.processes, debug=args.debug)  # None: build here
    if code is not None:
        return code
    from explorer.pipeline import build

    settings = {field.name: getattr(args, field.name) for field in fields(BuildConfig)}
    build(
        **settings,
        preset=args.preset,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )


def _finetune(args: argparse.Namespace) -> None:
    from explorer.finetune import finetune

    finetune(
        args.dataset,
        model=args.model,
        out=args.out,
        split=args.split,
        eval_split=args.eval_split,
        limit=args.limit,
        image_column=args.image_column,
        label_column=args.label_column,
        data_dir=args.data_dir,
        sample=args.sample,
        checkpoints=args.checkpoints,
        save_steps=args.save_steps,
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=not args.quiet,
    )


def _show(args: argparse.Namespace) -> None:
    from explorer.spotlight import serve

    serve(args.out, layout=args.layout, host=args.host, port=args.port, browser=not args.no_browser)


def _layouts(args: argparse.Namespace) -> None:
    from explorer.layouts import write_layouts

    for path in write_layouts(args.out):
        print(path)


def _animate(args: argparse.Namespace) -> None:
    from explorer.animate import animate

    path = animate(
        args.out,
        args.file,
        projection=args.projection,
        fps=args.fps,
        size=args.size,
        top_outliers=args.top_outliers,
        tween=args.tween,
        progress=not args.quiet,
        panel=args.panel,
        leaderboard=args.leaderboard,
    )
    print(path)


def _publish(args: argparse.Namespace) -> None:
    from explorer.hub import publish

    where = publish(
        args.out,
        repo_id=args.repo_id,
        private=args.private,
        folder=args.folder,
        embeddings_timeline=not args.no_embeddings_timeline,
    )
    print(where)


def _findings(args: argparse.Namespace) -> None:
    from explorer.findings import finding_rows, save_rows, write_rows

    lines = finding_rows(args.out, top=args.top)
    if args.file is None:
        sys.stdout.write(write_rows(lines, args.format or "table"))
    else:
        print(save_rows(lines, args.file, args.format))


def _plot(args: argparse.Namespace) -> None:
    from explorer.plot import plot

    print(plot(args.out, args.file, width=args.width, dpi=args.dpi))


def _demo(args: argparse.Namespace) -> None:
    from explorer.demo import demo

    demo(args.out, show=not args.no_show, overwrite=args.overwrite, progress=not args.quiet)


class _Formatter(argparse.HelpFormatter):
    """argparse's, except that indented lines (the examples) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n".join(
            line if line.startswith("  ") else fill(line, width, indent)
            for line in text.splitlines()
        )


def _command(commands, name: str, summary: str, description: str, example: str):
    """A subcommand whose help ends with an example."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=_Formatter,
    )


def make_parser() -> argparse.ArgumentParser:
    """The `explorer` command line: one subcommand per library function."""
    parser = argparse.ArgumentParser(
        prog="explorer",
        description="Enrich an image-classification dataset with embeddings, outlier scores and "
        "projections before and during fine-tuning, and review it in Renumics Spotlight.",
        epilog="example:\n  explorer demo",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_finetune(commands)
    _add_show(commands)
    _add_findings(commands)
    _add_layouts(commands)
    _add_animate(commands)
    _add_publish(commands)
    _add_plot(commands)
    _add_demo(commands)
    return parser


def _add_build(commands) -> None:
    """`explorer build`: the options of `explorer.build`, defaults from BuildConfig."""
    build = _command(
        commands,
        "build",
        summary="embed a dataset with two models (or every checkpoint of a run) and enrich it",
        description="Write OUT/default (one row per image), OUT/run.json and, with --run, "
        "OUT/timeline and OUT/training_log.",
        example="explorer build --dataset digits --run RUN --out OUT",
    )
    _add_source_arguments(build)
    build.add_argument(
        "--foundation",
        help="foundation model: Hub id or local folder (default: none; give both models, "
        "--run or --preset)",
    )
    build.add_argument(
        "--finetuned", help="fine-tuned model: Hub id or local folder (default: none)"
    )
    build.add_argument(
        "--run",
        type=Path,
        help="folder of checkpoints from `explorer finetune`, instead of the two models "
        "(default: none)",
    )
    build.add_argument(
        "--reference",
        metavar="SRC[:SPLIT]",
        help="what outliers and leaks are measured against: a dataset as --dataset takes it "
        "(SPLIT: train when left out), or 'none' (within the set, as the seeds did) "
        "(default: the data the --run was trained on; else the dataset's train split when "
        "another split is reviewed; else none)",
    )
    build.add_argument(
        "--reference-limit",
        type=int,
        default=BUILD["reference_limit"],
        help="reference images at most: a seeded sample stratified by label (default: %(default)s)",
    )
    build.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="the seed article's dataset and models (needs the Hub) (default: none)",
    )
    build.add_argument("--out", type=Path, required=True, help="the OUT folder to write")
    build.add_argument(
        "--batch-size", type=int, default=BUILD["batch_size"], help="(default: %(default)s)"
    )
    build.add_argument(
        "--device",
        default=BUILD["device"],
        choices=DEVICES,
        help="auto: cuda when there is one (default: %(default)s)",
    )
    build.add_argument(
        "--dtype",
        default=BUILD["dtype"],
        choices=DTYPES,
        help="float32 (exact), or bfloat16: faster on GPUs and recent CPUs (float16: GPU only) "
        "(default: %(default)s)",
    )
    build.add_argument(
        "--processes",
        type=int,
        default=1,
        help="share the embedding over N processes (GPUs) through Accelerate "
        "(default: %(default)s)",
    )
    build.add_argument(
        "--pooling",
        default=BUILD["pooling"],
        choices=POOLINGS,
        help="auto: the CLS token where the model has one, else its pooled output "
        "(default: %(default)s)",
    )
    build.add_argument(
        "--neighbors",
        dest="knn",
        default=BUILD["knn"],
        choices=KNN_METHODS,
        help="k-NN: exact (blocked, cosine) or the seed's approximate Annoy index "
        "(default: %(default)s)",
    )
    build.add_argument(
        "--annoy-trees",
        type=int,
        default=BUILD["annoy_trees"],
        help="trees of the Annoy index, with --neighbors annoy (default: %(default)s)",
    )
    build.add_argument(
        "--nn-threshold",
        type=float,
        default=BUILD["nn_threshold"],
        help="nn_flag = nn_distance below this cosine distance, the seed's fixed threshold "
        "(its 0.3 on Annoy's angular distance is 0.045 here) (default: off: nn_flag = the image "
        "has a near-duplicate, by a threshold calibrated on edited copies)",
    )
    build.add_argument(
        "--timeline-umap",
        default=BUILD["timeline_umap"],
        choices=TIMELINE_UMAPS,
        help="aligned: a UMAP per checkpoint, each started from the one before; off: for the "
        "first and last checkpoint only (default: %(default)s)",
    )
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT of explorer build (never another folder) (default: off)",
    )
    build.add_argument(
        "--skip-bad-images", action="store_true", help="drop unreadable images (named in run.json)"
    )
    build.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the Hub (off)"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(handler=_build)


def _add_finetune(commands) -> None:
    """`explorer finetune`: the options of `explorer.finetune`."""
    finetune = _command(
        commands,
        "finetune",
        summary="fine-tune a model with frequent checkpoints and a loss log",
        description="Write RUN/checkpoint-<step>/ folders (checkpoint-0: the untouched model) "
        "and RUN/log.csv, for `explorer build --run RUN`.",
        example="explorer finetune --dataset digits --model tiny-vit --out RUN --max-steps 480",
    )
    _add_source_arguments(finetune)
    finetune.add_argument("--model", required=True, help="Hub id, local folder or 'tiny-vit'")
    finetune.add_argument("--out", type=Path, required=True, help="run folder (checkpoints)")
    finetune.add_argument(
        "--eval-split", help="split to evaluate on while training (default: none, no evaluation)"
    )
    finetune.add_argument(
        "--checkpoints",
        type=int,
        default=25,
        help="about N checkpoints from the start to the end, denser early (default: 25)",
    )
    finetune.add_argument(
        "--save-steps",
        type=int,
        default=None,
        help="a checkpoint every N steps and at the end instead (default: off, see --checkpoints)",
    )
    length = finetune.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, help="train N steps (default: see --epochs)")
    length.add_argument("--epochs", type=float, help="train N epochs (default: 3)")
    finetune.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: 5e-5 for a pretrained model, 1e-3 for tiny-vit)",
    )
    finetune.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    finetune.add_argument(
        "--seed", type=int, default=0, help="seed of the new weights (default: %(default)s)"
    )
    finetune.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="auto: cuda when there is one (default: %(default)s)",
    )
    finetune.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the Hub (off)"
    )
    finetune.add_argument("--quiet", action="store_true", help="no progress bars")
    finetune.set_defaults(handler=_finetune)


def _add_show(commands) -> None:
    """`explorer show OUT`."""
    show = _command(
        commands,
        "show",
        summary="open an enriched dataset in Spotlight",
        description="Serve OUT in Renumics Spotlight until Ctrl-C.",
        example="explorer show OUT --layout pre_post_ft",
    )
    show.add_argument("out", metavar="OUT", type=Path, help="the folder `explorer build` wrote")
    show.add_argument(
        "--layout",
        help="layout name (pre_post_ft, ...) or a JSON file (default: the one OUT fits)",
    )
    show.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: %(default)s)"
    )
    show.add_argument(
        "--port",
        type=_port,
        default="auto",
        help="port, or auto: a free one (default: %(default)s)",
    )
    show.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    show.set_defaults(handler=_show)


def _add_findings(commands) -> None:
    """`explorer findings OUT`."""
    findings = _command(
        commands,
        "findings",
        summary="list what to look at first: outliers, leaks, label issues, duplicates",
        description="List the findings of OUT (what `explorer show` lists as Spotlight "
        "issues), one line per finding and image, image row and path first: a table, CSV "
        "or JSON.",
        example="explorer findings OUT --top 20 --out findings.csv",
    )
    findings.add_argument("out", metavar="OUT", type=Path, help="the folder `explorer build` wrote")
    findings.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="at most N images per finding, the first ones (default: all)",
    )
    findings.add_argument(
        "--format",
        choices=FINDINGS_FORMATS,
        help="table, csv or json (default: from the suffix of --out, .csv or .json; else table)",
    )
    findings.add_argument(
        "--out",
        dest="file",
        metavar="FILE",
        type=Path,
        help="write to FILE (default: print)",
    )
    findings.set_defaults(handler=_findings)


def _add_layouts(commands) -> None:
    """`explorer layouts`."""
    layouts = _command(
        commands,
        "layouts",
        summary="write the Spotlight layouts as JSON",
        description="Write every Spotlight layout explorer offers as a JSON file.",
        example="explorer layouts --out layouts",
    )
    layouts.add_argument(
        "--out", type=Path, default=Path("layouts"), help="folder to write (default: %(default)s)"
    )
    layouts.set_defaults(handler=_layouts)


def _add_animate(commands) -> None:
    """`explorer animate OUT --out FILE`."""
    from explorer.film_choices import LEADERBOARDS, PANELS, PROJECTIONS  # imports nothing

    animate = _command(
        commands,
        "animate",
        summary="render the embeddings during fine-tuning",
        description="Render a film of the embeddings, checkpoint by checkpoint, from the OUT "
        "folder of `explorer build --run`.",
        example="explorer animate OUT --out film.gif",
    )
    animate.add_argument(
        "out", metavar="OUT", type=Path, help="the folder `explorer build --run` wrote"
    )
    animate.add_argument(
        "--out",
        dest="file",
        metavar="FILE",
        type=Path,
        required=True,
        help="the film to write, FILE.gif or FILE.mp4",
    )
    animate.add_argument(
        "--projection",
        default="pca",
        choices=PROJECTIONS,
        help="the timeline's map to show (default: %(default)s)",
    )
    animate.add_argument(
        "--fps", type=float, default=4, help="frames per second (default: %(default)s)"
    )
    animate.add_argument(
        "--size", type=_size, default=(1280, 720), help="WxH in pixels (default: 1280x720)"
    )
    animate.add_argument(
        "--top-outliers",
        type=int,
        default=8,
        help="places on the leaderboard (default: %(default)s)",
    )
    animate.add_argument(
        "--leaderboard",
        default="outliers",
        choices=LEADERBOARDS,
        help="what the leaderboard ranks per checkpoint: outliers (lowest outlier score), "
        "label-issues (lowest probability of the given label; needs labels and a head) or "
        "moved (most new neighbours since the previous checkpoint; empty at the first) "
        "(default: %(default)s)",
    )
    animate.add_argument(
        "--panel",
        default="loss",
        choices=PANELS,
        help="the curve under the leaderboard: the training loss, or accuracy or k-NN accuracy "
        "per checkpoint (from OUT/checkpoints) (default: %(default)s)",
    )
    animate.add_argument(
        "--tween",
        type=int,
        default=0,
        help="frames between checkpoints (default: %(default)s)",
    )
    animate.add_argument("--quiet", action="store_true", help="no progress bar")
    animate.set_defaults(handler=_animate)


def _add_publish(commands) -> None:
    """`explorer publish OUT`."""
    publish = _command(
        commands,
        "publish",
        summary="publish to the Hugging Face Hub",
        description="Publish OUT's tables, layouts and a dataset card as a Hub dataset repo.",
        example="explorer publish OUT --repo-id USER/NAME",
    )
    publish.add_argument("out", metavar="OUT", type=Path, help="the folder `explorer build` wrote")
    publish.add_argument("--repo-id", required=True, help="the dataset repo, USER/NAME")
    publish.add_argument(
        "--private", action="store_true", help="make the repo private, when it is created"
    )
    publish.add_argument(
        "--folder", type=Path, help="only write the repo to this folder (default: upload it)"
    )
    publish.add_argument(
        "--no-embeddings-timeline",
        action="store_true",
        help="leave the timeline's embeddings out",
    )
    publish.set_defaults(handler=_publish)


def _add_plot(commands) -> None:
    """`explorer plot OUT --out FILE`."""
    plot = _command(
        commands,
        "plot",
        summary="draw the training curves",
        description="Draw loss, accuracy (overall and per class), k-NN accuracy and class "
        "separation against the training step, from the OUT folder of `explorer build --run`.",
        example="explorer plot OUT --out curves.png",
    )
    plot.add_argument(
        "out", metavar="OUT", type=Path, help="the folder `explorer build --run` wrote"
    )
    plot.add_argument(
        "--out",
        dest="file",
        metavar="FILE",
        type=Path,
        required=True,
        help="the picture to write: FILE.png, FILE.svg or FILE.pdf",
    )
    plot.add_argument(
        "--width", type=float, default=8.0, help="width in inches (default: %(default)s)"
    )
    plot.add_argument(
        "--dpi", type=int, default=100, help="pixels per inch of a PNG (default: %(default)s)"
    )
    plot.set_defaults(handler=_plot)


def _add_demo(commands) -> None:
    """`explorer demo`."""
    demo = _command(
        commands,
        "demo",
        summary="the whole story offline, on scikit-learn's digits",
        description="Fine-tune a small ViT on digits, build OUT from every checkpoint, render "
        "the film and open Spotlight: offline, in about half a minute.",
        example="explorer demo --out explorer-demo",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("explorer-demo"),
        help="folder to write (default: %(default)s)",
    )
    demo.add_argument("--no-show", action="store_true", help="do not open Spotlight at the end")
    demo.add_argument("--overwrite", action="store_true", help="start afresh, not reuse")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)


def main(argv: list[str] | None = None) -> int:
    """Run `explorer ARGV`; return the exit code (2 for bad input, 130 when interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    args.argv = argv
    if not args.debug:  # "explorer: warning: ...", not the file and line it came from
        warnings.formatwarning = lambda message, *_, **__: f"explorer: warning: {message}\n"
    try:
        code = args.handler(args)
    except ExplorerError as error:
        if args.debug:
            raise
        print(f"explorer: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("explorer: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
