// Batcher: dynamic batching for row-wise model calls. Concurrent requests with the same key (operation + model
// snapshot) are concatenated along dim 0 into one model call, and each caller gets back exactly its own rows.
//
// Scheduling (leader, no dispatcher thread): a caller enqueues its request; if no batch is running, the caller
// becomes the leader: it takes every queued request with the head's key (up to max_rows rows), runs the batch on its
// own thread, and goes on with the next batch until the queue is empty. Requests that arrive while a batch runs form
// the next batch, so a lone caller pays no wait and no thread hand-off, and under load batches grow by themselves.
// Before each batch, the leader waits up to max_wait for more rows only while callers that have entered request
// handling are still on their way to the queue (validation, tensor decoding; see PendingCall).
//
// Two ways in, one queue and one leader loop: Submit() queues the request with a completion callback and returns
// (the gRPC service uses it from callback-API handlers, so a request queued behind a running batch holds no thread
// at all); Run() blocks its caller until its rows are done. Either leads when it finds no batch running.
//
// Limits: more than max_queue queued requests -> RESOURCE_EXHAUSTED. A queued request whose deadline passes returns
// DEADLINE_EXCEEDED, one whose `cancelled` callback turns true returns CANCELLED; either way its rows are not run.
// The leader checks both when it takes a request; a Run() caller also checks them while it waits, and leaves the
// queue at once.
//
// Threads: any number of callers; one batch runs at a time (all cores go to it). Internally synchronised by mu_.
// The computation passed with a request must be a pure function of its input rows: batching must not change
// results, up to the floating-point effects of a different batch size on the BLAS kernels.
#ifndef VAE_SERVER_BATCHER_H_
#define VAE_SERVER_BATCHER_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vae::server {

struct Snapshot;

// The row-wise operations of the InferenceEngine that can share a model call.
enum class Operation { kEncode, kDecode, kReconstruct };

// Which requests may share a model call: only those on the same model snapshot doing the same operation. The
// snapshot is compared by address and never dereferenced here.
struct BatchKey {
  const Snapshot* model = nullptr;
  Operation op = Operation::kEncode;
  friend bool operator==(const BatchKey& a, const BatchKey& b) { return a.model == b.model && a.op == b.op; }
};

class Batcher {
 public:
  struct Options {
    int64_t max_rows = 1024;                            // rows (images or codes) per model call
    absl::Duration max_wait = absl::Microseconds(500);  // longest a leader waits for callers still on their way
    int max_queue = 256;                                // queued requests; more get RESOURCE_EXHAUSTED
  };
  // rows [n, ...] -> outputs, each with n rows in the same order.
  using Compute = std::function<std::vector<at::Tensor>(const at::Tensor& rows)>;
  // Receives a Submit()ted request's rows of each output, or why there are none.
  using Done = std::function<void(absl::StatusOr<std::vector<at::Tensor>>)>;

  struct Stats {
    // Batches by rows, in buckets of at most 1, 2, 4, ... 2^(kRowBuckets - 1) rows and one more for larger ones
    // (the batch size histogram of /metrics).
    static constexpr int kRowBuckets = 11;  // up to 1024 rows, the default max_batch
    int64_t requests = 0;                   // requests that ran in a batch
    int64_t batches = 0;                    // model calls
    int64_t rows = 0;                       // rows in those calls
    int64_t max_batch_rows = 0;
    int64_t refused = 0;  // requests answered RESOURCE_EXHAUSTED because the queue was full
    std::array<int64_t, kRowBuckets + 1> batches_by_rows{};
  };

  explicit Batcher(Options options);

  // Marks a caller on its way to Run() (from the start of request handling: decoding, validation). A leader waits
  // (up to max_wait) while any are pending, since they are about to join. Run() releases the mark once the
  // request is queued; the destructor releases it on every other path.
  class PendingCall {
   public:
    explicit PendingCall(Batcher* b) : b_(b) {
      if (b_) b_->pending_.fetch_add(1, std::memory_order_relaxed);
    }
    ~PendingCall() { Release(); }
    void Release() {
      if (b_) b_->pending_.fetch_sub(1, std::memory_order_relaxed);
      b_ = nullptr;
    }
    PendingCall(const PendingCall&) = delete;
    PendingCall& operator=(const PendingCall&) = delete;

   private:
    Batcher* b_;
  };

  // Runs `compute` on `input` ([n, ...], n <= max_rows), batched with other requests of the same `key`. `compute`
  // must be the same function for every request of a key. Returns the caller's rows of each output.
  absl::StatusOr<std::vector<at::Tensor>> Run(BatchKey key, const at::Tensor& input, const Compute& compute,
                                              absl::Time deadline, const std::function<bool()>& cancelled = nullptr,
                                              PendingCall* pending = nullptr);

  // Run() without blocking on other callers: `done` is called exactly once, either before Submit returns (queue full;
  // or this thread led and ran the batch holding the request) or on the thread of the leader that runs it. `input`
  // and whatever `compute` and `cancelled` refer to must stay valid until then; `compute` is kept by value.
  void Submit(BatchKey key, const at::Tensor& input, Compute compute, absl::Time deadline,
              std::function<bool()> cancelled, PendingCall* pending, Done done);

  // True on a thread while it runs a batch's model call (inside a Compute called by the batcher).
  static bool InBatch();

  Stats stats() const;
  // Requests waiting in the queue now.
  int queued() const;
  const Options& options() const { return options_; }

 private:
  struct Request {
    BatchKey key;
    at::Tensor input;
    const Compute* compute;
    bool taken = false;  // in a batch being run: its input is in use until done
    bool done = false;
    absl::Status status;
    std::vector<at::Tensor> outputs;
    // What the leader checks before running the rows.
    absl::Time deadline = absl::InfiniteFuture();
    std::function<bool()> cancelled;
    // Submit() only: the callback, and the computation (Run() points `compute` at its caller's).
    Done on_done;
    Compute owned_compute;
  };

  // Takes the head's batch off the queue. Requires mu_.
  std::vector<std::shared_ptr<Request>> TakeBatch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t QueuedRowsFor(BatchKey key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED for a request that finds the queue full.
  absl::Status QueueFullError() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As leader: waits (bounded by max_wait and `deadline`) while callers are on their way to the queue.
  void AwaitPendingCallers(BatchKey key, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `request` (releasing `pending`) and, when no batch is running, leads until the queue is empty.
  // RESOURCE_EXHAUSTED, with nothing queued, when the queue is full. Requires mu_.
  absl::Status Enqueue(const std::shared_ptr<Request>& request, PendingCall* pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DEADLINE_EXCEEDED or CANCELLED for a queued request that must not run any more, else OK.
  static absl::Status WhyNotRun(const Request& request, absl::Time now);
  // Runs batches until the queue is empty, as the leader (sets running_ for that time). Requires mu_; releases it
  // while a batch runs.
  void LeadUntilEmpty() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As leader, without mu_: answers the requests that expired or were cancelled, runs the rest, marks all done and
  // calls the Submit() callbacks.
  void RunTaken(const std::vector<std::shared_ptr<Request>>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  static void Execute(const std::vector<std::shared_ptr<Request>>& batch);

  const Options options_;
  std::atomic<int> pending_{0};
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Request>> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vae::server

#endif  // VAE_SERVER_BATCHER_H_
