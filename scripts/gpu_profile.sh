#!/usr/bin/env bash
# Run profiling plans on a GPU machine (the device tool), writing rows and a log under $OUT.
#   bash scripts/gpu_profile.sh COMMIT plan_a [plan_b ...]
# .site (bitsandbytes, liger-kernel, pydantic unpacked from their wheels: DEVELOPERS.md) must be carried.
set -u
commit=$1; shift
export PYTHONPATH=$PWD/.site:$PWD:${PYTHONPATH:-}
export FTCALC_GIT_COMMIT=$commit PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
python3 -c "import torch,transformers,peft,accelerate,bitsandbytes,pydantic;print(torch.__version__,torch.version.cuda,transformers.__version__,peft.__version__,accelerate.__version__,bitsandbytes.__version__,pydantic.__version__)" 2>&1 | tail -1 | tee -a "$out/env.txt"
for plan in "$@"; do
  python3 -m ftcalc.measure.profile --batch "lab/plans/$plan.jsonl" --out "$out/$plan.jsonl" --timeout 240 2>&1 | grep -v -i warn | tee -a "$out/log.txt"
done
