// `vae-bench png`: what a PNG answer costs with each encoder and setting (bench/png_bench.cc).
#ifndef VAE_BENCH_PNG_BENCH_H_
#define VAE_BENCH_PNG_BENCH_H_

#include <string>

namespace vae::bench {

// Runs the mode (`preset`: the model when no --checkpoint is given); returns the process exit code. Prints a table on
// stderr and one JSON line on stdout.
int RunPng(const std::string& preset);

}  // namespace vae::bench

#endif  // VAE_BENCH_PNG_BENCH_H_
