// Dynamic batching: coalescing, each caller's own rows, limits, deadlines, cancellation, and equality with
// unbatched inference.
#include "server/batcher.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "model/options.h"
#include "server/inference.h"
#include "tests/server/server_test_util.h"

namespace vae::server {
namespace {

using ::vae::testing::RandomImages;
using ::vae::testing::TinySnapshot;

const BatchKey kKey{nullptr, Operation::kEncode};

// A compute whose first call blocks until released, so that later callers queue up behind it.
struct GatedCompute {
  absl::Notification entered, release;
  std::atomic<int> calls{0};
  Batcher::Compute fn = [this](const at::Tensor& rows) -> std::vector<at::Tensor> {
    if (calls.fetch_add(1) == 0) {
      entered.Notify();
      release.WaitForNotification();
    }
    return {rows * 2 + 1, rows.sum(1)};
  };
};

TEST(BatcherTest, QueuedRequestsShareOneModelCallAndGetTheirOwnRows) {
  Batcher batcher({/*max_rows=*/1024, absl::ZeroDuration(), /*max_queue=*/64});
  GatedCompute gate;
  std::thread leader([&] {
    auto out = batcher.Run(kKey, at::full({1, 3}, 100.0), gate.fn, absl::InfiniteFuture());
    ASSERT_TRUE(out.ok());
    EXPECT_TRUE(at::equal((*out)[0], at::full({1, 3}, 201.0)));
  });
  gate.entered.WaitForNotification();
  // Seven callers with 1..7 rows each queue behind the running batch.
  std::vector<std::thread> followers;
  std::atomic<int> ok{0};
  for (int i = 1; i <= 7; ++i) {
    followers.emplace_back([&, i] {
      const at::Tensor x = at::full({i, 3}, static_cast<double>(i));
      auto out = batcher.Run(kKey, x, gate.fn, absl::InfiniteFuture());
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_TRUE(at::equal((*out)[0], x * 2 + 1)) << i;  // exactly its own rows, in order
      EXPECT_TRUE(at::equal((*out)[1], at::full({i}, 3.0 * i))) << i;
      ++ok;
    });
  }
  while (batcher.queued() < 7) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  gate.release.Notify();
  leader.join();
  for (auto& t : followers) t.join();
  EXPECT_EQ(ok.load(), 7);
  const auto stats = batcher.stats();
  EXPECT_EQ(stats.batches, 2);  // the leader's, then all seven followers together
  EXPECT_EQ(stats.requests, 8);
  EXPECT_EQ(stats.rows, 1 + 28);  // 1 + (1 + 2 + ... + 7)
  EXPECT_EQ(stats.max_batch_rows, 28);
}

// Submit(): requests that arrive while a batch runs are queued without holding their thread, and the thread running
// batches answers all of them with one more model call.
TEST(BatcherTest, SubmittedRequestsQueueWithoutAThreadAndShareTheNextBatch) {
  Batcher batcher({/*max_rows=*/1024, absl::ZeroDuration(), /*max_queue=*/64});
  GatedCompute gate;
  absl::Notification leader_done;
  std::thread leader([&] {
    batcher.Submit(kKey, at::full({1, 3}, 100.0), gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                   [&](absl::StatusOr<std::vector<at::Tensor>> out) {
                     ASSERT_TRUE(out.ok()) << out.status();
                     EXPECT_TRUE(at::equal((*out)[0], at::full({1, 3}, 201.0)));
                   });
    leader_done.Notify();  // Submit returns only after the leader has drained the queue
  });
  gate.entered.WaitForNotification();
  std::atomic<int> answered{0};
  std::vector<at::Tensor> inputs;
  for (int i = 1; i <= 5; ++i) inputs.push_back(at::full({i, 3}, static_cast<double>(i)));
  for (int i = 1; i <= 5; ++i) {
    const at::Tensor x = inputs[i - 1];
    // Called on this thread; returns at once because a batch is running.
    batcher.Submit(kKey, x, gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                   [&answered, x, i](absl::StatusOr<std::vector<at::Tensor>> out) {
                     ASSERT_TRUE(out.ok()) << out.status();
                     EXPECT_TRUE(at::equal((*out)[0], x * 2 + 1)) << i;
                     EXPECT_TRUE(at::equal((*out)[1], at::full({i}, 3.0 * i))) << i;
                     ++answered;
                   });
  }
  EXPECT_EQ(answered.load(), 0);
  EXPECT_EQ(batcher.queued(), 5);
  gate.release.Notify();
  leader.join();
  EXPECT_TRUE(leader_done.HasBeenNotified());
  EXPECT_EQ(answered.load(), 5);
  const auto stats = batcher.stats();
  EXPECT_EQ(stats.batches, 2);  // the leader's own, then the five together
  EXPECT_EQ(stats.requests, 6);
  EXPECT_EQ(stats.max_batch_rows, 15);
}

TEST(BatcherTest, SubmittedRequestsThatExpireOrAreCancelledWhileQueuedAreNotRun) {
  Batcher batcher({/*max_rows=*/1024, absl::ZeroDuration(), /*max_queue=*/2});
  GatedCompute gate;
  std::thread leader([&] {
    batcher.Submit(kKey, at::ones({1, 3}), gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                   [](absl::StatusOr<std::vector<at::Tensor>> out) { EXPECT_TRUE(out.ok()); });
  });
  gate.entered.WaitForNotification();
  absl::StatusCode expired = absl::StatusCode::kOk, cancelled = absl::StatusCode::kOk, full = absl::StatusCode::kOk;
  batcher.Submit(kKey, at::ones({2, 3}), gate.fn, absl::Now() + absl::Milliseconds(20), nullptr, nullptr,
                 [&](absl::StatusOr<std::vector<at::Tensor>> out) { expired = out.status().code(); });
  std::atomic<bool> gone{false};
  batcher.Submit(
      kKey, at::ones({4, 3}), gate.fn, absl::InfiniteFuture(), [&] { return gone.load(); }, nullptr,
      [&](absl::StatusOr<std::vector<at::Tensor>> out) { cancelled = out.status().code(); });
  // The queue holds 2: a third is answered at once.
  batcher.Submit(kKey, at::ones({1, 3}), gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                 [&](absl::StatusOr<std::vector<at::Tensor>> out) { full = out.status().code(); });
  EXPECT_EQ(full, absl::StatusCode::kResourceExhausted);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));  // past the first one's deadline
  gone = true;
  gate.release.Notify();
  leader.join();
  EXPECT_EQ(expired, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled, absl::StatusCode::kCancelled);
  EXPECT_EQ(batcher.stats().batches, 1);  // only the leader's rows ran
  EXPECT_EQ(batcher.stats().rows, 1);
}

