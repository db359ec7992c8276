#!/usr/bin/env bash
# Set up a fresh machine and run the main job offline on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "local,data"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/instructkit doctor --short  # which engine runs the local model here, and why
.venv/bin/instructkit run examples/pipeline.yaml --out out
.venv/bin/instructkit report out
echo
echo "Results: out/selected.jsonl (the selected SFT set), out/manifest.json, out/report.html"
.venv/bin/python - <<'PY'
import json
for s in json.load(open("out/manifest.json"))["steps"]:
    if s.get("kind") == "export" and s.get("folder"):
        splits = ", ".join(f"{k} {v}" for k, v in s["export"]["splits"].items())
        print(f"Ready to train: {s['folder']}/ ({s['method']}: {splits})  card: {s['folder']}/README.md")
PY
