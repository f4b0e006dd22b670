#include "server/inference.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "model/loss.h"

namespace vae::server {
namespace {

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

// Finite and, when `lo` < `hi`, within [lo, hi]. Names the first offending element. One pass over the floats, no
// temporaries: on a 256-image batch the tensor-op version (isfinite, all, two comparisons, or, any) cost several
// passes and allocations per request.
absl::Status CheckValues(const at::Tensor& t, const char* op, const char* field, double lo, double hi) {
  const at::Tensor values = t.to(at::kCPU, at::kFloat).contiguous();
  const float* p = values.data_ptr<float>();
  const int64_t n = values.numel();
  const bool ranged = lo < hi;
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  for (int64_t i = 0; i < n; ++i) {
    const float v = p[i];
    // NaN fails every comparison, so !(v >= flo && v <= fhi) also catches it; the slow path says which it was.
    if (ranged ? !(v >= flo && v <= fhi) : !std::isfinite(v)) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": ", field, " holds a non-finite value (NaN or Inf) at flat index ", i, "; expected finite values"));
      }
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " value ", v, " at flat index ", i,
                                                     " is outside the expected range [", lo, ", ", hi, "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDeadline(absl::Time deadline, const char* op) {
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(op, ": the deadline passed before the model ran"));
  }
  return absl::OkStatus();
}

// The input rules' verdict, then the deadline: INVALID_ARGUMENT naming the field, or DEADLINE_EXCEEDED.
absl::Status CheckInput(absl::Status rules, absl::Time deadline, const char* op) {
  if (!rules.ok()) return rules;
  return CheckDeadline(deadline, op);
}

// Outputs leave as contiguous CPU tensors (model outputs are fresh tensors: they alias no parameter).
at::Tensor ToCpu(const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); }

// "op: message", keeping the code.
absl::Status Prefixed(const absl::Status& status, const char* op) {
  return absl::Status(status.code(), absl::StrCat(op, ": ", status.message()));
}

// Small batches of an MLP on the CPU skip ATen's dispatch (model/mlp_inference.h); large ones are all matrix
// products and run through the module, whose element-wise passes use every thread the call may.
bool UseMlpPath(const Snapshot& model, const at::Tensor& rows) {
  return model.mlp != nullptr && rows.size(0) < InferenceEngine::kParallelRows && rows.device().is_cpu();
}

// A non-owning handle on a snapshot that the caller keeps alive (the blocking wrappers).
std::shared_ptr<const Snapshot> Unowned(const Snapshot& model) {
  return std::shared_ptr<const Snapshot>(std::shared_ptr<const Snapshot>(), &model);
}

// Runs an async call and waits for its answer.
template <typename Result, typename Start>
absl::StatusOr<Result> Wait(Start start) {
  absl::StatusOr<Result> result;
  absl::Notification answered;
  start([&](absl::StatusOr<Result> r) {
    result = std::move(r);
    answered.Notify();
  });
  answered.WaitForNotification();
  return result;
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

InputRules::InputRules(int64_t max_batch, int64_t max_image_pixels, int max_message_mb)
    : max_batch_(std::max<int64_t>(1, max_batch)),
      max_image_pixels_(max_image_pixels),
      max_message_mb_(max_message_mb) {}

InputRules InputRules::FromOptions(const ServerOptions& options) {
  return InputRules(options.max_batch, options.max_image_pixels, options.max_message_mb);
}

int64_t InputRules::max_image_pixels(const VaeOptions& model) const {
  return MaxImagePixels(max_image_pixels_, model.height, model.width);
}

absl::Status InputRules::CheckEncodedCount(int64_t n) const {
  if (n <= max_batch_) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("images.encoded holds ", n, " images, over the limit of ", max_batch_, " (--max_batch)"));
}

absl::Status InputRules::CheckDeclaredPixels(const std::string& field, int64_t width, int64_t height,
                                             const VaeOptions& model) const {
  // A PNG declares each side in 32 bits: their product needs 64 unsigned bits (fuzz_image_decode found the signed
  // overflow).
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  const int64_t limit = max_image_pixels(model);
  if (pixels <= static_cast<uint64_t>(limit)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " declares ", width, "x", height, " (WxH) = ", pixels,
                                                 " pixels, over the limit of ", limit,
                                                 " (--max_image_pixels); send a smaller image"));
}

absl::Status InputRules::CheckBatch(int64_t n, const char* op, const char* field) const {
  if (n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", field, " is an empty batch (N = 0); expected 1 to ", max_batch_, " items"));
  }
  if (n > max_batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", field, " holds ", n, " items, over the limit of ", max_batch_, " (--max_batch)"));
  }
  return absl::OkStatus();
}

