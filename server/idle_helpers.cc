#include "server/idle_helpers.h"

#include <glog/logging.h>
#include <sched.h>

#include <algorithm>

namespace vae::server {
namespace {
thread_local bool in_helper_thread = false;
}  // namespace

IdleHelpers::IdleHelpers(int helpers) {
  for (int t = 0; t < helpers; ++t) threads_.emplace_back([this] { HelperLoop(); });
}

IdleHelpers::~IdleHelpers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

IdleHelpers& IdleHelpers::Shared() {
  static IdleHelpers* shared = new IdleHelpers(std::max(0, static_cast<int>(std::thread::hardware_concurrency()) - 1));
  return *shared;
}

bool IdleHelpers::InHelperThread() { return in_helper_thread; }

void IdleHelpers::Post(const std::shared_ptr<Job>& job, int wake) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(job);
  }
  for (int i = 0; i < wake; ++i) wake_.notify_one();
}

void IdleHelpers::Retire(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(jobs_.begin(), jobs_.end(), job);
  if (it != jobs_.end()) jobs_.erase(it);
}

void IdleHelpers::HelperLoop() {
  in_helper_thread = true;
  // SCHED_IDLE: this thread runs only on a CPU no ordinary thread wants, so it never slows inference or gRPC.
  sched_param param{};
  param.sched_priority = 0;
  if (sched_setscheduler(0, SCHED_IDLE, &param) != 0 && nice(19) == -1) {
    LOG(WARNING) << "idle helper: neither SCHED_IDLE nor nice 19 could be set; it runs at normal priority";
  }
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = jobs_.front();
      // Exhausted jobs leave the queue here too, so a helper never spins on one whose caller is still finishing.
      if (job->next.load() >= job->n) {
        jobs_.pop_front();
        continue;
      }
    }
    for (int64_t i; (i = job->next.fetch_add(1)) < job->n;) {
      int expected = kUnclaimed;
      if (!job->state[i].compare_exchange_strong(expected, kHelper, std::memory_order_acq_rel)) continue;
      job->produce_in_helper(i);
      expected = kHelper;
      job->state[i].compare_exchange_strong(expected, kHelperDone, std::memory_order_acq_rel);
    }
  }
}

}  // namespace vae::server
