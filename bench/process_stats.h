// What a process has used so far, read from the kernel: for the benchmarks' "CPU per call" and "context switches per
// call" figures (vae-bench grpc, vae-grpc-floor). Linux only; header-only, no torch, no gRPC.
#ifndef VAE_BENCH_PROCESS_STATS_H_
#define VAE_BENCH_PROCESS_STATS_H_

#include <sys/resource.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace vae::bench {

// CPU time of every thread of process `pid` so far, seconds (/proc/PID/task/*/schedstat: nanoseconds on a CPU);
// -1 when it cannot be read.
inline double ProcessCpuSeconds(int64_t pid) {
  std::error_code ec;
  int64_t ns = 0;
  bool any = false;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream stat(task.path() / "schedstat");
    int64_t on_cpu = 0;
    if (stat >> on_cpu) {
      ns += on_cpu;
      any = true;
    }
  }
  return any ? ns * 1e-9 : -1.0;
}

// Voluntary plus involuntary context switches of every thread of process `pid` so far (/proc/PID/task/*/status).
inline int64_t ProcessContextSwitches(int64_t pid) {
  std::error_code ec;
  int64_t switches = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.find("ctxt_switches:") != std::string::npos) switches += std::stoll(line.substr(line.find(':') + 1));
    }
  }
  return switches;
}

// This process's CPU time so far (all threads, user + system), seconds.
inline double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace vae::bench

#endif  // VAE_BENCH_PROCESS_STATS_H_
