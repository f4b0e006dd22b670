#include "client/cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli.h"
#include "client/cli/outputs.h"

namespace vae::cli {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, s);
  return absl::StrFormat("%d:%02d", m, s);
}

std::string FormatProgressBar(const client::TrainProgress& p, int width) {
  const std::string head = absl::StrFormat("epoch %d/%d ", p.epoch, p.epochs);
  const std::string tail = absl::StrFormat(" %d/%d  loss %.2f  %.0f img/s  ETA %s", p.step_in_epoch, p.steps_per_epoch,
                                           p.train.loss, p.images_per_sec, FormatDuration(p.eta_sec));
  // A fixed width for a given terminal, so that the bar does not jump as the
  // numbers change length.
  const int bar = std::clamp(width - 60, 10, 30);
  const double fraction =
      p.steps_per_epoch > 0 ? std::clamp(static_cast<double>(p.step_in_epoch) / p.steps_per_epoch, 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(fraction * bar);
  return absl::StrCat(head, "[", std::string(filled, '#'), std::string(bar - filled, '.'), "]", tail);
}

std::string FormatEpochLine(const client::TrainProgress& p) {
  std::string line = absl::StrFormat("epoch %d/%d: train loss %.2f (recon %.2f, kl %.2f)", p.epoch, p.epochs,
                                     p.train.loss, p.train.recon, p.train.kl);
  if (p.test.has_value()) absl::StrAppendFormat(&line, ", test loss %.2f", p.test->loss);
  absl::StrAppendFormat(&line, ", %.0f img/s, %s elapsed, serving %s", p.images_per_sec, FormatDuration(p.elapsed_sec),
                        VersionName(p.version));
  return line;
}

ProgressPrinter::ProgressPrinter(std::ostream& out, std::ostream& err, bool tty) : out_(out), err_(err), tty_(tty) {
  if (tty_) {
    winsize ws{};
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
  }
}

void ProgressPrinter::On(const client::TrainProgress& p) {
  absl::MutexLock lock(&mu_);
  using Kind = client::TrainProgress::Kind;
  switch (p.kind) {
    case Kind::kStarted:
      ClearBarLocked();
      out_ << "training job " << p.job_id << " on " << p.dataset << ": "
           << (p.epoch == p.epochs ? absl::StrCat("epoch ", p.epoch)
                                   : absl::StrCat("epochs ", p.epoch, " to ", p.epochs))
           << ", " << p.steps_per_epoch << " steps per epoch" << std::endl;
      break;
    case Kind::kStep:
      if (tty_) {
        err_ << "\r" << FormatProgressBar(p, width_ - 1) << "\033[K" << std::flush;
        bar_shown_ = true;
      }
      break;
    case Kind::kEpochEnd:
      ClearBarLocked();
      out_ << FormatEpochLine(p) << std::endl;
      break;
    case Kind::kDone:
      ClearBarLocked();
      if (!p.cancelled) {
        out_ << "done: job " << p.job_id << " trained to epoch " << p.epoch << " (" << p.global_step << " steps) in "
             << FormatDuration(p.elapsed_sec) << "; the server serves " << VersionText(p.version)
             << (p.checkpoint_path.empty() ? "" : absl::StrCat(", checkpoint ", p.checkpoint_path)) << std::endl;
      }
      break;
    case Kind::kUnspecified:
      break;
  }
}

void ProgressPrinter::Note(const std::string& line) {
  absl::MutexLock lock(&mu_);
  ClearBarLocked();
  err_ << line << std::endl;
}

void ProgressPrinter::ClearBar() {
  absl::MutexLock lock(&mu_);
  ClearBarLocked();
}

void ProgressPrinter::ClearBarLocked() {
  if (bar_shown_) err_ << "\r\033[K" << std::flush;
  bar_shown_ = false;
}

SignalWatcher::SignalWatcher() {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
}

SignalWatcher::~SignalWatcher() {
  Stop();
  // Drop a signal that arrived after the watcher stopped, then restore the
  // mask.
  timespec zero{0, 0};
  while (sigtimedwait(&signals_, nullptr, &zero) > 0) {
  }
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

void SignalWatcher::Start(std::function<void(int)> on_first) {
  thread_ = std::thread([this, on_first = std::move(on_first)] {
    timespec poll{0, 50 * 1000 * 1000};
    while (!stop_.load()) {
      const int signal_number = sigtimedwait(&signals_, nullptr, &poll);
      if (signal_number <= 0) continue;
      if (received_.fetch_add(1) == 0) {
        on_first(signal_number);
      } else {
        static const char kMessage[] =
            "vae-client train: interrupted again; exiting without waiting for "
            "the server\n";
        [[maybe_unused]] ssize_t n = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
        _exit(kExitInterrupted);
      }
    }
  });
}

void SignalWatcher::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace vae::cli