// A blocking Run() leader also runs the Submit()ted requests queued behind it: they have no thread of their own.
TEST(BatcherTest, ABlockingLeaderRunsSubmittedRequestsBeforeReturning) {
  Batcher batcher({/*max_rows=*/1024, absl::ZeroDuration(), 64});
  GatedCompute gate;
  std::thread leader([&] { ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 3}), gate.fn, absl::InfiniteFuture()).ok()); });
  gate.entered.WaitForNotification();
  std::atomic<int> answered{0};
  batcher.Submit(kKey, at::ones({3, 3}), gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                 [&](absl::StatusOr<std::vector<at::Tensor>> out) {
                   ASSERT_TRUE(out.ok());
                   EXPECT_EQ((*out)[0].size(0), 3);
                   ++answered;
                 });
  gate.release.Notify();
  leader.join();
  EXPECT_EQ(answered.load(), 1);
  EXPECT_EQ(batcher.queued(), 0);
}

// And the other way round: a blocking Run() queued behind a batch that a Submit() leads is run by that leader (the
// blocked caller only waits), and a blocked caller whose deadline passes leaves the queue without waiting for it.
TEST(BatcherTest, ASubmittingLeaderRunsBlockedCallersQueuedBehindIt) {
  Batcher batcher({/*max_rows=*/1024, absl::ZeroDuration(), 64});
  GatedCompute gate;
  std::atomic<int> answered{0};
  std::thread leader([&] {
    batcher.Submit(kKey, at::ones({1, 3}), gate.fn, absl::InfiniteFuture(), nullptr, nullptr,
                   [&](absl::StatusOr<std::vector<at::Tensor>> out) {
                     EXPECT_TRUE(out.ok());
                     ++answered;
                   });
  });
  gate.entered.WaitForNotification();
  absl::StatusOr<std::vector<at::Tensor>> blocked;
  std::thread follower([&] { blocked = batcher.Run(kKey, at::full({2, 3}, 4.0), gate.fn, absl::InfiniteFuture()); });
  const auto late = batcher.Run(kKey, at::ones({1, 3}), gate.fn, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);  // while the first batch still runs
  EXPECT_EQ(answered.load(), 0);
  while (batcher.queued() < 1) std::this_thread::yield();
  gate.release.Notify();
  follower.join();
  leader.join();
  ASSERT_TRUE(blocked.ok()) << blocked.status();
  EXPECT_TRUE(at::equal((*blocked)[0], at::full({2, 3}, 9.0)));
  EXPECT_EQ(answered.load(), 1);
  EXPECT_EQ(batcher.queued(), 0);
  EXPECT_EQ(batcher.stats().batches, 2);  // the gated one, then the follower's; the late request never ran
}

