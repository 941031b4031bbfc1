"""The matrix-throughput limit for bench/gpu/prefill.ts: a dense bf16 8192 x 8192 x 8192 torch.matmul
(cuBLAS on tensor cores), 3 untimed warm-up calls, then the median of 10 timed with CUDA events.
8192 is large enough that tiles fill every SM many times over and the launch is ~0.1% of the call,
so this is the best rate this GPU gives a GEMM in practice (below the datasheet's peak). Prints one
JSON line.
"""
import json
import statistics

import torch

N = 8192
WARMUP = 3
TIMED = 10


def main():
    a = torch.randn(N, N, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(N, N, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(N, N, device="cuda", dtype=torch.bfloat16)
    for _ in range(WARMUP):
        torch.matmul(a, b, out=c)
    runs = []
    for _ in range(TIMED):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end))
    ms = statistics.median(runs)
    print(json.dumps({"n": N, "ms": ms, "runs_ms": runs, "tflops": 2 * N**3 / (ms * 1e-3) / 1e12,
                      "device": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
