// The defaults and bounds of a training request, defined once. Header-only and dependency-free (constexpr values),
// so that the server's validation (server/training_job.cc), the vae-client flags, the client library's comments and
// vae-bench all read the same numbers without linking vae::model. The proto (vae_service.proto, TrainRequest)
// documents the same values for other clients.
#ifndef VAE_COMMON_TRAIN_DEFAULTS_H_
#define VAE_COMMON_TRAIN_DEFAULTS_H_

#include <cstdint>

namespace vae {

// What a Train request gets when it leaves a field at 0.
inline constexpr int64_t kDefaultTrainEpochs = 1;      // epochs trained by one job
inline constexpr int64_t kDefaultBatchSize = 128;      // images per optimizer step
inline constexpr double kDefaultLearningRate = 1e-3;   // Adam step size
inline constexpr uint64_t kDefaultTrainSeed = 1;       // epoch order, noise, a fresh model's initial weights
inline constexpr int64_t kDefaultLogEverySteps = 100;  // a STEP message every N steps
inline constexpr int64_t kDefaultIwSamples = 1;        // k of the IWAE objective; 1 = the VAE's ELBO
inline constexpr double kDefaultAdamEps = 1e-8;        // Adam's epsilon (torch's default; Burda et al. use 1e-4)
// No learning-rate schedule by default: every epoch at learning_rate (common/lr_schedule.h).

// What a Train request may ask for (the server checks them in server::ValidateTrainSpec).
inline constexpr int64_t kMaxEpochs = 1000;       // epochs of one job: 1 .. kMaxEpochs
inline constexpr int64_t kMaxBatchSize = 65536;   // 1 .. kMaxBatchSize
inline constexpr double kMaxLearningRate = 10.0;  // (0, kMaxLearningRate]

inline constexpr int64_t kMaxIwSamples = 1000;       // IWAE k: 1 .. kMaxIwSamples (a step decodes k * batch_size rows)
inline constexpr double kMaxAdamEps = 1.0;           // (0, kMaxAdamEps]
inline constexpr int64_t kMaxLrStages = 64;          // stages of a learning-rate schedule: 0 .. kMaxLrStages
inline constexpr int64_t kMaxStageEpochs = 1000000;  // epochs of one schedule stage: 1 .. kMaxStageEpochs

// IW-NLL evaluation (vae-bench iwnll): importance samples per image, and how many are decoded at once.
inline constexpr int64_t kDefaultIwnllSamples = 5000;  // Burda et al.'s k for the test NLL
inline constexpr int64_t kMaxIwnllSamples = 1000000;

// Each range, defined once; callers word their own messages with the constants above.
constexpr bool IsValidEpochs(int64_t epochs) { return epochs >= 1 && epochs <= kMaxEpochs; }
constexpr bool IsValidBatchSize(int64_t batch_size) { return batch_size >= 1 && batch_size <= kMaxBatchSize; }
constexpr bool IsValidLearningRate(double lr) { return lr > 0.0 && lr <= kMaxLearningRate; }  // false for NaN
constexpr bool IsValidLogEverySteps(int64_t steps) { return steps >= 1; }
constexpr bool IsValidIwSamples(int64_t k) { return k >= 1 && k <= kMaxIwSamples; }
constexpr bool IsValidAdamEps(double eps) { return eps > 0.0 && eps <= kMaxAdamEps; }  // false for NaN
constexpr bool IsValidStageEpochs(int64_t epochs) { return epochs >= 1 && epochs <= kMaxStageEpochs; }

}  // namespace vae

#endif  // VAE_COMMON_TRAIN_DEFAULTS_H_