absl::Status InputRules::CheckImages(const VaeOptions& o, const at::Tensor& images, const char* op) const {
  const std::string expected = absl::StrCat("[N,", o.channels, ",", o.height, ",", o.width, "]");
  if (!images.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": images is not set"));
  if (images.scalar_type() != at::kFloat) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": images.dtype ", c10::toString(images.scalar_type()),
                                                   " is not supported, expected float32"));
  }
  const auto s = images.sizes();
  if (s.size() != 4 || s[1] != o.channels || s[2] != o.height || s[3] != o.width) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": images.shape ", ShapeString(s), " does not match model input ", expected));
  }
  VAE_RETURN_IF_ERROR(CheckBatch(s[0], op, "images"));
  return CheckValues(images, op, "images", 0.0, 1.0);
}

absl::Status InputRules::CheckCodes(const VaeOptions& model, const at::Tensor& z) const {
  const int64_t j = model.latent_dim;
  if (!z.defined()) return absl::InvalidArgumentError("decode: z is not set");
  if (z.scalar_type() != at::kFloat) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: z.dtype ", c10::toString(z.scalar_type()), " is not supported, expected float32"));
  }
  if (z.dim() != 2 || z.size(1) != j) {
    return absl::InvalidArgumentError(absl::StrCat("decode: z.shape ", ShapeString(z.sizes()),
                                                   " does not match the model's latent size [N,", j, "]"));
  }
  VAE_RETURN_IF_ERROR(CheckBatch(z.size(0), "decode", "z"));
  return CheckValues(z, "decode", "z", 0.0, 0.0);
}

absl::Status InputRules::CheckSample(int64_t count, double temperature) const {
  if (count < 1 || count > max_batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: count is ", count, ", expected 1 to ", max_batch_, " (--max_batch)"));
  }
  if (!(temperature > 0.0 && temperature <= kMaxTemperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: temperature is ", temperature, ", expected a value in (0, ", kMaxTemperature, "]"));
  }
  return absl::OkStatus();
}

absl::Status InputRules::CheckImageFormat(int format) {
  if (format < 0 || format > kMaxImageFormat) {
    return absl::InvalidArgumentError(absl::StrCat("format: unknown value ", format,
                                                   "; expected IMAGE_FORMAT_TENSOR, IMAGE_FORMAT_PNG or "
                                                   "IMAGE_FORMAT_TENSOR_AND_PNG"));
  }
  return absl::OkStatus();
}

absl::Status InputRules::CheckResponseBytes(const std::string& what, int64_t bytes) const {
  if (bytes <= max_message_bytes()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " ", bytes, " bytes, over the message limit of ",
                                                 max_message_bytes(), " bytes (", max_message_mb_,
                                                 " MiB, the server's --max_message_mb); ask for fewer, or raise "
                                                 "--max_message_mb (and the client's receive limit)"));
}

// Refuses, before any work, an answer that could not be sent: `n` items of `bytes_per_item` bytes of tensor data
// (what the response carries whatever the model computes; PNG files are counted when serialised).
absl::Status InputRules::CheckResponseSize(const char* op, int64_t n, int64_t bytes_per_item) const {
  return CheckResponseBytes(absl::StrCat(op, ": the response (", n, " x ", bytes_per_item, " bytes) would be at least"),
                            n * bytes_per_item);
}

absl::Status InputRules::CheckOutputSize(const char* op, const VaeOptions& model, int64_t n, int format,
                                         int64_t other_bytes) const {
  if (n < 1 || n > max_batch_) return absl::OkStatus();
  return CheckResponseSize(op, n, (WantsTensor(format) ? model.input_dim() * 4 : 0) + other_bytes);
}

InferenceEngine::InferenceEngine(InputRules rules, int intra_op_threads, BatchingOptions batching)
    : rules_(std::move(rules)),
      intra_op_threads_(intra_op_threads < 1 ? 1 : intra_op_threads),
      batch_threads_(std::max(batching.threads, intra_op_threads_)) {
  if (batching.enabled) {
    batcher_ = std::make_unique<Batcher>(
        Batcher::Options{rules_.max_batch(), batching.max_wait, std::max(1, batching.max_queue)});
  }
}

CallContext InferenceEngine::Arrive(std::function<bool()> cancelled) const {
  CallContext call;
  call.cancelled = std::move(cancelled);
  if (batcher_ != nullptr) call.pending_ = std::make_unique<Batcher::PendingCall>(batcher_.get());
  return call;
}

Batcher::Stats InferenceEngine::batch_stats() const {
  return batcher_ != nullptr ? batcher_->stats() : Batcher::Stats{};
}

int InferenceEngine::queued() const { return batcher_ != nullptr ? batcher_->queued() : 0; }