TEST(BatcherTest, BatchesNeverExceedMaxRowsAndKeysDoNotMix) {
  Batcher batcher({/*max_rows=*/10, absl::ZeroDuration(), 64});
  GatedCompute gate;
  std::thread leader([&] { ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture()).ok()); });
  gate.entered.WaitForNotification();
  const BatchKey other_key{nullptr, Operation::kDecode};
  std::vector<std::thread> followers;
  for (int i = 0; i < 4; ++i) {  // 4 x 6 rows with kKey, max 10 per batch -> one request per batch
    followers.emplace_back([&] {
      ASSERT_TRUE(batcher.Run(kKey, at::ones({6, 2}), gate.fn, absl::InfiniteFuture()).ok());
    });
  }
  followers.emplace_back([&] {
    ASSERT_TRUE(batcher.Run(other_key, at::ones({2, 2}), gate.fn, absl::InfiniteFuture()).ok());
  });
  while (batcher.queued() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  gate.release.Notify();
  leader.join();
  for (auto& t : followers) t.join();
  const auto stats = batcher.stats();
  EXPECT_EQ(stats.batches, 6);  // leader, 4 x (6 rows), and the other key alone
  EXPECT_LE(stats.max_batch_rows, 10);
}

TEST(BatcherTest, FullQueueIsResourceExhausted) {
  Batcher batcher({1024, absl::ZeroDuration(), /*max_queue=*/1});
  GatedCompute gate;
  std::thread leader([&] { ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture()).ok()); });
  gate.entered.WaitForNotification();
  std::thread queued([&] { ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture()).ok()); });
  while (batcher.queued() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto rejected = batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture());
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(rejected.status().message().find("max_queue"), std::string::npos) << rejected.status();
  gate.release.Notify();
  leader.join();
  queued.join();
}

TEST(BatcherTest, QueuedRequestsHonourDeadlineAndCancellation) {
  Batcher batcher({1024, absl::ZeroDuration(), 64});
  GatedCompute gate;
  std::thread leader([&] { ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture()).ok()); });
  gate.entered.WaitForNotification();
  auto late = batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::Now() + absl::Milliseconds(30));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  std::atomic<bool> gone{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gone = true;
  });
  auto cancelled = batcher.Run(kKey, at::ones({1, 2}), gate.fn, absl::InfiniteFuture(), [&] { return gone.load(); });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  canceller.join();
  EXPECT_EQ(batcher.queued(), 0);  // both left the queue; their rows never ran
  gate.release.Notify();
  leader.join();
  EXPECT_EQ(batcher.stats().rows, 1);
}

