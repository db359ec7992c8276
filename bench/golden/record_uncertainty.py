"""Record Active-IT's prompt-uncertainty pieces by running the official functions.

Not run by CI: it needs the official code (PlusLabNLP/Active-IT, outside this repo). `src/ni_dataset.py`
(`random_drop_word`; it imports `datasets`) runs in this interpreter; `taskmap.py`
(`get_uncertainty_mean_var_bald`; it imports matplotlib and scipy) runs under `--python`
(tests/golden/uncertainty/README.md has the command). Inputs: texts with odd whitespace, empty and
one-word texts, drop rates 0 to 1, each after `random.seed(seed)`; per-example losses of the original
prompt and its perturbations (ties, zeros, large losses) as the prediction files hold them.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "uncertainty"

TEXTS = [
    "Given a sentence, classify its sentiment as positive or negative.",
    "  Translate   the\tfollowing\nsentence into French.  ",
    "",
    "word",
    "In this task, you are given a question and a context passage. Answer with a span from the passage.",
    "ÜNÏCODE — “quoted” words, and punctuation!!! ... end",
]
RATES = [0.0, 0.2, 0.5, 1.0]
SEEDS = [0, 7, 2311]

LOSSES = [  # per example: the loss under the original prompt, then under each perturbation
    [0.5, 0.7, 0.5, 1.2],
    [0.0, 0.0, 0.0, 0.0],
    [2.0, 1.0, 3.0, 2.0],
    [0.1, 0.1000001, 0.0999999, 0.1],
    [12.0, 0.01, 25.0, 12.0],
    [1.5, 1.5, 1.5, 1.5],
]

TASKMAP = """
import json, sys
sys.path.insert(0, sys.argv[1])
from taskmap import get_uncertainty_mean_var_bald
preds = json.loads(sys.stdin.read())
mean, spread = get_uncertainty_mean_var_bald(preds)
print(json.dumps({"mean": {k: float(v) for k, v in mean.items()}, "spread": {k: float(v) for k, v in spread.items()}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of PlusLabNLP/Active-IT")
    ap.add_argument("--python", default=sys.executable, help="interpreter with numpy, scipy, matplotlib, tqdm")
    args = ap.parse_args()
    code = args.official / "ActiveIT"
    sys.path.insert(0, str(code / "src"))
    from ni_dataset import random_drop_word

    drops = []
    for text in TEXTS:
        for rate in RATES:
            for seed in SEEDS:
                random.seed(seed)
                drops.append({"text": text, "p": rate, "seed": seed, "kept": random_drop_word(text, rate)})
    # one task per example, so the per-task figures are the per-example ones
    preds = [{"Task": f"task{i}", "id": f"ex{i}-{j}", "uncertainty": loss}
             for i, losses in enumerate(LOSSES) for j, loss in enumerate(losses)]  # fmt: skip
    done = subprocess.run([args.python, "-c", TASKMAP, str(code)], input=json.dumps(preds), text=True,
                          capture_output=True, check=True, cwd=code)  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "random_drop_word.json").write_text(json.dumps(drops, indent=1, ensure_ascii=False) + "\n")
    (OUT / "uncertainty_bald.json").write_text(json.dumps({"losses": LOSSES, **figures}, indent=1) + "\n")
    print(f"{len(drops)} drops, {len(LOSSES)} examples")


if __name__ == "__main__":
    main()
