#include "model/runtime.h"

#include <ATen/Config.h>
#include <ATen/Parallel.h>
#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif
#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/threads.h"

namespace vae {

namespace {
std::atomic<int> configured_threads{1};
}  // namespace

int ConfiguredThreads() { return configured_threads.load(); }

void SetCallingThreadTorchThreads(int threads) {
#if AT_PARALLEL_OPENMP
  // After ATen's lazy per-thread initialisation, which would otherwise reset it at this thread's first parallel op.
  at::internal::lazy_init_num_threads();
  omp_set_num_threads(std::max(1, threads));
#else
  (void)threads;
#endif
}

void ConfigureThreads(int threads) {
  static std::once_flag once;
  std::call_once(once, [threads] {
    int n = ResolveThreadCount(threads);
    configured_threads = n;
    at::set_num_threads(n);
    at::set_num_interop_threads(std::max(1, std::min(n, 4)));
  });
}

absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device: '", spec, "' requested but this LibTorch build sees no CUDA device"));
    }
    try {
      return c10::Device(spec);
    } catch (const c10::Error&) {
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device: unknown device '", spec, "', expected auto, cpu or cuda[:N]"));
}

}  // namespace vae
