// A piecewise-constant learning-rate schedule: a list of stages, each `epochs` epochs at `learning_rate`. Torch-free,
// shared by the trainer (model/trainer.cc), the server's validation, vae-client and vae-bench, which parse the same
// text form. Burda et al.'s IWAE schedule (3^i epochs at 1e-3 * 10^(-i/7), i = 0..7) is one such list; the caller
// writes it out (bench/reproduce-iwae.sh does).
#ifndef VAE_COMMON_LR_SCHEDULE_H_
#define VAE_COMMON_LR_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vae {

struct LrStage {
  int64_t epochs = 0;          // epochs of this stage, >= 1
  double learning_rate = 0.0;  // Adam step size during it, (0, kMaxLearningRate]
};
using LrSchedule = std::vector<LrStage>;

// Parses "EPOCHS:LR,EPOCHS:LR,..." (e.g. "3:1e-3,9:7.2e-4"; "" is the empty schedule). INVALID_ARGUMENT naming
// `field` and the offending stage.
absl::StatusOr<LrSchedule> ParseLrSchedule(const std::string& text, const std::string& field = "lr_schedule");
// The inverse of ParseLrSchedule (shortest round-tripping numbers).
std::string FormatLrSchedule(const LrSchedule& schedule);
// Checks every stage's range and the number of stages (kMaxLrStages in common/train_defaults.h).
absl::Status ValidateLrSchedule(const LrSchedule& schedule, const std::string& field = "lr_schedule");

// Where epoch `epoch` (0-based, counted over the model's life) falls: the stage index, or schedule.size() past the
// last stage (training beyond the schedule keeps the last stage's rate).
size_t LrStageAt(const LrSchedule& schedule, int64_t epoch);
// The learning rate of epoch `epoch`: its stage's, the last stage's past the end, `fallback` for an empty schedule.
double LearningRateAt(const LrSchedule& schedule, int64_t epoch, double fallback);

}  // namespace vae

#endif  // VAE_COMMON_LR_SCHEDULE_H_
