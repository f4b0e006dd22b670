// Process-wide LibTorch settings. Call ConfigureThreads once at start-up, before any tensor op.
#ifndef VAE_MODEL_RUNTIME_H_
#define VAE_MODEL_RUNTIME_H_

#include <c10/core/Device.h>

#include <string>

#include "absl/status/statusor.h"

namespace vae {

// Sets torch's intra-op thread count (Debian's LibTorch starts with 1) and its inter-op pool size. threads <= 0
// means the number of cores. Later calls are ignored (torch allows the inter-op size to be set only once).
void ConfigureThreads(int threads);

// The thread count ConfigureThreads settled on (cores when it was given 0); 1 before it ran.
int ConfiguredThreads();

// Sets the torch (OpenMP) intra-op thread count of the calling thread only. A server runs many threads that each
// call torch; giving each its own small count (and the process-wide default 1) stops idle OpenMP/pthreadpool teams
// from spinning on the cores that the busy threads need.
void SetCallingThreadTorchThreads(int threads);

// "cpu", "cuda", "cuda:N" or "auto" (cuda when this LibTorch build has a usable GPU, else cpu).
// INVALID_ARGUMENT for other text; FAILED_PRECONDITION for cuda without a GPU.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec);

}  // namespace vae

#endif  // VAE_MODEL_RUNTIME_H_
