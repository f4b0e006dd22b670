#include "common/lr_schedule.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/train_defaults.h"

namespace vae {

absl::StatusOr<LrSchedule> ParseLrSchedule(const std::string& text, const std::string& field) {
  LrSchedule schedule;
  if (absl::StripAsciiWhitespace(text).empty()) return schedule;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const std::vector<absl::string_view> parts = absl::StrSplit(item, ':');
    LrStage stage;
    if (parts.size() != 2 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[0]), &stage.epochs) ||
        !absl::SimpleAtod(absl::StripAsciiWhitespace(parts[1]), &stage.learning_rate)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": stage ", schedule.size(), " is '", item,
                                                     "', expected EPOCHS:LEARNING_RATE (e.g. 3:1e-3)"));
    }
    schedule.push_back(stage);
  }
  if (auto status = ValidateLrSchedule(schedule, field); !status.ok()) return status;
  return schedule;
}

std::string FormatLrSchedule(const LrSchedule& schedule) {
  std::string out;
  for (const LrStage& stage : schedule) {
    char lr[32] = "";
    // The shortest form that parses back to the same double.
    for (int digits = 1; digits <= 17; ++digits) {
      std::snprintf(lr, sizeof(lr), "%.*g", digits, stage.learning_rate);
      double back = 0;
      if (absl::SimpleAtod(lr, &back) && back == stage.learning_rate) break;
    }
    absl::StrAppend(&out, out.empty() ? "" : ",", stage.epochs, ":", lr);
  }
  return out;
}

absl::Status ValidateLrSchedule(const LrSchedule& schedule, const std::string& field) {
  if (schedule.size() > static_cast<size_t>(kMaxLrStages)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " has ", schedule.size(), " stages, at most ", kMaxLrStages, " allowed"));
  }
  for (size_t i = 0; i < schedule.size(); ++i) {
    if (!IsValidStageEpochs(schedule[i].epochs)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "].epochs is ", schedule[i].epochs, ", expected 1 to ", kMaxStageEpochs));
    }
    if (!IsValidLearningRate(schedule[i].learning_rate)) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "].learning_rate is ", schedule[i].learning_rate,
                                                     ", expected in (0, ", kMaxLearningRate, "]"));
    }
  }
  return absl::OkStatus();
}

size_t LrStageAt(const LrSchedule& schedule, int64_t epoch) {
  int64_t end = 0;
  for (size_t i = 0; i < schedule.size(); ++i) {
    end += schedule[i].epochs;
    if (epoch < end) return i;
  }
  return schedule.size();
}

double LearningRateAt(const LrSchedule& schedule, int64_t epoch, double fallback) {
  if (schedule.empty()) return fallback;
  const size_t stage = LrStageAt(schedule, epoch);
  return schedule[stage < schedule.size() ? stage : schedule.size() - 1].learning_rate;
}

}  // namespace vae
