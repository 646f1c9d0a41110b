#!/usr/bin/env bash
# Baselines on the 270 published PET-CT-IQA-DS images in ../shared/data/pet-ct-iqa-ds-dev:
# train on patient P1, test on patient P2 (the level table, BRISQUE-SVR and NIQE are fitted on P1).
# Run from the repository root:  bash benchmarks/dev_baselines.sh [DEV_FOLDER]
set -euo pipefail
dev="$(cd "${1:-../shared/data/pet-ct-iqa-ds-dev}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$dev/test" "$dev/label.txt" "$work/"
.venv/bin/python - "$dev/groups.csv" "$work/groups.csv" <<'PY'
import sys

import pandas as pd

groups = pd.read_csv(sys.argv[1])
groups["split"] = groups["patient"].map({"P1": "train", "P2": "test"})
groups.to_csv(sys.argv[2], index=False)
PY
.venv/bin/petctiqa evaluate --data "$work" --baselines --bootstrap 1000
