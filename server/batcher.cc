#include "server/batcher.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace vae::server {

Batcher::Batcher(Options options) : options_(options) {}

Batcher::Stats Batcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

int Batcher::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int64_t Batcher::QueuedRowsFor(const void* key) const {
  int64_t rows = 0;
  for (const auto& r : queue_) {
    if (r->key == key) rows += r->input.size(0);
  }
  return rows;
}

std::vector<std::shared_ptr<Batcher::Request>> Batcher::TakeBatch() {
  std::vector<std::shared_ptr<Request>> batch;
  const void* key = queue_.front()->key;
  int64_t rows = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    const int64_t n = (*it)->input.size(0);
    if ((*it)->key == key && rows + n <= options_.max_rows) {
      rows += n;
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
    const std::vector<at::Tensor> outputs = (*batch.front()->compute)(rows);
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

absl::StatusOr<std::vector<at::Tensor>> Batcher::Run(const void* key, const at::Tensor& input, const Compute& compute,
                                                     absl::Time deadline, const std::function<bool()>& cancelled,
                                                     PendingCall* pending) {
  auto request = std::make_shared<Request>();
  request->key = key;
  request->input = input;
  request->compute = &compute;

  absl::MutexLock lock(&mu_);
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    return absl::ResourceExhaustedError(absl::StrCat("inference queue is full (", queue_.size(),
                                                     " requests waiting, --max_queue=", options_.max_queue,
                                                     "); retry with backoff"));
  }
  queue_.push_back(request);
  if (pending != nullptr) pending->Release();
  auto remove_from_queue = [&] {
    auto it = std::find(queue_.begin(), queue_.end(), request);
    if (it != queue_.end()) queue_.erase(it);
  };

  while (!request->done) {
    if (!running_ && !queue_.empty() && queue_.front() == request) {
      // Lead. Wait (bounded) while callers that have entered request handling have not reached the queue yet.
      const absl::Time fill_until = std::min(deadline, absl::Now() + options_.max_wait);
      while (pending_.load(std::memory_order_relaxed) > 0 &&
             QueuedRowsFor(key) < options_.max_rows && absl::Now() < fill_until) {
        mu_.AwaitWithDeadline(absl::Condition(+[](bool*) { return false; }, static_cast<bool*>(nullptr)),
                              std::min(fill_until, absl::Now() + absl::Microseconds(50)));
      }
      running_ = true;
      std::vector<std::shared_ptr<Request>> batch = TakeBatch();
      mu_.Unlock();
      Execute(batch);
      mu_.Lock();
      running_ = false;
      int64_t rows = 0;
      for (const auto& r : batch) {
        rows += r->input.size(0);
        r->done = true;
      }
      ++stats_.batches;
      stats_.requests += static_cast<int64_t>(batch.size());
      stats_.rows += rows;
      stats_.max_batch_rows = std::max(stats_.max_batch_rows, rows);
      // absl::Mutex re-evaluates waiters' conditions on unlock: the followers wake up.
      continue;
    }
    // Follow: wake when our batch is done or we may lead; check the deadline and cancellation meanwhile.
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      remove_from_queue();
      return absl::DeadlineExceededError("the deadline passed while the request waited for its batch");
    }
    if (cancelled && cancelled()) {
      remove_from_queue();
      return absl::CancelledError("the call was cancelled while it waited for its batch");
    }
    auto ready = [this, &request]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return request->done || (!running_ && !queue_.empty() && queue_.front() == request);
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), std::min(deadline, now + absl::Milliseconds(5)));
  }
  if (!request->status.ok()) return request->status;
  return std::move(request->outputs);
}

}  // namespace vae::server