void InferenceEngine::RunRows(Operation op, const Snapshot& model, const at::Tensor& rows, Batcher::Compute compute,
                              absl::Time deadline, CallContext call, bool batchable, Batcher::Done done) const {
  if (batcher_ == nullptr || !batchable || rows.size(0) >= kDirectRows) {
    absl::StatusOr<std::vector<at::Tensor>> out;
    try {
      out = compute(rows);
    } catch (const c10::Error& e) {
      out = absl::InternalError(e.what_without_backtrace());
    }
    return done(std::move(out));
  }
  // One key per (snapshot, operation): only calls on the same weights doing the same thing share a model call.
  batcher_->Submit(BatchKey{&model, op}, rows, std::move(compute), deadline, std::move(call.cancelled),
                   call.pending_.get(), std::move(done));
}

int InferenceEngine::ThreadsFor(const Snapshot& model, int64_t rows) const {
  // Only batched calls run one at a time; unbatched ones run concurrently on the handler threads, where 2-thread
  // teams per call oversubscribe the cores (measured: 8 clients x b=256 unbatched fell from 91k to 7k images/s).
  const bool large = rows >= kParallelRows || rows * model.parameter_count >= kParallelWork;
  return Batcher::InBatch() && large ? batch_threads_ : intra_op_threads_;
}

void InferenceEngine::LimitThreads(int threads) const {
  if (threads <= 0) threads = intra_op_threads_;
#if AT_PARALLEL_OPENMP
  // With ATen's OpenMP backend the intra-op thread count is an OpenMP per-thread setting. at::set_num_threads would
  // also change the process-wide count that new threads (a training job's) start from, so set OpenMP's own value,
  // after ATen's lazy per-thread initialisation (which would otherwise reset it on this thread's first parallel op).
  at::internal::lazy_init_num_threads();
  omp_set_num_threads(threads);
#endif
}

Batcher::Compute InferenceEngine::EncodeRows(std::shared_ptr<const Snapshot> keep) const {
  return [this, keep = std::move(keep)](const at::Tensor& rows) -> std::vector<at::Tensor> {
    const Snapshot& m = *keep;
    const int64_t n = rows.size(0);
    LimitThreads(ThreadsFor(m, n));
    if (UseMlpPath(m, rows)) {
      const at::Tensor x = rows.contiguous();
      at::Tensor mu = at::empty({n, m.options.latent_dim}, at::kFloat);
      at::Tensor sigma = at::empty({n, m.options.latent_dim}, at::kFloat);
      m.mlp->Encode(x.data_ptr<float>(), n, mu.data_ptr<float>(), sigma.data_ptr<float>());
      return {mu, sigma};
    }
    Vae vae = m.model;  // a handle to the shared, read-only module
    auto [mu, logvar] = vae->encode(rows.to(m.device));
    return {ToCpu(mu), ToCpu(at::exp(0.5 * logvar))};
  };
}

Batcher::Compute InferenceEngine::DecodeRows(std::shared_ptr<const Snapshot> keep) const {
  return [this, keep = std::move(keep)](const at::Tensor& rows) -> std::vector<at::Tensor> {
    const Snapshot& m = *keep;
    const int64_t n = rows.size(0);
    LimitThreads(ThreadsFor(m, n));
    if (UseMlpPath(m, rows)) {
      const at::Tensor z = rows.contiguous();
      const auto& o = m.options;
      at::Tensor images = at::empty({n, o.channels, o.height, o.width}, at::kFloat);
      m.mlp->DecodeMean(z.data_ptr<float>(), n, images.data_ptr<float>());
      return {images};
    }
    Vae vae = m.model;
    return {ToCpu(vae->mean_image(vae->decode(rows.to(m.device))))};
  };
}

Batcher::Compute InferenceEngine::ReconstructRows(std::shared_ptr<const Snapshot> keep, bool sample_z,
                                                  uint64_t seed) const {
  return [this, keep = std::move(keep), sample_z, seed](const at::Tensor& rows) -> std::vector<at::Tensor> {
    const Snapshot& m = *keep;
    LimitThreads(ThreadsFor(m, rows.size(0)));
    Vae vae = m.model;
    const at::Tensor x = rows.to(m.device);
    auto [mu, logvar] = vae->encode(x);
    at::Tensor z = mu;
    if (sample_z) {
      // z = mu + sigma * eps with sigma = exp(0.5 * log sigma^2).
      z = mu + at::exp(0.5 * logvar) * SampleStandardNormal(mu.sizes(), mu.options(), MakeGenerator(seed));
    }
    const DecoderOutput decoded = vae->decode(z);
    return {ToCpu(vae->mean_image(decoded)), ToCpu(ReconstructionNll(m.options, decoded, x)),
            ToCpu(KlDivergence(mu, logvar))};
  };
}

