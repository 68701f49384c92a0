"""What every column of an enriched dataset means: one place for the CLI, the card and the docs.

Names follow the seed article (and the datasets published from it), so its Spotlight
layouts and published datasets line up with ours.
"""

DEFAULT = {
    "image": "The image (RGB).",
    "label": "The dataset's label (ClassLabel). Absent when the dataset has no labels.",
    "label_str": "The label's name; null for an unlabelled image (label -1).",
    "embedding_foundation": "Embedding of the image by the foundation model (float32).",
    "embedding_ft": "Embedding of the image by the fine-tuned model (float32).",
    # Outliers are measured against a reference set (explorer/reference.py; run.json's
    # `reference`): the data the model was trained on by default, or the reviewed images
    # themselves without one (the seeds' score). The combined score and its threshold
    # (explorer/outliers.py): per view (foundation, fine-tuned, pixels), z = (d - median) /
    # IQR, d an image's mean distance to its 10 nearest reference images (cosine between
    # embeddings; Euclidean between cleanvision's pixel properties, explorer/properties.py),
    # median and IQR those of the reference's own leave-one-out d; z = the largest of the
    # views'; T = the 99th percentile of the reference's own z (run.json:
    # review.outlier_threshold_z); outlier_score = 2 ** (-max(z, 0) / T).
    "outlier_score": "All three views combined against the reference set, in (0, 1]; low "
    "means outlier: 1 up to the reference's median distance, 0.5 at the threshold that 1 % "
    "of reference images exceed. Any view alone can make an image odd.",
    "is_outlier": "outlier_score below 0.5: farther from the reference, in the foundation, "
    "the fine-tuned or the pixel view, than 99 % of reference images are from the rest of it.",
    "outlier_score_found": "cleanlab OutOfDistribution score on the foundation embeddings, "
    "fitted on the reference set, in (0, 1]; low means outlier.",
    "outlier_score_ft": "cleanlab OutOfDistribution score on the fine-tuned embeddings, "
    "fitted on the reference set, in (0, 1]; low means outlier.",
    "outlier_score_pixels": "The same score on the pixels' brightness, its 5th and 99th "
    "percentiles, entropy, blurriness and grey-level spread (cleanvision's image properties, "
    "each scaled by the reference's IQR), in (0, 1]; low means a dark, bright, flat, noisy "
    "or blurred image for this dataset, whatever the models make of it.",
    "nn_id": "Row of the nearest other image (fine-tuned embeddings, cosine).",
    "nn_image": "The nearest other image.",
    "nn_distance": "Cosine distance to the nearest other image (fine-tuned embeddings).",
    "nn_flag": "The image has a near-duplicate in the set (duplicate_count > 0); with "
    "--nn-threshold X, nn_distance < X instead.",
    # Near-duplicates (explorer/duplicates.py): the same decoded pixels, or a cosine distance
    # below a threshold calibrated on edited copies (JPEG re-export, thumbnail scaled back up,
    # brighter copy) of 100 of the images, capped so that at most 1 in 1,000 reference images
    # has one; in the view (foundation or fine-tuned) that tells the copies from different
    # images best. Or below the uncapped distance where the two pictures (grey, 16 x 16 px)
    # correlate more than all but 1 in 1,000 reference images with their nearest other one.
    # run.json: review.near_duplicate_view, near_duplicate_threshold and
    # near_duplicate_pixel_correlation.
    "duplicate_group": "Group of exact or near-duplicates the image belongs to (0, 1, ... by "
    "first row); -1 when it has none.",
    "duplicate_count": "How many other images of the set are in its duplicate group.",
    # Only with a reference set: absent from a build with reference none.
    "nn_reference_id": "Source row, in the reference split, of the nearest reference image "
    "(cosine, in the near-duplicate view; never the image itself). Only with a reference set.",
    "nn_reference_distance": "Cosine distance to that reference image (the near-duplicate "
    "view: run.json's review.near_duplicate_view). Only with a reference set.",
    "is_leak": "The image, or a near-duplicate of it, is in the reference (training) data: "
    "same pixels, or nn_reference_distance below the near-duplicate threshold. Only with a "
    "reference set.",
    "umap_found_x": "UMAP of the foundation embeddings, x.",
    "umap_found_y": "UMAP of the foundation embeddings, y.",
    "umap_ft_x": "UMAP of the fine-tuned embeddings, started from the foundation's map and "
    "aligned onto it, x.",
    "umap_ft_y": "UMAP of the fine-tuned embeddings, started from the foundation's map and "
    "aligned onto it, y.",
    "pca_found_x": "PCA of the foundation embeddings, x.",
    "pca_found_y": "PCA of the foundation embeddings, y.",
    "pca_ft_x": "PCA of the fine-tuned embeddings, aligned onto the foundation's, x.",
    "pca_ft_y": "PCA of the fine-tuned embeddings, aligned onto the foundation's, y.",
    "pred_label": "Class predicted by the fine-tuned model's head.",
    "pred_prob": "Probability of the predicted class.",
    "label_quality": "cleanlab label quality score of the given label from the predicted "
    "probabilities, in [0, 1]; low means the label is likely wrong. Absent, with it "
    "is_label_issue, where labels cannot be scored (unlabelled images, a single class).",
    "is_label_issue": "The given label is likely wrong: in a build from a run, by what the "
    "whole run says of it (explorer.dynamics.label_issues); else cleanlab find_label_issues on "
    "the fine-tuned model's probabilities. run.json's label_issues.method says which.",
}

