"""explorer: what fine-tuning does to an image classifier's embeddings, reviewed in Spotlight.

The library calls (each also a command of the `explorer` console script):

- `explorer.build(...)`    dataset + two models, or a run of checkpoints -> enriched Dataset
                           (its settings: `explorer.BuildConfig`)
- `explorer.finetune(...)` fine-tune with frequent checkpoints and a loss log
- `explorer.show(...)`     open an enriched dataset in Renumics Spotlight
- `explorer.findings(...)` what to look at first (outliers, leaks, label issues, ...), a list
- `explorer.animate(...)`  the film of the embeddings during fine-tuning (GIF/MP4)
- `explorer.plot(...)`     the training curves (loss, accuracy, k-NN accuracy, separation)
- `explorer.publish(...)`  the dataset and its card to the Hugging Face Hub
- `explorer.demo(...)`     all of it, offline, on scikit-learn's digits
"""

import sys
import types
from importlib import import_module

__version__ = "0.1.0"

# Imported on first use so that `explorer --help` and `import explorer` stay fast.
_PUBLIC = {
    "build": "explorer.pipeline",
    "BuildConfig": "explorer.config",
    "finetune": "explorer.finetune",
    "show": "explorer.spotlight",
    "findings": "explorer.findings",
    "animate": "explorer.animate",
    "plot": "explorer.plot",
    "publish": "explorer.hub",
    "demo": "explorer.demo",
    "ExplorerError": "explorer.errors",
}

__all__ = sorted(_PUBLIC)


class _Package(types.ModuleType):
    """Keeps `explorer.animate` (and every public name) the function once its module is
    imported: importing `explorer.animate` would otherwise set the package's attribute
    `animate` to the module, and `explorer.animate(...)` would fail after the first call."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")
