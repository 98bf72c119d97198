#!/usr/bin/env bash
# Make the RecBole 1.2.1 venv used by benchmarks/recbole/run_recbole.py.
#
#   bash benchmarks/recbole/setup.sh          # creates benchmarks/.recbole-venv
#   RECBOLE_VENV=/some/dir bash benchmarks/recbole/setup.sh
#
# Idempotent: if the venv already imports recbole with exactly these pins
# (recorded in <venv>/.pins), it does nothing. Otherwise it (re)installs into
# the venv. Needs Python 3.11 and PyPI.
set -euo pipefail

# ---- pins -------------------------------------------------------------------
# torch first, pinned: a plain `torch` (or anything pulling an unpinned newer
# torch) downloads a multi-GB CUDA build; 2.13.0 resolves to the CPU wheel on
# this machine's disk. Every later pip call is constrained to it too.
TORCH_PIN="torch==2.13.0"
# RecBole itself, installed with --no-deps: its metadata requires
# ray<=2.6.3, thop, plotly, psutil, tabulate, which only quick_start /
# hyper-parameter tuning / get_flops import; we never import those paths.
RECBOLE_PIN="recbole==1.2.1"
PINS=(
  # numpy<2: Config.compatibility_settings() does `np.float = np.float_`,
  # np.float_ was removed in numpy 2 -> AttributeError at Config().
  "numpy==1.26.4"
  # scipy<1.13: LightGCN.get_norm_adj_mat() calls dok_matrix._update, removed
  # in scipy 1.13 (RecBole issue #2034).
  "scipy==1.12.0"
  # pandas<2.2: 2.2 warns on RecBole's chained `feat[field].fillna(inplace=True)`
  # (dataset.py:648) and under pandas 3 copy-on-write that fill silently does
  # nothing; 2.1.4 is the last quiet release that works with numpy 1.26.
  "pandas==2.1.4"
  # scikit-learn: imported by recbole.evaluator / some models at import time;
  # pinned to a release built for numpy 1.x / scipy 1.12.
  "scikit-learn==1.5.2"
  # exact pins from RecBole 1.2.1's own metadata (logger.py)
  "colorlog==4.7.2"
  "colorama==0.4.4"
  # imported at module level by recbole.utils.utils (texttable, and
  # torch.utils.tensorboard -> tensorboard); pinned for reproducibility only.
  "tensorboard==2.21.0"
  "texttable==1.7.2"
  "tqdm==4.70.1"
  "PyYAML==6.0.4"
)
# -----------------------------------------------------------------------------

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(realpath -m "${RECBOLE_VENV:-$HERE/../.recbole-venv}")"
PY="${PYTHON:-python3}"
STAMP_TEXT="$(printf '%s\n' "$TORCH_PIN" "$RECBOLE_PIN" "${PINS[@]}")"

if [ -x "$VENV/bin/python" ] \
   && [ -f "$VENV/.pins" ] && [ "$(cat "$VENV/.pins")" = "$STAMP_TEXT" ] \
   && "$VENV/bin/python" -c "import recbole, recbole.config, recbole.data" >/dev/null 2>&1; then
  echo "recbole venv ready: $VENV ($("$VENV/bin/python" -c 'import recbole; print(recbole.__version__)'))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
rm -f "$VENV/.pins"
VPY="$VENV/bin/python"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf '%s\n' "$TORCH_PIN" "${PINS[@]}" > "$CONSTRAINTS"

pip_install() {
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install -q -c "$CONSTRAINTS" "$@"
}

pip_install "$TORCH_PIN"
pip_install "${PINS[@]}"
pip_install --no-deps "$RECBOLE_PIN"

"$VPY" - <<'EOF'
import numpy, scipy, pandas, torch, recbole
from recbole.config import Config            # noqa: F401  (numpy<2 check)
from recbole.data import create_dataset      # noqa: F401
from recbole.model.sequential_recommender import SASRec  # noqa: F401
from recbole.model.general_recommender import LightGCN   # noqa: F401
import scipy.sparse as sp
assert hasattr(sp.dok_matrix((1, 1)), "_update"), "scipy too new for LightGCN"
assert torch.__version__.startswith("2.13.0"), torch.__version__
print("recbole", recbole.__version__, "torch", torch.__version__, "numpy", numpy.__version__,
      "scipy", scipy.__version__, "pandas", pandas.__version__)
EOF

printf '%s\n' "$STAMP_TEXT" > "$VENV/.pins"
echo "recbole venv ready: $VENV"
