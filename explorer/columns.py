"""What every column of an enriched dataset means: one place for the CLI, the card and the docs.

Names follow the seed article (and the datasets published from it), so its Spotlight
layouts and published datasets line up with ours.
"""

DEFAULT = {
    "image": "The image (RGB).",
    "label": "The dataset's label (ClassLabel). Absent when the dataset has no labels.",
    "label_str": "The label's name.",
    "embedding_foundation": "Embedding of the image by the foundation model (float32).",
    "embedding_ft": "Embedding of the image by the fine-tuned model (float32).",
    "outlier_score_found": "cleanlab OutOfDistribution score on the foundation embeddings, "
    "in (0, 1]; low means outlier.",
    "outlier_score_ft": "cleanlab OutOfDistribution score on the fine-tuned embeddings, "
    "in (0, 1]; low means outlier.",
    "nn_id": "Row of the nearest other image (fine-tuned embeddings, cosine).",
    "nn_image": "The nearest other image.",
    "nn_distance": "Cosine distance to the nearest other image (fine-tuned embeddings).",
    "nn_flag": "nn_distance below the near-duplicate threshold (--nn-threshold).",
    "umap_found_x": "UMAP of the foundation embeddings, x.",
    "umap_found_y": "UMAP of the foundation embeddings, y.",
    "umap_ft_x": "UMAP of the fine-tuned embeddings, x.",
    "umap_ft_y": "UMAP of the fine-tuned embeddings, y.",
    "pca_found_x": "PCA of the foundation embeddings, x.",
    "pca_found_y": "PCA of the foundation embeddings, y.",
    "pca_ft_x": "PCA of the fine-tuned embeddings, aligned onto the foundation's, x.",
    "pca_ft_y": "PCA of the fine-tuned embeddings, aligned onto the foundation's, y.",
    "pred_label": "Class predicted by the fine-tuned model's head.",
    "pred_prob": "Probability of the predicted class.",
    "label_quality": "cleanlab label quality score of the given label from the predicted "
    "probabilities, in [0, 1]; low means the label is likely wrong.",
    "is_label_issue": "cleanlab find_label_issues flags the given label as likely wrong.",
}

# Per-image training dynamics: columns of OUT/default once the build writes them.
DYNAMICS = {
    # Training dynamics, in a build from a run (explorer/dynamics.py), measured over its
    # checkpoints rather than over epochs or presentations as in the papers. The untouched
    # model (step 0) is left out when at least two trained checkpoints remain: its new head
    # predicts by chance.
    # - Swayamdipta et al., 2020, "Dataset Cartography: Mapping and Diagnosing Datasets with
    #   Training Dynamics", EMNLP: confidence, variability, correctness, region.
    # - Toneva et al., 2019, "An Empirical Study of Example Forgetting during Deep Neural
    #   Network Learning", ICLR: forgetting_events, learned_step.
    "confidence": "Mean over checkpoints of the probability the head gives the given label, "
    "in [0, 1] (Dataset Cartography).",
    "variability": "Standard deviation over checkpoints of that probability, in [0, 0.5] "
    "(Dataset Cartography).",
    "correctness": "Share of checkpoints whose head predicts the given label, in [0, 1] "
    "(Dataset Cartography).",
    "region": "Data-map region: ambiguous where variability is in the top third of the images "
    "and at least 0.1; else easy where confidence >= 0.5; else hard (Dataset Cartography).",
    "forgetting_events": "Times the image went from predicted right to wrong between "
    "consecutive checkpoints (Toneva et al.).",
    "learned_step": "Earliest step from which every checkpoint predicts the given label; "
    "null when the last one gets it wrong (Toneva et al.).",
    "movement": "1 - Jaccard overlap of the image's 10 nearest neighbours at the first and the "
    "last checkpoint, in [0, 1]: 0 = same neighbours, 1 = none in common.",
}

TIMELINE = {
    "row": "Row of the image in the default table.",
    "step": "Training step of the checkpoint (0 = the untouched model).",
    "epoch": "Training epoch of the checkpoint.",
    "pca_x": "PCA of this checkpoint's embeddings, aligned onto the previous checkpoint, x.",
    "pca_y": "PCA of this checkpoint's embeddings, aligned onto the previous checkpoint, y.",
    "umap_x": "UMAP of this checkpoint's embeddings, initialised from the previous checkpoint, x.",
    "umap_y": "UMAP of this checkpoint's embeddings, initialised from the previous checkpoint, y.",
    "outlier_score": "cleanlab OutOfDistribution score at this checkpoint; low means outlier.",
    "nn_id": "Row of the nearest other image at this checkpoint.",
    "nn_distance": "Cosine distance to the nearest other image at this checkpoint.",
    "pred_label": "Class predicted by this checkpoint's head.",
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
    "outliers": "Images flagged as outliers at this checkpoint.",
    "label_issues": "Images whose label cleanlab flags as likely wrong from this checkpoint's "
    "predictions. Only with a classification head and labels.",
    "movement": "Mean over images of 1 - Jaccard overlap of their 10 nearest neighbours "
    "since the previous checkpoint; NaN for the first.",
}
