#include "server/batcher.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace vae::server {

namespace {
thread_local bool in_batch = false;
}  // namespace

Batcher::Batcher(Options options) : options_(options) {}

bool Batcher::InBatch() { return in_batch; }

Batcher::Stats Batcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

int Batcher::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int64_t Batcher::QueuedRowsFor(BatchKey key) const {
  int64_t rows = 0;
  for (const auto& r : queue_) {
    if (r->key == key) rows += r->input.size(0);
  }
  return rows;
}

std::vector<std::shared_ptr<Batcher::Request>> Batcher::TakeBatch() {
  std::vector<std::shared_ptr<Request>> batch;
  const BatchKey key = queue_.front()->key;
  int64_t rows = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    const int64_t n = (*it)->input.size(0);
    if ((*it)->key == key && rows + n <= options_.max_rows) {
      rows += n;
      (*it)->taken = true;
      batch.push_back(*it);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return batch;
}

void Batcher::Execute(const std::vector<std::shared_ptr<Request>>& batch) {
  try {
    c10::InferenceMode guard;
    std::vector<at::Tensor> inputs;
    inputs.reserve(batch.size());
    for (const auto& r : batch) inputs.push_back(r->input);
    const at::Tensor rows = batch.size() == 1 ? inputs[0] : at::cat(inputs, 0);
    in_batch = true;
    std::vector<at::Tensor> outputs;
    try {
      outputs = (*batch.front()->compute)(rows);
    } catch (...) {
      in_batch = false;
      throw;
    }
    in_batch = false;
    int64_t offset = 0;
    for (const auto& r : batch) {
      const int64_t n = r->input.size(0);
      r->outputs.reserve(outputs.size());
      for (const auto& out : outputs) r->outputs.push_back(batch.size() == 1 ? out : out.narrow(0, offset, n));
      offset += n;
    }
  } catch (const c10::Error& e) {
    const absl::Status status = absl::InternalError(absl::StrCat("batched model call: ", e.what_without_backtrace()));
    for (const auto& r : batch) {
      r->status = status;
      r->outputs.clear();
    }
  }
}

absl::Status Batcher::QueueFullError() const {
  return absl::ResourceExhaustedError(absl::StrCat("inference queue is full (", queue_.size(),
                                                   " requests waiting, --max_queue=", options_.max_queue,
                                                   "); retry with backoff"));
}

void Batcher::AwaitPendingCallers(BatchKey key, absl::Time deadline) {
  const absl::Time fill_until = std::min(deadline, absl::Now() + options_.max_wait);
  while (pending_.load(std::memory_order_relaxed) > 0 && QueuedRowsFor(key) < options_.max_rows &&
         absl::Now() < fill_until) {
    mu_.AwaitWithDeadline(absl::Condition(
                              +[](bool*) { return false; }, static_cast<bool*>(nullptr)),
                          std::min(fill_until, absl::Now() + absl::Microseconds(50)));
  }
}

void Batcher::RunTaken(const std::vector<std::shared_ptr<Request>>& batch) {
  std::vector<std::shared_ptr<Request>> run;
  run.reserve(batch.size());
  const absl::Time now = absl::Now();
  for (const auto& r : batch) {
    r->status = WhyNotRun(*r, now);
    if (r->status.ok()) run.push_back(r);
  }
  if (!run.empty()) Execute(run);
  {
    absl::MutexLock lock(&mu_);
    int64_t rows = 0;
    for (const auto& r : run) rows += r->input.size(0);
    for (const auto& r : batch) r->done = true;  // absl::Mutex re-evaluates waiters' conditions on unlock
    if (!run.empty()) {
      ++stats_.batches;
      stats_.requests += static_cast<int64_t>(run.size());
      stats_.rows += rows;
      stats_.max_batch_rows = std::max(stats_.max_batch_rows, rows);
      int bucket = 0;
      while (bucket < Stats::kRowBuckets && (int64_t{1} << bucket) < rows) ++bucket;
      ++stats_.batches_by_rows[bucket];
    }
  }
  for (const auto& r : batch) {
    if (!r->on_done) continue;
    if (r->status.ok()) {
      r->on_done(std::move(r->outputs));
    } else {
      r->on_done(r->status);
    }
  }
}

absl::Status Batcher::WhyNotRun(const Request& request, absl::Time now) {
  if (now >= request.deadline) {
    return absl::DeadlineExceededError("the deadline passed while the request waited for its batch");
  }
  if (request.cancelled && request.cancelled()) {
    return absl::CancelledError("the call was cancelled while it waited for its batch");
  }
  return absl::OkStatus();
}

absl::Status Batcher::Enqueue(const std::shared_ptr<Request>& request, PendingCall* pending) {
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    ++stats_.refused;
    return QueueFullError();
  }
  queue_.push_back(request);
  if (pending != nullptr) pending->Release();
  if (!running_) LeadUntilEmpty();  // else the running leader takes it with its next batch
  return absl::OkStatus();
}

void Batcher::LeadUntilEmpty() {
  running_ = true;
  // Every request queued while a batch runs has no thread that would run it: lead until the queue is empty.
  while (!queue_.empty()) {
    AwaitPendingCallers(queue_.front()->key, queue_.front()->deadline);
    std::vector<std::shared_ptr<Request>> batch = TakeBatch();
    mu_.Unlock();
    RunTaken(batch);
    mu_.Lock();
  }
  running_ = false;
}

void Batcher::Submit(BatchKey key, const at::Tensor& input, Compute compute, absl::Time deadline,
                     std::function<bool()> cancelled, PendingCall* pending, Done done) {
  auto request = std::make_shared<Request>();
  request->key = key;
  request->input = input;
  request->owned_compute = std::move(compute);
  request->compute = &request->owned_compute;
  request->deadline = deadline;
  request->cancelled = std::move(cancelled);
  request->on_done = std::move(done);
  absl::MutexLock lock(&mu_);
  if (absl::Status full = Enqueue(request, pending); !full.ok()) {
    mu_.Unlock();
    request->on_done(full);
    mu_.Lock();
  }
}

absl::StatusOr<std::vector<at::Tensor>> Batcher::Run(BatchKey key, const at::Tensor& input, const Compute& compute,
                                                     absl::Time deadline, const std::function<bool()>& cancelled,
                                                     PendingCall* pending) {
  auto request = std::make_shared<Request>();
  request->key = key;
  request->input = input;
  request->compute = &compute;
  request->deadline = deadline;
  request->cancelled = cancelled;

  absl::MutexLock lock(&mu_);
  // When no batch was running this thread led, and the request ran in one of its batches.
  VAE_RETURN_IF_ERROR(Enqueue(request, pending));
  // Otherwise the running leader will take it: wait for that, checking the deadline and cancellation meanwhile. Once
  // a leader has taken the request its input is in use (it may be a view of the caller's request bytes): then wait
  // for the batch, which is already running.
  while (!request->done) {
    if (request->taken) {
      mu_.Await(absl::Condition(
          +[](Request* r) { return r->done; }, request.get()));
      break;
    }
    const absl::Time now = absl::Now();
    if (absl::Status why = WhyNotRun(*request, now); !why.ok()) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), request));
      return why;
    }
    mu_.AwaitWithDeadline(absl::Condition(
                              +[](Request* r) { return r->done || r->taken; }, request.get()),
                          std::min(deadline, now + absl::Milliseconds(5)));
  }
  if (!request->status.ok()) return request->status;
  return std::move(request->outputs);
}

}  // namespace vae::server
