"""The seed articles' code, as published, for `benchmarks/pipeline.py` to time against explorer.

Kept as close to the articles as today's libraries allow; the only changes are marked "changed":
`AutoFeatureExtractor` is now `AutoImageProcessor`, and the frame layout (which the article only
shows as a picture) follows `benchmarks/animate.py`'s `seed_way`. Nothing here is explorer's.

- `huggingface_embedding`: "pre-post-fine-tuning-embeddings", section 2.1 (`datasets.map` with
  the image processor at batch 24; embedding = `last_hidden_state[:, 0]`; no `torch.no_grad`).
- `outlier_score_by_embeddings_cleanlab`, `nearest_neighbor_annoy`: sections 2.2 and 2.3.
- `make_pca`: "animation-during-fine-tuning" (PCA re-fitted per checkpoint, then Procrustes
  onto the previous frame).
- `make_umap`: umap-learn with its defaults, what Spotlight's similarity map runs per request
  (`n_epochs` given: that many epochs, so that both sides of a benchmark do the same work).
- `make_frames`: one matplotlib figure per checkpoint saved as PNG, then imageio's GIF.

Run as a script, it is the seed's whole pipeline in one process, for `benchmarks/pipeline.py`
to time end to end against `explorer build` + `explorer animate`: per checkpoint of a run
folder the embedding, cleanlab's outlier score, Annoy's nearest neighbour, PCA + Procrustes and
UMAP, then the frames and the GIF.

    python benchmarks/seed_recipe.py RUN --dataset fashion-mnist --limit 10000 --gif film.gif \
        [--umap-epochs 200,100,100,100,100]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import datasets
import imageio.v2 as imageio
import matplotlib
import numpy as np
import pandas as pd
import torch
from annoy import AnnoyIndex
from cleanlab.outlier import OutOfDistribution
from scipy.spatial import procrustes
from sklearn.decomposition import PCA
from transformers import AutoImageProcessor, AutoModel

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def extract_embeddings(model, feature_extractor, image_name="image"):
    """Utility to compute embeddings (the article's, unchanged)."""
    device = model.device

    def pp(batch):
        images = batch[image_name]
        inputs = feature_extractor(
            images=[x.convert("RGB") for x in images], return_tensors="pt"
        ).to(device)
        embeddings = model(**inputs).last_hidden_state[:, 0].cpu()
        return {"embedding": embeddings}

    return pp


def huggingface_embedding(
    df, image_name="image", modelname="google/vit-base-patch16-224", batched=True, batch_size=24
):
    """Compute embeddings using huggingface models (the article's)."""
    # changed: AutoFeatureExtractor is now AutoImageProcessor
    feature_extractor = AutoImageProcessor.from_pretrained(modelname)
    model = AutoModel.from_pretrained(modelname, output_hidden_states=True)
    dataset = datasets.Dataset.from_pandas(df).cast_column(image_name, datasets.Image())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extract_fn = extract_embeddings(model.to(device), feature_extractor, image_name)
    updated_dataset = dataset.map(extract_fn, batched=batched, batch_size=batch_size)
    df_temp = updated_dataset.to_pandas()
    df_emb = pd.DataFrame()
    df_emb["embedding"] = df_temp["embedding"]
    return df_emb


def outlier_score_by_embeddings_cleanlab(df, embedding_name="embedding"):
    """Calculate outlier score by embeddings using cleanlab (the article's)."""
    embs = np.stack(df[embedding_name].to_numpy())
    ood = OutOfDistribution()
    ood_train_feature_scores = ood.fit_score(features=np.stack(embs))
    df_out = pd.DataFrame()
    df_out["outlier_score_embedding"] = ood_train_feature_scores
    return df_out


def nearest_neighbor_annoy(df, embedding_name="embedding", threshold=0.3, tree_size=100):
    """Find nearest neighbor using annoy (the article's)."""
    embs = df[embedding_name]
    t = AnnoyIndex(len(embs[0]), "angular")
    for idx, x in enumerate(embs):
        t.add_item(idx, x)
    t.build(tree_size)
    images = df["image"]
    df_nn = pd.DataFrame()
    nn_id = [t.get_nns_by_item(i, 2)[1] for i in range(len(embs))]
    df_nn["nn_id"] = nn_id
    df_nn["nn_image"] = [images[i] for i in nn_id]
    df_nn["nn_distance"] = [t.get_distance(i, nn_id[i]) for i in range(len(embs))]
    df_nn["nn_flag"] = df_nn.nn_distance < threshold
    return df_nn


def make_pca(embedding_np, pca_np=None):
    """PCA to 2-D, then Procrustes onto the previous frame `pca_np` (the article's make_pca)."""
    embedding_np_flat = embedding_np.reshape(-1, embedding_np.shape[-1])
    pca = PCA(n_components=2)
    pca_np_new = pca.fit_transform(embedding_np_flat)
    if pca_np is None:  # the first checkpoint has no previous frame
        return pca_np_new
    _, pca_np_new, disparity = procrustes(pca_np, pca_np_new)
    return pca_np_new


def make_umap(embedding_np, n_epochs=None):
    """umap-learn with its defaults (euclidean, 15 neighbours by its own NN-descent); `n_epochs`
    None: umap-learn's (500 up to 10,000 points, 200 above)."""
    import umap

    return umap.UMAP(n_epochs=n_epochs).fit_transform(embedding_np)


def make_frames(frames, images, labels, class_names, log, gif, size=(1280, 720), fps=4, top=8):
    """One PNG per checkpoint (scatter by class, top-`top` outliers leaderboard, loss curve),
    then a GIF. `frames`: per checkpoint (step, pca (N, 2), outlier scores (N,));
    `images`: a datasets.Dataset with `image`; `log`: (steps, losses). Returns the frame count.
    """
    pngs = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (step, pca_np, scores) in enumerate(frames):
            fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
            grid = fig.add_gridspec(5, 6)
            ax = fig.add_subplot(grid[:, :4])
            for code, name in enumerate(class_names):
                mine = labels == code
                ax.scatter(pca_np[mine, 0], pca_np[mine, 1], s=2, label=name)
            ax.legend(loc="upper right")
            ax.set_title(f"step {step}")
            order = np.argsort(scores)[:top]  # low score = outlier
            for k, row in enumerate(order):
                thumb = fig.add_subplot(grid[k // 2, 4 + k % 2])
                thumb.imshow(images[int(row)]["image"])
                thumb.set_title(f"{k + 1}. {class_names[labels[row]]} {scores[row]:.2f}")
                thumb.axis("off")
            loss = fig.add_subplot(grid[4, 4:])
            loss.plot(log[0], log[1])
            loss.axvline(step, color="red")
            png = Path(folder) / f"{i:04d}.png"
            fig.savefig(png)
            plt.close(fig)
            pngs.append(png)
        imageio.mimsave(gif, [imageio.imread(p) for p in pngs], duration=1000 / fps, loop=0)
    return len(pngs)


def run_all(run, dataset, limit, gif, umap_epochs=None, size=(1280, 720), fps=4, top=8):
    """The whole recipe over every `checkpoint-<step>` folder of `run`, in step order; returns
    the number of frames. `umap_epochs`: one per checkpoint (None: umap-learn's defaults)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from explorer import data  # the same images as explorer's side, nothing else of explorer

    images = data.load(dataset, split="test", limit=limit)
    df = images.to_pandas()
    labels = np.asarray(images["label"])
    checkpoints = sorted(Path(run).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    log = pd.read_csv(Path(run) / "log.csv")
    frames, pca_np = [], None
    for i, checkpoint in enumerate(checkpoints):
        vectors = huggingface_embedding(df, modelname=str(checkpoint))["embedding"]
        embedded = df.assign(embedding=vectors)
        scores = outlier_score_by_embeddings_cleanlab(embedded)["outlier_score_embedding"]
        scores = scores.to_numpy()
        nearest_neighbor_annoy(embedded, threshold=0.3, tree_size=100)
        embedding_np = np.stack(embedded["embedding"].to_numpy()).astype(np.float32)
        pca_np = make_pca(embedding_np, pca_np)
        make_umap(embedding_np, None if umap_epochs is None else umap_epochs[i])
        frames.append((int(checkpoint.name.split("-")[1]), pca_np, scores))
    names = images.features["label"].names
    log = (log["step"].to_numpy(), log["loss"].to_numpy())
    return make_frames(frames, images, labels, names, log, gif, size=size, fps=fps, top=top)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The seed recipe, whole, over a run folder.")
    parser.add_argument("run", help="a folder of checkpoint-<step> folders and log.csv")
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=10_000, help="(default: %(default)s)")
    parser.add_argument("--gif", required=True, help="the film to write")
    parser.add_argument(
        "--umap-epochs",
        help="comma-separated epochs per checkpoint (default: umap-learn's own)",
    )
    args = parser.parse_args()
    epochs = None if args.umap_epochs is None else [int(e) for e in args.umap_epochs.split(",")]
    datasets.disable_progress_bars()
    run_all(args.run, args.dataset, args.limit, args.gif, epochs)
