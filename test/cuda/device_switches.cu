// What init_device_info makes of the MC_CUDA_* switches in this process's environment, one line
// (test/cuda/device-switches.test.ts runs it on the emulator, whose GPU is an sm_90 with wgmma code).
// A value check_environment refuses prints its line instead, and exits 2.
#include <cstdio>

#include "mc_cuda.cuh"

int main() {
  char message[512];
  if (!mc::check_environment(message, sizeof message)) {
    std::printf("refused: %s\n", message);
    return 2;
  }
  if (cudaError_t e = mc::init_device_info()) {
    std::printf("init_device_info: %s\n", cudaGetErrorString(e));
    return 1;
  }
  const mc::DeviceInfo& d = mc::device_info();
  std::printf("pdl=%d between=%d early=%d wgmma=%d wgmma_all=%d deep=%d a16=%d prefetch=%lld,%lld chain=%d layer=%d x=%d attn512=%d cluster=%d\n", d.pdl, d.pdl_between,
              d.pdl_early_trigger, d.wgmma, d.wgmma_all, d.deep_small_tile, d.a16_min_rows, (long long)(d.l2_prefetch_bytes >> 20), (long long)(d.l2_prefetch_attention_bytes >> 20),
              d.decode_chain, d.decode_layer, d.x_stream, d.attn_wide, d.attn_cluster_positions);
  return 0;
}
