#!/usr/bin/env bash
# The wheels gpu_run.sh installs on a lent GPU machine, downloaded here into .whl/ (ignored by git; the device
# tool's `carry: [".whl"]` takes them along). That machine's image has torch with CUDA, transformers and
# huggingface_hub but no network and none of these: diffusers (the versions this checkout uses), the audio
# libraries and their needs. Its python is 3.12, on x86-64 manylinux.
#
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.whl/" >>.git/info/exclude; }
version() { python -m pip show "$1" 2>/dev/null | awk '/^Version:/ {print $2}'; }
wanted=()
for name in diffusers soundfile soxr pyloudnorm torchsde cffi; do  # pinned to what runs here
    v=$(version "$name")
    wanted+=("$name${v:+==$v}")
done
wanted+=(trampoline pycparser)  # torchsde's and cffi's own needs
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${wanted[@]}"
ls -1 .whl
du -sh .whl
