// InferenceEngine: Encode, Decode, Sample and Reconstruct on a published Snapshot, tensors in and out, and InputRules,
// every rule a request's input must meet. The single entry point of all inference. Each batchable operation has one
// path, an *Async call (what the gRPC service's callback handlers use), and a blocking wrapper of it for in-process
// callers. The dynamic batcher (server/batcher.h: concurrent calls on the same snapshot and Operation coalesced into
// one model call) is private to the engine: callers only mark a request's arrival (Arrive) and read batch_stats().
//
// The engine owns the server's InputRules (below: every input rule in one place): every input is
// checked by them against the snapshot's model (rank, shape, batch size, finite values in range, latent size) before
// the model runs, and a bad input returns INVALID_ARGUMENT naming the field, the expected and the actual value;
// nothing is changed by a failed call. The transport asks rules() for the checks before decoding and on the response.
// Torch errors become INTERNAL.
//
// Threads: stateless apart from its rules; any number of request threads may call it at once. Each call runs under
// its own c10::InferenceMode guard and, for random draws, its own CPU generator, so concurrent calls share no RNG
// state and a seed gives bitwise the same result. Outputs are contiguous float32 CPU tensors owned by the caller;
// they are inference tensors (made under c10::InferenceMode): read them freely, clone() them before autograd use.
#ifndef VAE_SERVER_INFERENCE_H_
#define VAE_SERVER_INFERENCE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/batcher.h"
#include "server/snapshot.h"
#include "server/server_options.h"

namespace vae::server {

// The largest vae.v1.ImageFormat value: formats are 0 (unspecified = tensor) to this (the service static_asserts it).
inline constexpr int kMaxImageFormat = 3;

// InputRules: every rule a request's input must meet, in one place. The InferenceEngine owns one (built from
// ServerOptions, where every default and bound is); the tensor codec (server/tensor_codec.h) is handed it for the
// rules that must hold before any byte is decoded (how many encoded images, how many pixels each declares), and the
// gRPC service asks it about the `format` field and the response's size. Each check returns OK or INVALID_ARGUMENT
// naming the field, the limit and the flag that sets it; none changes anything. Immutable, so thread-safe.
class InputRules {
 public:
  static constexpr double kMaxTemperature = 10.0;  // Sample's temperature is in (0, kMaxTemperature]

  // `max_batch` (< 1 counts as 1): the most images or codes one call may carry. `max_image_pixels`: the largest
  // encoded image (width x height); 0 derives it from the model (MaxImagePixels, server_options.h). `max_message_mb`:
  // the largest response, MiB.
  explicit InputRules(int64_t max_batch, int64_t max_image_pixels = 0,
                      int max_message_mb = ServerOptions().max_message_mb);
  static InputRules FromOptions(const ServerOptions& options);

  int64_t max_batch() const { return max_batch_; }
  int64_t max_image_pixels(const VaeOptions& model) const;
  int64_t max_message_bytes() const { return int64_t{max_message_mb_} << 20; }

  // Before decoding (tensor_codec): the number of encoded images, then each one's declared width x height.
  absl::Status CheckEncodedCount(int64_t n) const;
  absl::Status CheckDeclaredPixels(const std::string& field, int64_t width, int64_t height,
                                   const VaeOptions& model) const;

  // The tensors an operation gets (InferenceEngine), prefixed with `op`: float32 images [N, C, H, W] of the model's
  // shape, 1 <= N <= max_batch, finite, in [0, 1]; codes z float32 [N, J], finite; Sample's count and temperature.
  absl::Status CheckImages(const VaeOptions& model, const at::Tensor& images, const char* op) const;
  absl::Status CheckCodes(const VaeOptions& model, const at::Tensor& z) const;
  absl::Status CheckSample(int64_t count, double temperature) const;

