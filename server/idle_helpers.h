// IdleHelpers: lets a thread spread a batch of independent items (the PNG files of one answer) over cores that would
// otherwise sit idle, without ever taking a core from the inference and gRPC threads or waiting on one that did not
// get a core.
//
// A fixed pool of `helpers` threads runs under SCHED_IDLE (Linux: they get a CPU only when no ordinary thread wants
// it; nice 19 where SCHED_IDLE is refused). Map() queues its job, wakes helpers, and works through the items itself,
// taking them one at a time from a shared counter; helpers that get a CPU take items from the same counter. When the
// caller runs out of unclaimed items it waits briefly for items a helper is still producing (about twice its own time
// per item), then produces any still unfinished itself: a helper that lost its CPU to a busy thread never holds the
// call up, and at worst an item is produced twice (the helper's copy is dropped). So a call costs at most its own
// serial time plus the wake-up of the helpers, and on an idle machine it is spread over the idle cores.
//
// Thread-safety: Map() may be called from any number of threads at once. `produce` may run on a helper thread after
// Map() has returned (a late duplicate whose result is dropped): it must own (capture by value) everything it reads.
// The pool's threads live as long as the object; the process-wide one (Shared()) is never destroyed.
#ifndef VAE_SERVER_IDLE_HELPERS_H_
#define VAE_SERVER_IDLE_HELPERS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace vae::server {

class IdleHelpers {
 public:
  // `helpers` threads (0: Map runs everything on the caller).
  explicit IdleHelpers(int helpers);
  ~IdleHelpers();
  IdleHelpers(const IdleHelpers&) = delete;
  IdleHelpers& operator=(const IdleHelpers&) = delete;

  // The process-wide pool: one helper per core but one (none on a single core), started on first use.
  static IdleHelpers& Shared();

  int helpers() const { return static_cast<int>(threads_.size()); }
  // True on one of this object's helper threads (tests use it to stall a helper).
  static bool InHelperThread();

  // produce(0), ..., produce(n - 1), in order. See the class comment for where each runs.
  template <typename T>
  std::vector<T> Map(int64_t n, std::function<T(int64_t)> produce);

 private:
  // One Map() call's items. Helpers hold it by shared_ptr, so a late helper never touches freed memory.
  struct Job {
    explicit Job(int64_t n) : n(n), state(static_cast<size_t>(n)) {}
    const int64_t n;
    std::atomic<int64_t> next{0};  // the next unclaimed item
    // Per item claimed by a helper: kUnclaimed, then kHelper (being produced), then kHelperDone (its result is in
    // the job's helper results), unless the caller took it over first (kCaller). The caller's own items stay
    // kUnclaimed: no helper ever gets their index.
    std::vector<std::atomic<int>> state;
    std::function<void(int64_t)> produce_in_helper;  // produces item i into the job's helper results
  };
  enum : int { kUnclaimed = 0, kCaller = 1, kHelper = 2, kHelperDone = 3 };

  // Queues `job` and wakes up to `wake` helpers.
  void Post(const std::shared_ptr<Job>& job, int wake);
  // Takes `job` off the queue (helpers may still be finishing an item of it).
  void Retire(const std::shared_ptr<Job>& job);
  void HelperLoop();

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> jobs_;  // guarded by mu_
  bool stop_ = false;                      // guarded by mu_
  std::vector<std::thread> threads_;
};

template <typename T>
std::vector<T> IdleHelpers::Map(int64_t n, std::function<T(int64_t)> produce) {
  std::vector<std::optional<T>> mine(static_cast<size_t>(n));
  if (threads_.empty() || n < 2) {
    std::vector<T> out;
    out.reserve(n);
    for (int64_t i = 0; i < n; ++i) out.push_back(produce(i));
    return out;
  }
  auto job = std::make_shared<Job>(n);
  // The helpers' results live with the job: a helper may still write one after this call returned.
  auto theirs = std::make_shared<std::vector<std::optional<T>>>(static_cast<size_t>(n));
  job->produce_in_helper = [produce, theirs](int64_t i) { (*theirs)[i] = produce(i); };
  Post(job, static_cast<int>(std::min<int64_t>(n - 1, helpers())));

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int64_t produced = 0;
  for (int64_t i; (i = job->next.fetch_add(1)) < n;) {
    mine[i] = produce(i);
    ++produced;
  }
  // The rest were claimed by helpers. Wait for them a little (twice this thread's mean time per item, at least
  // 50 us), then take over whatever is still unfinished. A helper marks its item kHelper just after claiming it, so
  // kUnclaimed here means a helper is about to: it is taken over the same way.
  const auto per_item = produced > 0 ? (Clock::now() - start) / produced : Clock::duration::zero();
  const auto deadline = Clock::now() + std::max<Clock::duration>(2 * per_item, std::chrono::microseconds(50));
  for (int64_t i = 0; i < n; ++i) {
    if (mine[i].has_value()) continue;
    int s = job->state[i].load(std::memory_order_acquire);
    while (s == kUnclaimed || s == kHelper) {
      if (Clock::now() < deadline) {
        std::this_thread::yield();
        s = job->state[i].load(std::memory_order_acquire);
      } else if (job->state[i].compare_exchange_weak(s, kCaller, std::memory_order_acq_rel)) {
        mine[i] = produce(i);  // the helper lost its CPU: do it here; its late copy will be dropped
        break;
      }
    }
  }
  Retire(job);
  std::vector<T> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(mine[i].has_value() ? std::move(*mine[i]) : std::move(*(*theirs)[i]));
  }
  return out;
}

}  // namespace vae::server

#endif  // VAE_SERVER_IDLE_HELPERS_H_
