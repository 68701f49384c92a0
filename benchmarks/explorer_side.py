"""explorer's whole pipeline in one process, the counterpart of `benchmarks/seed_recipe.py` run as
a script, for `benchmarks/pipeline.py` to time end to end: `explorer.build(run=...)` (embedding
every checkpoint, k-NN, outlier scores, nearest neighbours, PCA, UMAP, the tables), then
`explorer.animate` (PCA maps, as the seed's frames).

    python benchmarks/explorer_side.py RUN --dataset fashion-mnist --limit 10000 --out OUT \
        --gif film.gif [--dtype bfloat16]

Clear the run's embedding caches (`checkpoint-*/explorer-cache`) first, or it reads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE, FPS, TOP = (1280, 720), 4, 8  # as benchmarks/pipeline.py gives the seed's frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a folder of checkpoint-<step> folders and log.csv")
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=10_000, help="(default: %(default)s)")
    parser.add_argument("--out", required=True, help="the OUT folder to write")
    parser.add_argument("--gif", required=True, help="the film to write")
    parser.add_argument("--dtype", default="float32", help="(default: %(default)s)")
    args = parser.parse_args()

    # From their modules: once `explorer.animate` (the module) is imported, the package's
    # `explorer.animate` attribute is that module, not the function
    from explorer.animate import animate
    from explorer.pipeline import build

    build(
        args.dataset,
        split="test",
        limit=args.limit,
        run=args.run,
        out=args.out,
        dtype=args.dtype,
        overwrite=True,
        progress=False,
    )
    animate(
        args.out, args.gif, projection="pca", fps=FPS, size=SIZE, top_outliers=TOP, progress=False
    )


if __name__ == "__main__":
    main()
