// vae-client train's display: the progress of a Train stream (a live bar on a
// terminal, a line per epoch) and the signal handling that turns the first
// Ctrl-C into a cancellation of the job.
#ifndef VAE_CLIENT_CLI_PROGRESS_H_
#define VAE_CLIENT_CLI_PROGRESS_H_

#include <signal.h>

#include <atomic>
#include <functional>
#include <ostream>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "client/types.h"

namespace vae::cli {

// "1:02:03", "2:03", "0:05"; "?" for negative or non-finite seconds.
std::string FormatDuration(double seconds);

// The live line of a training step, for a terminal `width` columns wide:
//   "epoch 2/5 [#######.............] 130/469  loss 123.45  4321 img/s  ETA
//   1:23"
std::string FormatProgressBar(const client::TrainProgress& p, int width);

// One line per finished epoch (kEpochEnd):
//   "epoch 2/5: train loss 123.45 (recon 100.12, kl 23.33), test loss 120.11,
//   4321 img/s, 12.3 s, serving mnist version 3"
std::string FormatEpochLine(const client::TrainProgress& p);

// Prints the Train stream: a live bar on a terminal (stderr), one line per
// epoch and a summary on `out`. Called from the Train thread and (Note) from
// the signal watcher: everything under one mutex.
class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream& out, std::ostream& err, bool tty);

  void On(const client::TrainProgress& p);
  void Note(const std::string& line);
  void ClearBar();

 private:
  void ClearBarLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::ostream& out_;
  std::ostream& err_;
  const bool tty_;
  int width_ = 80;
  bool bar_shown_ ABSL_GUARDED_BY(mu_) = false;
};

// Blocks SIGINT and SIGTERM in this thread (and so in every thread started
// after: gRPC's) and receives them on a watcher thread until destroyed: the
// first calls `on_first`, a second exits the process at once
// (kExitInterrupted).
class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  void Start(std::function<void(int)> on_first);
  void Stop();

 private:
  sigset_t signals_;
  sigset_t previous_;
  std::atomic<bool> stop_{false};
  std::atomic<int> received_{0};
  std::thread thread_;
};

}  // namespace vae::cli

#endif  // VAE_CLIENT_CLI_PROGRESS_H_