  // The service: the response `format` field, and a response of `n` items of `bytes_per_item` bytes (checked
  // before the work; 0 items always pass) or of `bytes` serialised (`what` names it, e.g. "vae.v1.X is").
  static absl::Status CheckImageFormat(int format);
  absl::Status CheckResponseSize(const char* op, int64_t n, int64_t bytes_per_item) const;
  absl::Status CheckResponseBytes(const std::string& what, int64_t bytes) const;

 private:
  absl::Status CheckBatch(int64_t n, const char* op, const char* field) const;

  int64_t max_batch_;
  int64_t max_image_pixels_;
  int max_message_mb_;
};

struct EncodeResult {
  at::Tensor mu;     // [N, J]
  at::Tensor sigma;  // [N, J], exp(0.5 * log sigma^2)
};

struct DecodeResult {
  at::Tensor images;  // [N, C, H, W] in [0, 1]: the decoder's mean (Bernoulli probabilities or Gaussian mean)
};

struct SampleResult {
  at::Tensor images;  // [count, C, H, W] in [0, 1]
  at::Tensor z;       // [count, J], the codes that were decoded
  uint64_t seed = 0;  // the seed used (drawn at random when none was given)
};

struct ReconstructResult {
  at::Tensor images;     // [N, C, H, W] in [0, 1], the mean image at the decoded z
  at::Tensor recon_nll;  // [N], -log p(x|z) at the decoded z, nats
  at::Tensor kl;         // [N], KL(q(z|x) || N(0, I)), nats
};

// Dynamic batching of Encode, Decode and Reconstruct (with z = mu): see Batcher.
struct BatchingOptions {
  bool enabled = false;
  absl::Duration max_wait = absl::Microseconds(500);  // --batch_timeout_us
  int max_queue = 256;                                // --max_queue
  int threads = 1;  // torch threads of a batched model call of >= kParallelRows rows (one batch runs at a time)
  // Requests of at least kDirectRows rows are a batch already: they run on their own thread at once, never queued.
};

// A request on its way into the engine, made by the transport (InferenceEngine::Arrive) as soon as the request
// arrives, before its bytes are decoded: while it is on its way, a batch leader waits (up to max_wait) for it to join.
// The mark is dropped once the request is queued, or when this is destroyed. Move-only.
class CallContext {
 public:
  CallContext() = default;
  std::function<bool()> cancelled;  // true once the caller has gone away: a queued request then is not run

 private:
  friend class InferenceEngine;
  std::unique_ptr<Batcher::PendingCall> pending_;
};

class InferenceEngine {
 public:
  template <typename Result>
  using Callback = std::function<void(absl::StatusOr<Result>)>;

  // A batch runs with BatchingOptions::threads when it has kParallelRows rows, or when rows x the model's parameters
  // reach kParallelWork (the same work in fewer rows of a larger model: 64 rows of the mnist preset's 653k
  // parameters; the seed preset's 270M parameters qualify from one row). Smaller ones run on one thread, where a
  // thread team's start-up would cost more than it saves.
  static constexpr int64_t kParallelRows = 64;
  static constexpr int64_t kParallelWork = 40'000'000;
  // With batching on, requests with this many rows or more skip the batcher (measured on mnist/2 cores: 8 clients x
  // 256 images ran at 135k images/s through the batcher and 197k on their own).
  static constexpr int64_t kDirectRows = 64;
  static constexpr double kMaxTemperature = InputRules::kMaxTemperature;

  // `rules`: what a call's inputs must meet (its max_batch: the most images or codes one call may carry; a bare
  // `max_batch` means the other limits' defaults). `intra_op_threads` >= 1: the torch threads one
  // call may use. Concurrent calls each get their own, so 1 suits a server with many small requests: on 2 cores,
  // 3 concurrent clients got 140 Encode calls/s with 2 threads per call (OpenMP teams oversubscribe the cores) and
  // 1079/s with 1. Set per calling thread; the training job keeps the process-wide --threads.
  InferenceEngine(InputRules rules, int intra_op_threads = 1, BatchingOptions batching = {});
  explicit InferenceEngine(int64_t max_batch, int intra_op_threads = 1, BatchingOptions batching = {})
      : InferenceEngine(InputRules(max_batch), intra_op_threads, batching) {}