void InferenceEngine::EncodeAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& images, absl::Time deadline,
                                  CallContext call, Callback<EncodeResult> done) const {
  c10::InferenceMode guard;
  LimitThreads();
  if (absl::Status bad = CheckInput(rules_.CheckImages(model->options, images, "encode"), deadline, "encode");
      !bad.ok()) {
    return done(bad);
  }
  const Snapshot& m = *model;
  RunRows(Operation::kEncode, m, images, EncodeRows(std::move(model)), deadline, std::move(call), /*batchable=*/true,
          [done = std::move(done)](absl::StatusOr<std::vector<at::Tensor>> out) {
            if (!out.ok()) return done(Prefixed(out.status(), "encode"));
            done(EncodeResult{(*out)[0], (*out)[1]});
          });
}

absl::StatusOr<EncodeResult> InferenceEngine::Encode(const Snapshot& model, const at::Tensor& images,
                                                     absl::Time deadline) const {
  return Wait<EncodeResult>(
      [&](Callback<EncodeResult> done) { EncodeAsync(Unowned(model), images, deadline, {}, std::move(done)); });
}

void InferenceEngine::DecodeAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& z, absl::Time deadline,
                                  CallContext call, Callback<DecodeResult> done) const {
  c10::InferenceMode guard;
  LimitThreads();
  if (absl::Status bad = CheckInput(rules_.CheckCodes(model->options, z), deadline, "decode"); !bad.ok()) {
    return done(bad);
  }
  const Snapshot& m = *model;
  RunRows(Operation::kDecode, m, z, DecodeRows(std::move(model)), deadline, std::move(call), /*batchable=*/true,
          [done = std::move(done)](absl::StatusOr<std::vector<at::Tensor>> out) {
            if (!out.ok()) return done(Prefixed(out.status(), "decode"));
            done(DecodeResult{(*out)[0]});
          });
}

absl::StatusOr<DecodeResult> InferenceEngine::Decode(const Snapshot& model, const at::Tensor& z,
                                                     absl::Time deadline) const {
  return Wait<DecodeResult>(
      [&](Callback<DecodeResult> done) { DecodeAsync(Unowned(model), z, deadline, {}, std::move(done)); });
}

void InferenceEngine::ReconstructAsync(std::shared_ptr<const Snapshot> model, const at::Tensor& images, bool sample_z,
                                       uint64_t seed, absl::Time deadline, CallContext call,
                                       Callback<ReconstructResult> done) const {
  c10::InferenceMode guard;
  LimitThreads();
  if (absl::Status bad = CheckInput(rules_.CheckImages(model->options, images, "reconstruct"), deadline, "reconstruct");
      !bad.ok()) {
    return done(bad);
  }
  const Snapshot& m = *model;
  // A sampled z comes from this call's own seeded generator: such calls run alone, never batched.
  RunRows(Operation::kReconstruct, m, images, ReconstructRows(std::move(model), sample_z, seed), deadline,
          std::move(call), /*batchable=*/!sample_z,
          [done = std::move(done)](absl::StatusOr<std::vector<at::Tensor>> out) {
            if (!out.ok()) return done(Prefixed(out.status(), "reconstruct"));
            done(ReconstructResult{(*out)[0], (*out)[1], (*out)[2]});
          });
}

absl::StatusOr<ReconstructResult> InferenceEngine::Reconstruct(const Snapshot& model, const at::Tensor& images,
                                                               bool sample_z, uint64_t seed,
                                                               absl::Time deadline) const {
  return Wait<ReconstructResult>([&](Callback<ReconstructResult> done) {
    ReconstructAsync(Unowned(model), images, sample_z, seed, deadline, {}, std::move(done));
  });
}

absl::StatusOr<SampleResult> InferenceEngine::Sample(const Snapshot& model, int64_t count, std::optional<uint64_t> seed,
                                                     double temperature, absl::Time deadline) const {
  c10::InferenceMode guard;
  LimitThreads();
  VAE_RETURN_IF_ERROR(rules_.CheckSample(count, temperature));
  VAE_RETURN_IF_ERROR(CheckDeadline(deadline, "sample"));
  SampleResult result;
  result.seed = seed.has_value() ? *seed : RandomSeed();
  try {
    Vae vae = model.model;
    // z ~ N(0, temperature^2 I), drawn on the CPU from this call's own generator: bitwise repeatable per seed.
    at::Tensor z = SampleStandardNormal({count, model.options.latent_dim}, at::TensorOptions().dtype(at::kFloat),
                                        MakeGenerator(result.seed)) *
                   temperature;
    result.images = ToCpu(vae->mean_image(vae->decode(z.to(model.device))));
    result.z = ToCpu(z);
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("sample: ", e.what_without_backtrace()));
  }
}

}  // namespace vae::server
