"""Are the flag's false alarms on disputed images Fashion-MNIST's own label noise? A blind look.

`label_errors.py` finds that half or more of `is_label_issue`'s false alarms (flagged, label
not flipped) are images whose original label an independent model, never trained on them,
confidently disputes. Hard images that both models get wrong would look the same in those
numbers, so this draws a sample of them and asks a person.

`sheet` draws 48 such false alarms of one set and 16 controls (not flagged, not flipped, not
disputed), shuffled, each shown with its original label and the independent model's strongest
other class, nothing saying which is which; the key goes to
`benchmarks/fashion_mnist_label_audit.json`. The person writes one verdict per picture into
that file's `verdicts`, in order: `R` the original label is right, `W` it is wrong, `A`
either could be meant. `tally` unblinds them.

    python benchmarks/label_audit.py sheet [--set fashion-pair-simclr-large] [--out /tmp/audit]
    python benchmarks/label_audit.py tally
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import label_errors
import numpy as np

from explorer import output

AUDIT = Path(__file__).parent / "fashion_mnist_label_audit.json"
CASES, CONTROLS, SEED = 48, 16, 7
PER_SHEET = 32


def sheet(name: str, work: Path, out: Path) -> None:
    """The blind sheets (PNG, PER_SHEET pictures each) in `out` and the key in AUDIT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if AUDIT.exists() and json.loads(AUDIT.read_text())["verdicts"]:
        raise SystemExit(f"{AUDIT} holds verdicts: move it away before drawing a new audit")
    folder = work / name
    default = output.read(folder / "out").default
    given, true = np.asarray(default["label"]), np.load(folder / "true_labels.npy")
    flipped, flagged = given != true, np.asarray(default["is_label_issue"])
    source, limit = label_errors.SETS[name][:2]
    independent = label_errors.independent_probabilities(work, source, limit)
    disputed = label_errors.disputed(folder)
    rng = np.random.default_rng(SEED)
    cases = rng.choice(np.flatnonzero(flagged & ~flipped & disputed), CASES, replace=False)
    controls = rng.choice(np.flatnonzero(~flagged & ~flipped & ~disputed), CONTROLS, replace=False)
    items = rng.permutation(np.concatenate([cases, controls]))
    other = independent[items].copy()
    other[np.arange(len(items)), true[items]] = -1
    names = default.features["label"].names
    images = default.select(items.tolist())["image"]
    out.mkdir(parents=True, exist_ok=True)
    for first in range(0, len(items), PER_SHEET):
        figure, axes = plt.subplots(4, PER_SHEET // 4, figsize=(16, 9.5))
        for n, ax in enumerate(axes.flat, start=first):
            ax.imshow(images[n], cmap="gray", interpolation="nearest")
            ax.set_title(f"#{n}: {names[true[items[n]]]}\nor {names[other[n].argmax()]}?")
            ax.axis("off")
        figure.tight_layout()
        figure.savefig(out / f"sheet-{first // PER_SHEET}.png", dpi=62)
        plt.close(figure)
    key = {
        "set": name,
        "images": [int(i) for i in items],  # rows of the set
        "false_alarm": np.isin(items, cases).tolist(),  # False: a control
        "original_label": [names[true[i]] for i in items],
        "other_class": [names[o] for o in other.argmax(axis=1)],
        "verdicts": "",
    }
    AUDIT.write_text(json.dumps(key, indent=1) + "\n")
    print(f"sheets in {out}; write the verdicts into {AUDIT}")


def tally() -> dict:
    """Verdicts per group (false alarms, controls), from AUDIT; also written back into it."""
    audit = json.loads(AUDIT.read_text())
    verdicts = audit["verdicts"].split()
    if len(verdicts) != len(audit["images"]):
        raise SystemExit(f"{len(verdicts)} verdicts for {len(audit['images'])} pictures")
    groups = {"false_alarms": True, "controls": False}
    audit["tally"] = {
        group: dict(
            Counter(v for v, f in zip(verdicts, audit["false_alarm"], strict=True) if f == is_case)
        )
        for group, is_case in groups.items()
    }
    AUDIT.write_text(json.dumps(audit, indent=1) + "\n")
    print(json.dumps(audit["tally"]))
    return audit["tally"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["sheet", "tally"])
    parser.add_argument("--set", default="fashion-pair-simclr-large", choices=label_errors.SETS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/label-errors"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/label-audit"))
    args = parser.parse_args()
    if args.step == "sheet":
        sheet(args.set, args.work, args.out)
    else:
        tally()


if __name__ == "__main__":
    main()
