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

// What a Train request may ask for (the server checks them in server::ValidateTrainSpec).
inline constexpr int64_t kMaxEpochs = 1000;       // epochs of one job: 1 .. kMaxEpochs
inline constexpr int64_t kMaxBatchSize = 65536;   // 1 .. kMaxBatchSize
inline constexpr double kMaxLearningRate = 10.0;  // (0, kMaxLearningRate]

// Each range, defined once; callers word their own messages with the constants above.
constexpr bool IsValidEpochs(int64_t epochs) { return epochs >= 1 && epochs <= kMaxEpochs; }
constexpr bool IsValidBatchSize(int64_t batch_size) { return batch_size >= 1 && batch_size <= kMaxBatchSize; }
constexpr bool IsValidLearningRate(double lr) { return lr > 0.0 && lr <= kMaxLearningRate; }  // false for NaN
constexpr bool IsValidLogEverySteps(int64_t steps) { return steps >= 1; }

}  // namespace vae

#endif  // VAE_COMMON_TRAIN_DEFAULTS_H_