TEST(BatcherTest, ALeaderWaitsForCallersOnTheirWay) {
  Batcher batcher({1024, /*max_wait=*/absl::Seconds(5), 64});
  std::atomic<int> calls{0};
  Batcher::Compute fn = [&](const at::Tensor& rows) -> std::vector<at::Tensor> {
    ++calls;
    return {rows};
  };
  auto pending = std::make_unique<Batcher::PendingCall>(&batcher);  // a caller still decoding its request
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(batcher.Run(kKey, at::ones({2, 2}), fn, absl::InfiniteFuture(), nullptr, pending.get()).ok());
  });
  ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), fn, absl::InfiniteFuture()).ok());
  late.join();
  EXPECT_EQ(calls.load(), 1);  // the leader waited, and both ran in one call
  EXPECT_EQ(batcher.stats().max_batch_rows, 3);
}

TEST(BatcherTest, ALoneCallerDoesNotWait) {
  Batcher batcher({1024, /*max_wait=*/absl::Seconds(5), 64});
  Batcher::Compute fn = [](const at::Tensor& rows) -> std::vector<at::Tensor> { return {rows}; };
  const absl::Time start = absl::Now();
  ASSERT_TRUE(batcher.Run(kKey, at::ones({1, 2}), fn, absl::InfiniteFuture()).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));  // far below max_wait: nobody was pending
}

