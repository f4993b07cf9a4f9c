#!/usr/bin/env bash
# One cell of the compatibility matrix: a fresh venv with torch TORCH and transformers TRANSFORMERS,
# this package installed from its wheel (not editable, no vLLM), then the non-vLLM test suite.
# Usage: scripts/compat.sh TORCH TRANSFORMERS WHEEL [pytest args...]
# Prints one line "compat: torch=... transformers=... <pytest summary>" and exits with pytest's code.
set -euo pipefail
torch_version=$1 transformers_version=$2 wheel=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/build/compat/torch-$torch_version-transformers-$transformers_version
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "torch==$torch_version"
"${pip[@]}" "$wheel[train,dev]" "transformers==$transformers_version" "torch==$torch_version"
# the suite must exercise the installed wheel, not the source tree
installed=$(cd /tmp && "$venv/bin/python" -c 'import llava_next_video_hf as m; print(m.__file__)')
case $installed in "$venv"/*) ;; *) echo "compat: imported $installed, not the wheel" >&2; exit 1 ;; esac
versions=$("$venv/bin/python" -c 'import torch, transformers; print(f"torch={torch.__version__} transformers={transformers.__version__}")')
log=$venv/pytest.log
set +e
(cd "$repo" && "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not vllm and not lmms_eval" tests "$@") >"$log" 2>&1
code=$?
set -e
tail -n 30 "$log"
mkdir -p "$repo/build/compat"
echo "compat: $versions python=$("$venv/bin/python" -c 'import platform; print(platform.python_version())') $(tail -n 1 "$log")" | tee -a "$repo/build/compat/summary.txt"
exit $code