  // One async call per operation, then a blocking wrapper of it for in-process callers (warm-up, tests, benchmarks).
  // `done` gets the result exactly once: on this thread before the call returns when the request runs alone (batching
  // off, a sampled z, an invalid input, a full queue, or this thread led the batch), else on the thread of the
  // caller that runs its batch. A request queued behind a running batch holds no thread. The call keeps `model`
  // alive until `done`; `images`/`z` (possibly a view of the request bytes) must stay valid until then. Calls whose
  // `deadline` has passed return DEADLINE_EXCEEDED without running the model.

  // images: float32 [N, C, H, W] (C, H, W = the model's input shape), 1 <= N <= max_batch, finite, in [0, 1], any
  // device.
  void EncodeAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& images, absl::Time deadline,
                   CallContext call, Callback<EncodeResult> done) const;
  absl::StatusOr<EncodeResult> Encode(const Snapshot& model, const at::Tensor& images, absl::Time deadline) const;

  // z: float32 [N, J], 1 <= N <= max_batch, finite.
  void DecodeAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& z, absl::Time deadline, CallContext call,
                   Callback<DecodeResult> done) const;
  absl::StatusOr<DecodeResult> Decode(const Snapshot& model, const at::Tensor& z, absl::Time deadline) const;

  // Encodes, decodes z = mu (sample_z false) or one z ~ q(z|x) drawn with `seed` (sample_z true), and scores each
  // image's reconstruction and KL terms. Same input rules as Encode. A sampled z is never batched.
  void ReconstructAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& images, bool sample_z, uint64_t seed,
                        absl::Time deadline, CallContext call, Callback<ReconstructResult> done) const;
  absl::StatusOr<ReconstructResult> Reconstruct(const Snapshot& model, const at::Tensor& images, bool sample_z,
                                                uint64_t seed, absl::Time deadline) const;

  // Draws z = temperature * eps, eps ~ N(0, I) from a CPU generator seeded with `seed` (a random seed when unset),
  // and decodes it. 1 <= count <= max_batch; temperature in (0, kMaxTemperature] (InputRules::CheckSample). Never
  // batched (its own generator), so blocking only.
  absl::StatusOr<SampleResult> Sample(const Snapshot& model, int64_t count, std::optional<uint64_t> seed,
                                      double temperature, absl::Time deadline) const;

  // Marks a request as on its way in (see CallContext); `cancelled` may be null.
  CallContext Arrive(std::function<bool()> cancelled) const;

  const InputRules& rules() const { return rules_; }
  int64_t max_batch() const { return rules_.max_batch(); }
  int intra_op_threads() const { return intra_op_threads_; }
  // What the batcher has done so far; all zero when batching is off.
  Batcher::Stats batch_stats() const;

 private:
  // Torch threads for a model call of `rows` rows.
  int ThreadsFor(const Snapshot& model, int64_t rows) const;
  // Limits the calling thread's torch ops to `threads` (default intra_op_threads_).
  void LimitThreads(int threads = 0) const;
  // The row-wise model call of each operation. `keep` holds the snapshot for as long as the call may run.
  Batcher::Compute EncodeRows(std::shared_ptr<const Snapshot> keep) const;
  Batcher::Compute DecodeRows(std::shared_ptr<const Snapshot> keep) const;
  Batcher::Compute ReconstructRows(std::shared_ptr<const Snapshot> keep, bool sample_z, uint64_t seed) const;
  // Runs validated `rows` through the batcher (when on, `batchable` and under kDirectRows rows) or at once on this
  // thread, and hands `done` the outputs.
  void RunRows(Operation op, const Snapshot& model, const at::Tensor& rows, Batcher::Compute compute,
               absl::Time deadline, CallContext call, bool batchable, Batcher::Done done) const;
  InputRules rules_;
  int intra_op_threads_;
  int batch_threads_;
  std::unique_ptr<Batcher> batcher_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_INFERENCE_H_
