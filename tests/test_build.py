"""`explorer build` end to end on digits with tiny models, checked against independent paths:
brute-force neighbours, cleanlab itself, and the models run the seed's way (processor + model).
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from cleanlab.outlier import OutOfDistribution
from cleanlab.rank import get_label_quality_scores
from conftest import DIGIT_NAMES
from transformers import AutoImageProcessor, AutoModelForImageClassification

from explorer import build, columns, data, embed, projection
from explorer.cli import main

N_IMAGES = 120
N_REFERENCE = 300


@pytest.fixture(scope="module")
def built(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    table = build(
        "digits",
        foundation=tiny_models["foundation"],
        finetuned=tiny_models["finetuned"],
        out=out,
        limit=N_IMAGES,
        reference_limit=N_REFERENCE,  # the default reference: digits' train split
        progress=False,
    )
    return out, table


def test_writes_every_column_with_its_feature(built):
    out, table = built
    # columns.DYNAMICS but movement come only from a build from a run (with a head and labels)
    run_only = set(columns.DYNAMICS) - {"movement"}
    assert table.column_names == [name for name in columns.DEFAULT if name not in run_only]
    reloaded = datasets.load_from_disk(str(out / "default"))
    features = reloaded.features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["nn_image"], datasets.Image)
    assert features["label"] == datasets.ClassLabel(names=DIGIT_NAMES)
    assert features["pred_label"] == datasets.ClassLabel(names=DIGIT_NAMES)
    assert features["embedding_ft"] == datasets.List(datasets.Value("float32"), length=32)
    assert features["nn_flag"] == datasets.Value("bool")
    assert reloaded.num_rows == N_IMAGES
    assert reloaded["label_str"][:5] == [DIGIT_NAMES[y] for y in reloaded["label"][:5]]


def test_run_json_records_inputs_and_timings(built):
    out, _ = built
    record = json.loads((out / "run.json").read_text())
    assert record["dataset"]["num_rows"] == N_IMAGES
    assert record["models"]["foundation"]["pooling"] == "cls"
    assert record["models"]["finetuned"]["dim"] == 32
    assert record["parameters"]["k"] == 10
    assert {"embed", "k-NN", "UMAP"} <= set(record["timings"])


def test_nearest_neighbour_matches_brute_force(built):
    _, table = built
    ft = np.array(table["embedding_ft"], dtype=np.float64)
    unit = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    np.fill_diagonal(distance, np.inf)
    nn_id = np.array(table["nn_id"])
    assert (nn_id != np.arange(N_IMAGES)).all()
    # ties aside, the same neighbour; always the same distance
    np.testing.assert_allclose(distance[np.arange(N_IMAGES), nn_id], distance.min(1), atol=1e-5)
    assert (nn_id == distance.argmin(1)).mean() > 0.97
    np.testing.assert_allclose(table["nn_distance"], distance.min(1), atol=1e-5)
    assert table["nn_flag"] == list(np.array(table["duplicate_count"]) > 0)  # the default
    first = table.select([0])
    assert np.array_equal(np.asarray(first["nn_image"][0]), np.asarray(table[nn_id[0]]["image"]))


@pytest.mark.parametrize("which", ["found", "ft"])
def test_outlier_scores_equal_cleanlab(built, tiny_models, which):
    """Fitted on the reference (digits' train split, the sample run.json names), as cleanlab's
    fit(features=REF).score(features=X) is."""
    out, table = built
    record = json.loads((out / "run.json").read_text())["reference"]
    assert (record["source"], record["split"], record["num_rows"]) == ("digits", "train", 300)
    reference = data.load("digits", split="train", limit=N_REFERENCE)
    model = tiny_models["foundation" if which == "found" else "finetuned"]
    preprocessing = embed.Preprocessing.from_model(model)
    pixels = embed.prepare_pixels(reference, preprocessing, progress=False)
    fitted = embed.embed_model(model, pixels, preprocessing, progress=False).vectors
    column = "embedding_foundation" if which == "found" else "embedding_ft"
    # float64 features: cleanlab's float32 cosine distances lose digits for near neighbours
    detector = OutOfDistribution()
    detector.fit(features=fitted.astype(np.float64), verbose=False)
    expected = detector.score(features=np.array(table[column], dtype=np.float64))
    np.testing.assert_allclose(table[f"outlier_score_{which}"], expected, atol=1e-5)


def test_embeddings_and_label_quality_match_the_seed_way(built, tiny_models):
    """The fine-tuned model run as the seed did (its processor, token 0) gives our embeddings,
    and cleanlab on its probabilities gives our label quality."""
    _, table = built
    processor = AutoImageProcessor.from_pretrained(tiny_models["finetuned"])
    model = AutoModelForImageClassification.from_pretrained(tiny_models["finetuned"]).eval()
    images = [image.convert("RGB") for image in table["image"]]
    with torch.no_grad():
        output = model(**processor(images=images, return_tensors="pt"), output_hidden_states=True)
        cls = model.vit.layernorm(output.hidden_states[-1])[:, 0].numpy()
    np.testing.assert_allclose(np.array(table["embedding_ft"]), cls, atol=2e-4)
    probabilities = output.logits.softmax(-1).numpy()
    np.testing.assert_array_equal(table["pred_label"], probabilities.argmax(1))
    np.testing.assert_allclose(table["pred_prob"], probabilities.max(1), atol=1e-5)
    expected = get_label_quality_scores(np.array(table["label"]), probabilities)
    np.testing.assert_allclose(table["label_quality"], expected, atol=1e-4)


def _standardised(xy: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit Frobenius norm, as scipy.spatial.procrustes does."""
    centred = xy - xy.mean(0)
    return centred / np.linalg.norm(centred)


def test_projections_are_finite_and_ft_pca_is_aligned(built):
    _, table = built
    maps = {}
    for name in ["umap_found", "umap_ft", "pca_found", "pca_ft"]:
        xy = np.column_stack([table[f"{name}_x"], table[f"{name}_y"]]).astype(np.float64)
        assert np.isfinite(xy).all() and xy.std(0).min() > 0, name
        maps[name] = xy
    # Aligned: the fine-tuned PCA needs no further rotation or mirroring to match the
    # foundation's. projection.disparity (scipy's Procrustes) rotates and scales optimally
    # first, so it is the same before and after alignment; from it follows the least squared
    # distance of the two standardised maps over rotations and mirrorings alone,
    # 2 - 2 sqrt(1 - disparity). The aligned map lies at it as it stands; the map before
    # alignment, and its mirror images, further away.
    reference, aligned = maps["pca_found"], maps["pca_ft"]
    unaligned = projection.pca_2d(np.array(table["embedding_ft"], dtype=np.float32))
    disparity = projection.disparity(reference, unaligned)
    assert projection.disparity(reference, aligned) == pytest.approx(disparity, abs=1e-6)
    optimum = 2 - 2 * np.sqrt(1 - disparity)

    def distance(points):
        return float(((_standardised(reference) - _standardised(points)) ** 2).sum())

    assert distance(aligned) == pytest.approx(optimum, abs=1e-5)
    before = [distance(unaligned * signs) for signs in ([1, 1], [-1, 1], [1, -1], [-1, -1])]
    assert distance(unaligned) > optimum + 1e-3
    assert min(before) >= optimum - 1e-6 and max(before) > optimum + 0.1


def test_annoy_neighbours_are_cosine_distances(tiny_models, tmp_path):
    table = build(
        "digits",
        foundation=tiny_models["foundation"],
        finetuned=tiny_models["finetuned"],
        out=tmp_path / "out",
        limit=60,
        knn="annoy",
        reference="none",
        progress=False,
    )
    ft = np.array(table["embedding_ft"], dtype=np.float64)
    unit = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    nn_id = np.array(table["nn_id"])
    cosine = 1 - (unit * unit[nn_id]).sum(1)
    np.testing.assert_allclose(table["nn_distance"], cosine, atol=1e-4)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["parameters"]["annoy_trees"] == 100


def test_cli_build_and_bad_input(tiny_models, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["build", "--dataset", "digits", "--foundation", str(tiny_models["foundation"]),
            "--finetuned", str(tiny_models["finetuned"]), "--out", str(out),
            "--reference", "digits:train", "--reference-limit", "100", "--limit", "40",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert datasets.load_from_disk(str(out / "default")).num_rows == 40
    assert json.loads((out / "run.json").read_text())["reference"]["num_rows"] == 100
    # an existing OUT from another request is refused without --overwrite, and left as it was
    before = (out / "run.json").read_text()
    assert main([*argv[:-2], "30", "--quiet"]) == 2
    assert "(its limit differ): pass --overwrite" in capsys.readouterr().err
    assert (out / "run.json").read_text() == before
    assert main(argv) == 0  # the same request again resumes (here: rebuilds) in place

    models = ["--foundation", str(tiny_models["foundation"]),
              "--finetuned", str(tiny_models["finetuned"])]  # fmt: skip
    assert main(["build", "--dataset", str(tmp_path / "nope"), *models,
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("explorer: error: dataset folder")
    assert not (tmp_path / "o").exists()

    assert main(["build", "--dataset", "digits", "--foundation", "no-such/model",
                 "--finetuned", "y", "--out", str(tmp_path / "o"), "--quiet"]) == 2  # fmt: skip
    assert "cannot load model 'no-such/model'" in capsys.readouterr().err

    assert main(["build", "--dataset", "digits", "--foundation", str(tmp_path / "no-model"),
                 "--finetuned", "y", "--out", str(tmp_path / "o"), "--quiet"]) == 2  # fmt: skip
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