# Per-image training dynamics, columns of OUT/default (explorer/trajectory.py): movement in
# every build, the others only in a build from a run whose checkpoints have a classification
# head, of a dataset with labels.
DYNAMICS = {
    # Training dynamics, in a build from a run (explorer/dynamics.py), measured over its
    # checkpoints rather than over epochs or presentations as in the papers; each checkpoint
    # weighs the training steps since the one before, so geometrically spaced checkpoints
    # (dense early) measure over training time as evenly spaced epochs do. The untouched
    # model (step 0) is left out when at least two trained checkpoints remain: its new head
    # predicts by chance.
    # - Swayamdipta et al., 2020, "Dataset Cartography: Mapping and Diagnosing Datasets with
    #   Training Dynamics", EMNLP: confidence, variability, correctness, region.
    # - Toneva et al., 2019, "An Empirical Study of Example Forgetting during Deep Neural
    #   Network Learning", ICLR: forgetting_events, learned_step.
    "confidence": "Mean over training (checkpoints weighted by the steps since the previous "
    "one) of the probability the head gives the given label, in [0, 1] (Dataset Cartography). "
    "Only in a build from a run with a head and labels.",
    "variability": "Standard deviation over training of that probability, in [0, 0.5] "
    "(Dataset Cartography). Only in a build from a run with a head and labels.",
    "correctness": "Share of training (checkpoints weighted as for confidence) whose head "
    "predicts the given label, in [0, 1] (Dataset Cartography). Only in a build from a run "
    "with a head and labels.",
    "region": "Data-map region: ambiguous where variability is in the top third of the images "
    "and at least 0.1; else easy where confidence >= 0.5; else hard (Dataset Cartography). "
    "Only in a build from a run with a head and labels.",
    "forgetting_events": "Times the image went from predicted right to wrong between "
    "consecutive checkpoints (Toneva et al.). Only in a build from a run with a head and labels.",
    "learned_step": "Earliest step from which every checkpoint predicts the given label; "
    "null when the last one gets it wrong (Toneva et al.). Only in a build from a run with a "
    "head and labels.",
    "movement": "1 - Jaccard overlap of the image's 10 nearest neighbours at the first and the "
    "last checkpoint (foundation and fine-tuned model in a two-model build), in [0, 1]: 0 = "
    "same neighbours, 1 = none in common.",
}
DEFAULT.update(DYNAMICS)

TIMELINE = {
    "row": "Row of the image in the default table.",
    "step": "Training step of the checkpoint (0 = the untouched model).",
    "epoch": "Training epoch of the checkpoint.",
    "pca_x": "PCA of this checkpoint's embeddings, aligned onto the previous checkpoint, x.",
    "pca_y": "PCA of this checkpoint's embeddings, aligned onto the previous checkpoint, y.",
    "umap_x": "UMAP of this checkpoint's embeddings, started from the previous checkpoint's "
    "and aligned onto it, x.",
    "umap_y": "UMAP of this checkpoint's embeddings, started from the previous checkpoint's "
    "and aligned onto it, y.",
    "outlier_score": "cleanlab OutOfDistribution score at this checkpoint, fitted on the "
    "reference set; low means outlier.",
    "is_outlier": "At this checkpoint, farther from the reference set than 99 % of reference "
    "images are from the rest of it (mean distance to the 10 nearest).",
    "nn_id": "Row of the nearest other image at this checkpoint.",
    "nn_distance": "Cosine distance to the nearest other image at this checkpoint.",
    "pred_label": "Class predicted by this checkpoint's head.",
    "movement": "1 - Jaccard overlap of the image's 10 nearest neighbours at this checkpoint "
    "and at the previous one, in [0, 1]; NaN at the first checkpoint.",
    "label_quality": "Probability this checkpoint's head gives the given label, in [0, 1] "
    "(cleanlab's self-confidence label quality); low means the label looks wrong. Only with a "
    "classification head and labels.",
}

TRAINING_LOG = {
    "step": "Training step.",
    "epoch": "Epoch (fractional).",
    "loss": "Training loss logged at this step.",
    "learning_rate": "Learning rate at this step.",
    "eval_loss": "Evaluation loss, where evaluated.",
    "eval_accuracy": "Evaluation accuracy, where evaluated.",
}

CHECKPOINTS = {
    "step": "Training step of the checkpoint (0 = the untouched model).",
    "epoch": "Training epoch of the checkpoint; NaN when unknown.",
    "loss": "Training loss logged at or just before this step; NaN when none was.",
    "accuracy": "Share of images the checkpoint's head predicts as their label. "
    "Only with a classification head.",
    "per_class_accuracy": "Accuracy within each class (its recall), one value per class in "
    "label order; NaN for a class absent from the data. Only with a classification head.",
    "knn_accuracy": "Share of images whose 10 nearest other images (this checkpoint's "
    "embeddings, cosine) vote for their label. Only with labels.",
    "class_separation": "Cosine silhouette score of the classes in this checkpoint's "
    "embeddings, in [-1, 1] (on a sample of 2,000 images above that); high = classes apart. "
    "Only with labels.",
    "mean_outlier_score": "Mean cleanlab OutOfDistribution score of the images at this "
    "checkpoint; low means many outliers.",
    "outliers": "Images flagged as outliers at this checkpoint (the timeline's is_outlier).",
    "label_issues": "Images whose label cleanlab find_label_issues flags as likely wrong from "
    "this checkpoint's predictions (the misclassified ones where cleanlab cannot run). Only "
    "with a classification head and labels.",
    "movement": "Mean over images of 1 - Jaccard overlap of their 10 nearest neighbours "
    "since the previous checkpoint; NaN for the first.",
}
