"""explorer: what fine-tuning does to an image classifier's embeddings, reviewed in Spotlight.

The library calls (each also a command of the `explorer` console script):

- `explorer.build(...)`    dataset + two models, or a run of checkpoints -> enriched Dataset
                           (its settings: `explorer.BuildConfig`)
- `explorer.finetune(...)` fine-tune with frequent checkpoints and a loss log
- `explorer.show(...)`     open an enriched dataset in Renumics Spotlight
- `explorer.animate(...)`  the film of the embeddings during fine-tuning (GIF/MP4)
- `explorer.publish(...)`  the dataset and its card to the Hugging Face Hub
- `explorer.demo(...)`     all of it, offline, on scikit-learn's digits
"""

from importlib import import_module

__version__ = "0.1.0"

# Imported on first use so that `explorer --help` and `import explorer` stay fast.
_PUBLIC = {
    "build": "explorer.pipeline",
    "BuildConfig": "explorer.config",
    "finetune": "explorer.finetune",
    "show": "explorer.spotlight",
    "animate": "explorer.animate",
    "publish": "explorer.hub",
    "demo": "explorer.demo",
    "ExplorerError": "explorer.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")
