// Plain data of the vae-server client API: options, model info, versions, metrics, training progress. Torch-free
// and gRPC-free (client.h adds the tensor-carrying results and the Client itself). Copyable values; no shared state.
// In namespace vae::client so that its TrainOptions / Metrics do not clash with model/trainer.h's.
#ifndef VAE_CLIENT_TYPES_H_
#define VAE_CLIENT_TYPES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
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

// Which model, and which of its versions, answers a request (ModelSpec in the proto). Every inference call takes
// one as its last parameter; the default (all fields empty) is the server's default model at that model's default label
// ("latest" unless set), which is what a request of a client written before model versions gets. A pinned version
// answers bitwise the same results for the same input and seed until it is deleted, whatever is trained meanwhile: pin
// one (and store it with every latent code you keep) when codes from different calls must be comparable.
struct ModelSpec {
  std::string name;     // a model in the server's repository; empty: the server's default model (--default_model)
  int64_t version = 0;  // a version number (>= 1) of that model; 0: not pinned
  std::string label;    // a label ("stable", "latest", ...); only without `version` (both: INVALID_ARGUMENT)

  // A spec that pins `version` of model `name` ("" = the default model), e.g. the ModelVersion an answer named.
  static ModelSpec Pinned(std::string name, int64_t version) { return {std::move(name), version, ""}; }
  // A spec that follows `label` of model `name`.
  static ModelSpec Labelled(std::string name, std::string label) { return {std::move(name), 0, std::move(label)}; }
};

// Which weights answered (ModelVersion in the proto).
struct ModelVersion {
  int64_t generation = 0;      // the same number as `version` (what servers before model versions sent)
  int64_t epochs_trained = 0;  // completed epochs behind these weights
  int64_t global_step = 0;     // optimizer steps behind these weights
  std::string model;           // the model's name ("" from a server before model versions)
  int64_t version = 0;         // the immutable version within `model` (0 from a server before model versions)
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
  int32_t max_batch = 0;            // the most images or codes one request may carry
  std::vector<std::string> labels;  // the labels that name this version ("latest" included)
  std::string default_label;        // the label a request without a version uses for this model
};

// One version of a model in the repository (ListModels).
struct VersionInfo {
  int64_t version = 0;
  int64_t epochs_trained = 0;
  int64_t global_step = 0;
  std::optional<Metrics> train;            // the last training epoch's mean, when known
  std::optional<Metrics> test;             // the test-set metrics the version was published with, when known
  absl::Time created = absl::UnixEpoch();  // when its checkpoint was written
  std::vector<std::string> labels;         // labels naming it ("latest" included)
  bool loaded = false;                     // in the server's memory now (others are loaded on demand)
  int64_t size_bytes = 0;                  // its checkpoint file
};

// One model of the repository (ListModels).
struct ModelEntry {
  std::string name;
  std::string preset;
  std::string options_json;
  int64_t parameter_count = 0;
  std::string default_label;              // what requests without a version use
  std::map<std::string, int64_t> labels;  // label -> version, "latest" included
  std::vector<VersionInfo> versions;      // oldest first
  bool training = false;                  // a training job of this model is running
};

// The repository as ListModels describes it.
struct ModelList {
  std::vector<ModelEntry> models;  // by name
  std::string default_model;       // the model a request without ModelSpec::name uses
};

// What the admin calls changed.
struct SetLabelResult {
  int64_t previous_version = 0;  // the version the label named before; 0 when it is new
};
struct DeleteVersionResult {
  std::vector<std::string> removed_labels;  // labels that named the version (force)
};
struct DeleteModelResult {
  int64_t versions_deleted = 0;
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
  // The model to train; empty: the server's default model. A new name is created (from options_json, else preset,
  // else the default model's options); an existing one keeps its options and gets new versions.
  std::string model;
  // Set: at the end of a job that ran to its end, the server points this label at the final version if its test
  // loss beats the version the label names now (or the label is new); TrainProgress::label_moved says whether it
  // did. Not "latest".
  std::string promote_label;
  int32_t iw_samples = 0;  // IWAE k; 0: kDefaultIwSamples (1, the ELBO); at most kMaxIwSamples
  double adam_eps = 0;     // Adam's epsilon; 0: kDefaultAdamEps; at most kMaxAdamEps
  LrSchedule lr_schedule;  // per-epoch learning rates (common/lr_schedule.h); empty: learning_rate throughout
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
  bool label_moved = false;     // kDone: TrainOptions::promote_label was moved to the final version
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
