// Plain data of the vae-server client API: options, model info, versions, metrics, training progress. Torch-free
// and gRPC-free (client.h adds the tensor-carrying results and the Client itself). Copyable values; no shared state.
// In namespace vae::client so that its TrainOptions / Metrics do not clash with model/trainer.h's.
#ifndef VAE_CLIENT_TYPES_H_
#define VAE_CLIENT_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/lr_schedule.h"

namespace vae::client {

struct ClientOptions {
  // Deadline of each call (Train: see TrainOptions::timeout). It also bounds connecting: a server that does not
  // answer within it gives DEADLINE_EXCEEDED, "cannot reach vae-server at ...: timed out while connecting".
  absl::Duration timeout = absl::Seconds(30);
  // Largest message sent or received, MiB (match the server's --max_message_mb).
  int max_message_mb = 64;
  // TLS. Unset: a plaintext channel. Set: the channel is encrypted and the server's certificate is verified against
  // `root_certs_pem` (the system's roots when empty); with a certificate chain and its key the client also proves
  // who it is, as a server started with --tls_client_ca requires. PEM text, not paths (LoadTlsFiles reads files).
  struct Tls {
    std::string root_certs_pem;
    std::string cert_chain_pem;
    std::string private_key_pem;
  };
  std::optional<Tls> tls;
  // Bearer token of a server started with --auth_token_file (or its read-only token). Non-empty: every call carries
  // the metadata "authorization: Bearer <token>". Visible ASCII only. Without TLS it crosses the network readable.
  std::string token;
};

// Which weights answered (ModelVersion in the proto).
struct ModelVersion {
  int64_t generation = 0;      // increases by one each time the server publishes new weights
  int64_t epochs_trained = 0;  // completed epochs behind these weights
  int64_t global_step = 0;     // optimizer steps behind these weights
};

// Per-image means, in nats.
struct Metrics {
  double loss = 0;   // reconstruction + beta * KL
  double recon = 0;  // -log p(x|z)
  double kl = 0;     // KL(q(z|x) || N(0, I))
};

// What the served model is (GetModelInfo).
struct ModelInfo {
  std::string preset;
  std::string options_json;          // the full VaeOptions as JSON
  std::vector<int64_t> input_shape;  // [C, H, W]
  int64_t latent_dim = 0;            // J
  std::string likelihood;            // bernoulli | gaussian | gaussian_fixed
  std::string architecture;          // mlp | conv
  int64_t parameter_count = 0;
  ModelVersion version;
  std::optional<Metrics> last_train;
  std::optional<Metrics> last_test;
  std::string device;
  std::string checkpoint_path;  // "" for a fresh model
  bool training = false;
  std::string training_job_id;
  std::vector<std::string> presets;
  std::string train_json;
  int32_t max_batch = 0;  // the most images or codes one request may carry
};

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
const char* ServingStatusName(ServingStatus status);  // "SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN"

struct SampleOptions {
  int32_t count = 1;             // 1 .. ModelInfo::max_batch
  std::optional<uint64_t> seed;  // unset: the server picks one (returned in SampleResult::seed)
  float temperature = 1.0f;      // z ~ N(0, temperature^2 I); (0, 10]
};

struct ReconstructOptions {
  bool sample_z = false;  // false: decode z = mu; true: decode one z ~ q(z|x) drawn with `seed`
  uint64_t seed = 0;
};

// A Train request. Zeros mean the server's defaults; those and the bounds the server checks are defined once, in
// common/train_defaults.h (a header of constants; documented in vae_service.proto too).
struct TrainOptions {
  std::string dataset;           // "mnist", "fashion-mnist", or a folder under the server's --data_dir
  int32_t epochs = 0;            // 0: kDefaultTrainEpochs; at most kMaxEpochs
  int32_t batch_size = 0;        // 0: kDefaultBatchSize; at most kMaxBatchSize
  double learning_rate = 0;      // 0: kDefaultLearningRate; at most kMaxLearningRate
  uint64_t seed = 0;             // 0: kDefaultTrainSeed
  bool resume = false;           // continue the newest checkpoint instead of training a fresh model
  std::string preset;            // fresh model from a preset
  std::string options_json;      // fresh model from explicit VaeOptions
  int32_t log_every_steps = 0;   // a kStep message every N steps; 0: kDefaultLogEverySteps
  int32_t max_train_images = 0;  // use the first N training images; 0: all
  bool binarize = false;         // dynamic binarisation
  int32_t iw_samples = 0;        // IWAE k; 0: kDefaultIwSamples (1, the ELBO); at most kMaxIwSamples
  double adam_eps = 0;           // Adam's epsilon; 0: kDefaultAdamEps; at most kMaxAdamEps
  LrSchedule lr_schedule;        // per-epoch learning rates (common/lr_schedule.h); empty: learning_rate throughout
  // Deadline of the whole job; infinite by default (ClientOptions::timeout does not apply to Train).
  absl::Duration timeout = absl::InfiniteDuration();
};

// One message of the Train stream (TrainProgress in the proto).
struct TrainProgress {
  enum class Kind { kUnspecified, kStarted, kStep, kEpochEnd, kDone };
  Kind kind = Kind::kUnspecified;
  std::string job_id;
  std::string dataset;
  int64_t epoch = 0;   // 1-based epoch of the model's life being trained or just finished
  int64_t epochs = 0;  // the epoch this job trains up to
  int64_t step_in_epoch = 0;
  int64_t steps_per_epoch = 0;
  int64_t global_step = 0;
  Metrics train;
  std::optional<Metrics> test;  // kEpochEnd / kDone
  double images_per_sec = 0;
  double elapsed_sec = 0;
  double eta_sec = 0;
  bool cancelled = false;
  std::string checkpoint_path;  // kEpochEnd / kDone
  ModelVersion version;         // kEpochEnd / kDone
};

struct TrainResult {
  // The job stopped early: cancelled through the TrainCancellation (the stream then ends without a kDone message;
  // the server writes a checkpoint of the steps done and keeps serving its last published weights), or the server
  // reported kDone with cancelled set.
  bool cancelled = false;
  // The last message received (kDone when the job ran to its end); kind kUnspecified when none arrived.
  TrainProgress last;
};

}  // namespace vae::client

#endif  // VAE_CLIENT_TYPES_H_
