#include "common/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/train_defaults.h"

namespace vae {
namespace {

TEST(LrScheduleTest, ParsesFormatsAndRoundTrips) {
  // Burda et al.'s first three stages: 3^i epochs at 1e-3 * 10^(-i/7).
  auto s = ParseLrSchedule("1:1e-3, 3:0.000719686,9:5.17947e-4");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[1].epochs, 3);
  EXPECT_DOUBLE_EQ((*s)[1].learning_rate, 0.000719686);
  EXPECT_EQ(FormatLrSchedule(*s), "1:0.001,3:0.000719686,9:0.000517947");
  auto back = ParseLrSchedule(FormatLrSchedule(*s));
  ASSERT_TRUE(back.ok());
  for (size_t i = 0; i < s->size(); ++i) EXPECT_EQ((*back)[i].learning_rate, (*s)[i].learning_rate);
  // A rate that needs all 17 digits survives the round trip.
  const LrSchedule exact = {{2, 1e-3 * std::pow(10.0, -1.0 / 7)}};
  EXPECT_EQ(ParseLrSchedule(FormatLrSchedule(exact))->at(0).learning_rate, exact[0].learning_rate);
  EXPECT_TRUE(ParseLrSchedule("")->empty());
  EXPECT_EQ(FormatLrSchedule({}), "");
}

TEST(LrScheduleTest, RejectsMalformedAndOutOfRangeStagesNamingThem) {
  for (const char* bad : {"3", "3:", ":1e-3", "3:1e-3:4", "x:1e-3", "3:fast", "3:1e-3,"}) {
    auto s = ParseLrSchedule(bad, "--lr_schedule");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("--lr_schedule: stage"), std::string::npos) << s.status();
  }
  auto zero = ParseLrSchedule("1:1e-3,0:1e-4");
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(zero.status().message().find("lr_schedule[1].epochs is 0"), std::string::npos) << zero.status();
  for (const char* rate : {"0", "-1e-3", "11", "nan"}) {
    auto s = ParseLrSchedule(std::string("5:") + rate);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << rate;
    EXPECT_NE(s.status().message().find("lr_schedule[0].learning_rate"), std::string::npos) << s.status();
  }
  LrSchedule many(kMaxLrStages + 1, LrStage{1, 1e-3});
  EXPECT_EQ(ValidateLrSchedule(many).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateLrSchedule(LrSchedule(kMaxLrStages, LrStage{1, 1e-3})).ok());
}

TEST(LrScheduleTest, EachEpochFallsInItsStageAndTheLastRateStays) {
  const LrSchedule s = {{1, 1e-3}, {3, 5e-4}, {9, 1e-4}};  // epochs 0 | 1-3 | 4-12
  EXPECT_EQ(LrStageAt(s, 0), 0u);
  EXPECT_EQ(LrStageAt(s, 1), 1u);
  EXPECT_EQ(LrStageAt(s, 3), 1u);
  EXPECT_EQ(LrStageAt(s, 4), 2u);
  EXPECT_EQ(LrStageAt(s, 12), 2u);
  EXPECT_EQ(LrStageAt(s, 13), 3u);  // past the end
  EXPECT_EQ(LearningRateAt(s, 0, 7.0), 1e-3);
  EXPECT_EQ(LearningRateAt(s, 3, 7.0), 5e-4);
  EXPECT_EQ(LearningRateAt(s, 12, 7.0), 1e-4);
  EXPECT_EQ(LearningRateAt(s, 100, 7.0), 1e-4);
  EXPECT_EQ(LearningRateAt({}, 5, 7.0), 7.0);
}

}  // namespace
}  // namespace vae
