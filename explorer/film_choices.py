"""What a film can show: the choices of `explorer animate`, as `explorer.film` uses them.

This module imports nothing, so the CLI takes its choices from here without loading datasets
(`explorer.film` re-exports them).
"""

PROJECTIONS = ("pca", "umap")  # the timeline's map
MAX_TOP_OUTLIERS = 20  # places on the leaderboard, at most
# The curve under the leaderboard: the training loss, or a column of OUT/checkpoints.
PANELS = ("loss", "accuracy", "knn-accuracy")
# What the leaderboard ranks per checkpoint: the lowest outlier_score, the lowest label_quality
# (probability of the given label) or the highest movement since the previous checkpoint.
LEADERBOARDS = ("outliers", "label-issues", "moved")