// Through the engine: concurrent Encode/Decode/Reconstruct with batching give what unbatched calls give.
TEST(BatchedInferenceTest, ConcurrentCallsMatchUnbatchedResults) {
  const auto snapshot = TinySnapshot(7);
  InferenceEngine plain(1024);
  InferenceEngine batched(1024, 1, BatchingOptions{true, absl::Microseconds(200), 256, 2});
  constexpr int kThreads = 8, kCalls = 25;
  std::vector<std::thread> threads;
  std::atomic<int> checked{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        const at::Tensor x = RandomImages(1 + (t + c) % 5, 1000 * t + c);
        auto a = batched.Encode(*snapshot, x, absl::InfiniteFuture());
        auto b = plain.Encode(*snapshot, x, absl::InfiniteFuture());
        ASSERT_TRUE(a.ok() && b.ok());
        EXPECT_TRUE(at::allclose(a->mu, b->mu, 1e-6, 1e-6)) << (a->mu - b->mu).abs().max();
        EXPECT_TRUE(at::allclose(a->sigma, b->sigma, 1e-6, 1e-6));
        auto da = batched.Decode(*snapshot, a->mu, absl::InfiniteFuture());
        auto db = plain.Decode(*snapshot, b->mu, absl::InfiniteFuture());
        ASSERT_TRUE(da.ok() && db.ok());
        EXPECT_TRUE(at::allclose(da->images, db->images, 1e-6, 1e-6));
        auto ra = batched.Reconstruct(*snapshot, x, false, 0, absl::InfiniteFuture());
        auto rb = plain.Reconstruct(*snapshot, x, false, 0, absl::InfiniteFuture());
        ASSERT_TRUE(ra.ok() && rb.ok());
        EXPECT_TRUE(at::allclose(ra->recon_nll, rb->recon_nll, 1e-5, 1e-3));
        EXPECT_TRUE(at::allclose(ra->kl, rb->kl, 1e-5, 1e-5));
        ++checked;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(checked.load(), kThreads * kCalls);
  const auto stats = batched.batch_stats();
  EXPECT_EQ(stats.requests, 3 * kThreads * kCalls);
  EXPECT_LE(stats.batches, stats.requests);
}

// The async calls the gRPC service uses: from 8 threads, with batching, each callback gets what an unbatched blocking
// call gives, exactly once.
TEST(BatchedInferenceTest, AsyncCallsMatchUnbatchedResults) {
  const auto snapshot = TinySnapshot(9);
  InferenceEngine plain(1024);
  InferenceEngine batched(1024, 1, BatchingOptions{true, absl::Microseconds(200), 256, 2});
  constexpr int kThreads = 8, kCalls = 20;
  std::vector<std::thread> threads;
  std::atomic<int> checked{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        const at::Tensor x = RandomImages(1 + (t + c) % 4, 500 * t + c);
        auto expected = plain.Encode(*snapshot, x, absl::InfiniteFuture());
        auto expected_recon = plain.Reconstruct(*snapshot, x, false, 0, absl::InfiniteFuture());
        ASSERT_TRUE(expected.ok() && expected_recon.ok());
        absl::Notification encoded, decoded, reconstructed;
        std::atomic<int> calls{0};
        batched.EncodeAsync(snapshot, x, absl::InfiniteFuture(), {}, [&](absl::StatusOr<EncodeResult> r) {
          ++calls;
          if (!r.ok()) ADD_FAILURE() << r.status();
          if (r.ok()) {  // braces: EXPECT_TRUE expands to an if/else (-Wdangling-else)
            EXPECT_TRUE(at::allclose(r->mu, expected->mu, 1e-6, 1e-6));
            EXPECT_TRUE(at::allclose(r->sigma, expected->sigma, 1e-6, 1e-6));
          }
          encoded.Notify();
        });
        batched.DecodeAsync(snapshot, expected->mu, absl::InfiniteFuture(), {}, [&](absl::StatusOr<DecodeResult> r) {
          ++calls;
          auto d = plain.Decode(*snapshot, expected->mu, absl::InfiniteFuture());
          if (!r.ok() || !d.ok()) ADD_FAILURE() << r.status() << " " << d.status();
          if (r.ok() && d.ok()) {
            EXPECT_TRUE(at::allclose(r->images, d->images, 1e-6, 1e-6));
          }
          decoded.Notify();
        });
        batched.ReconstructAsync(snapshot, x, false, 0, absl::InfiniteFuture(), {},
                                 [&](absl::StatusOr<ReconstructResult> r) {
                                   ++calls;
                                   if (!r.ok()) ADD_FAILURE() << r.status();
                                   if (r.ok()) {
                                     EXPECT_TRUE(at::allclose(r->kl, expected_recon->kl, 1e-5, 1e-5));
                                     EXPECT_TRUE(at::allclose(r->recon_nll, expected_recon->recon_nll, 1e-5, 1e-3));
                                   }
                                   reconstructed.Notify();
                                 });
        encoded.WaitForNotification();
        decoded.WaitForNotification();
        reconstructed.WaitForNotification();
        EXPECT_EQ(calls.load(), 3);
        ++checked;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(checked.load(), kThreads * kCalls);
  EXPECT_EQ(batched.batch_stats().requests, 3 * kThreads * kCalls);
  // Invalid input is answered on the calling thread, before the call returns, with the blocking call's message.
  bool answered = false;
  batched.EncodeAsync(snapshot, at::full({1, 1, 2, 2}, 2.0f), absl::InfiniteFuture(), {},
                      [&](absl::StatusOr<EncodeResult> r) {
                        answered = true;
                        EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
                      });
  EXPECT_TRUE(answered);
}

// The transport marks a request on arrival (InferenceEngine::Arrive), before it has decoded its bytes: a leader that
// starts meanwhile waits for it, and the two run as one model call of 1 + 2 rows.
TEST(BatchedInferenceTest, ALeaderWaitsForARequestMarkedOnArrival) {
  const auto snapshot = TinySnapshot(11);
  InferenceEngine batched(1024, 1, BatchingOptions{true, /*max_wait=*/absl::Seconds(5), 256, 1});
  CallContext arriving = batched.Arrive(nullptr);
  absl::Notification answered;
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // "decoding its request"
    batched.EncodeAsync(snapshot, RandomImages(2, 2), absl::InfiniteFuture(), std::move(arriving),
                        [&](absl::StatusOr<EncodeResult> r) {
                          EXPECT_TRUE(r.ok()) << r.status();
                          answered.Notify();
                        });
  });
  ASSERT_TRUE(batched.Encode(*snapshot, RandomImages(1, 1), absl::InfiniteFuture()).ok());
  late.join();
  answered.WaitForNotification();
  const auto stats = batched.batch_stats();
  EXPECT_EQ(stats.batches, 1);  // without the arrival mark the leader would have run its 1 row alone
  EXPECT_EQ(stats.max_batch_rows, 3);
}

}  // namespace
}  // namespace vae::server
