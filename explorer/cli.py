"""The `explorer` console script: every command is a thin call into a library function.

Bad input raises `ExplorerError`; here it becomes one line on stderr and exit code 2
(`--debug` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from explorer.errors import ExplorerError

EXIT_BAD_INPUT = 2


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
        help="Hub id, image folder, save_to_disk folder, 'digits' or 'fashion-mnist'",
    )
    parser.add_argument("--split", help="split to use (default: test, else the only split)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--image-column", help="name of the image column (default: found)")
    parser.add_argument("--label-column", help="name of the label column (default: found)")
    parser.add_argument("--data-dir", type=Path, help="folder of fashion-mnist's IDX files")


def _build(args: argparse.Namespace) -> int | None:
    import os

    if args.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        from explorer.distributed import launch

        argv = _without_option(args.argv, "--processes")
        return launch(argv, args.processes, debug=args.debug)
    from explorer.pipeline import build

    build(
        args.dataset,
        foundation=args.foundation,
        finetuned=args.finetuned,
        run=args.run,
        preset=args.preset,
        out=args.out,
        split=args.split,
        limit=args.limit,
        image_column=args.image_column,
        label_column=args.label_column,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        pooling=args.pooling,
        neighbors=args.neighbors,
        annoy_trees=args.annoy_trees,
        nn_threshold=args.nn_threshold,
        timeline_umap=args.timeline_umap,
        overwrite=args.overwrite,
        skip_bad_images=args.skip_bad_images,
        trust_remote_code=args.trust_remote_code,
        progress=not args.quiet,
    )


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv less `option VALUE` (or `option=VALUE`)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept


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
    from explorer.spotlight import write_layouts

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


def _demo(args: argparse.Namespace) -> None:
    from explorer.demo import demo

    demo(args.out, show=not args.no_show, overwrite=args.overwrite, progress=not args.quiet)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explorer",
        description="Enrich an image-classification dataset with embeddings, outlier scores and "
        "projections before and during fine-tuning, and review it in Renumics Spotlight.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="embed a dataset with two models (or every checkpoint of a run) and enrich it",
        description="Write OUT/default (one row per image), OUT/run.json and, with --run, "
        "OUT/timeline and OUT/training_log.",
    )
    _add_source_arguments(build)
    build.add_argument("--foundation", help="foundation model: Hub id or local folder")
    build.add_argument("--finetuned", help="fine-tuned model: Hub id or local folder")
    build.add_argument("--run", type=Path, help="folder of checkpoints from `explorer finetune`")
    build.add_argument(
        "--preset",
        choices=["cifar10", "cifar100", "mnist", "beans"],
        help="the seed article's dataset and models (needs the Hub)",
    )
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    build.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="float32 (exact), or bfloat16: faster on GPUs and recent CPUs (float16: GPU only)",
    )
    build.add_argument(
        "--processes",
        type=int,
        default=1,
        help="share the embedding over N processes (GPUs) through Accelerate",
    )
    build.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean", "pooler"])
    build.add_argument("--neighbors", default="exact", choices=["exact", "annoy"])
    build.add_argument("--annoy-trees", type=int, default=100)
    build.add_argument("--nn-threshold", type=float, default=0.3)
    build.add_argument("--timeline-umap", default="aligned", choices=["off", "aligned"])
    build.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    build.add_argument(
        "--skip-bad-images", action="store_true", help="drop unreadable images (named in run.json)"
    )
    build.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the Hub (off)"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(handler=_build)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a model with frequent checkpoints and a loss log"
    )
    _add_source_arguments(finetune)
    finetune.add_argument("--model", required=True, help="Hub id, local folder or 'tiny-vit'")
    finetune.add_argument("--out", type=Path, required=True, help="run folder (checkpoints)")
    finetune.add_argument("--eval-split", help="split to evaluate on while training")
    finetune.add_argument("--save-steps", type=int, default=10)
    length = finetune.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int)
    length.add_argument("--epochs", type=float)
    finetune.add_argument("--lr", type=float, default=None, help="learning rate")
    finetune.add_argument("--batch-size", type=int, default=32)
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    finetune.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the Hub (off)"
    )
    finetune.add_argument("--quiet", action="store_true")
    finetune.set_defaults(handler=_finetune)

    show = commands.add_parser("show", help="open an enriched dataset in Spotlight")
    show.add_argument("out", type=Path, help="output folder of `explorer build`")
    show.add_argument("--layout", help="layout name (pre_post_ft, ...) or a JSON file")
    show.add_argument("--host", default="127.0.0.1")
    show.add_argument("--port", type=_port, default="auto")
    show.add_argument("--no-browser", action="store_true")
    show.set_defaults(handler=_show)

    layouts = commands.add_parser("layouts", help="write the Spotlight layouts as JSON")
    layouts.add_argument("--out", type=Path, default=Path("layouts"))
    layouts.set_defaults(handler=_layouts)

    animate = commands.add_parser("animate", help="render the embeddings during fine-tuning")
    animate.add_argument("out", type=Path, help="output folder of `explorer build --run`")
    animate.add_argument("--out", dest="file", type=Path, required=True, help="FILE.gif|FILE.mp4")
    animate.add_argument("--projection", default="pca", choices=["pca", "umap"])
    animate.add_argument("--fps", type=float, default=4)
    animate.add_argument("--size", type=_size, default=(1280, 720), help="WxH in pixels")
    animate.add_argument("--top-outliers", type=int, default=8)
    animate.add_argument("--tween", type=int, default=0, help="frames between checkpoints")
    animate.add_argument("--quiet", action="store_true")
    animate.set_defaults(handler=_animate)

    publish = commands.add_parser("publish", help="publish to the Hugging Face Hub")
    publish.add_argument("out", type=Path, help="output folder of `explorer build`")
    publish.add_argument("--repo-id", required=True, help="USER/NAME")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--folder", type=Path, help="only write the repo to this folder")
    publish.add_argument("--no-embeddings-timeline", action="store_true")
    publish.set_defaults(handler=_publish)

    demo = commands.add_parser("demo", help="the whole story offline, on scikit-learn's digits")
    demo.add_argument("--out", type=Path, default=Path("explorer-demo"))
    demo.add_argument("--no-show", action="store_true", help="do not open Spotlight at the end")
    demo.add_argument("--overwrite", action="store_true")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
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
