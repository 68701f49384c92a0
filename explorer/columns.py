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
