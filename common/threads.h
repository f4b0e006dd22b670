// The one thread-count policy of every layer: a `--threads`-style option of 0 (or less) means "every core".
// Torch-free; thread-safe.
#ifndef VAE_COMMON_THREADS_H_
#define VAE_COMMON_THREADS_H_

namespace vae {

// `threads` when it is positive, else the number of cores std::thread::hardware_concurrency() reports (1 when it
// cannot tell).
int ResolveThreadCount(int threads);

}  // namespace vae

#endif  // VAE_COMMON_THREADS_H_
