#include "model/options.h"

#include <gtest/gtest.h>

namespace vae {
namespace {

TEST(OptionsTest, EveryPresetIsValidAndRoundTripsThroughJson) {
  for (const auto& name : PresetNames()) {
    auto o = Preset(name);
    ASSERT_TRUE(o.ok()) << name << ": " << o.status();
    EXPECT_TRUE(Validate(*o).ok()) << name;
    EXPECT_EQ(o->preset, name);
    auto back = OptionsFromJson(ToJson(*o));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(ToJson(*back), ToJson(*o));
  }
}

TEST(OptionsTest, SeedPresetIsTheSourceDocumentsNet) {
  auto o = Preset("seed");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->input_dim(), 116412);  // 3 x 218 x 178
  EXPECT_EQ(o->hidden, (std::vector<int64_t>{1164, 116}));
  EXPECT_EQ(o->latent_dim, 10);
  EXPECT_EQ(o->likelihood, Likelihood::kBernoulli);
}

TEST(OptionsTest, UnknownPresetNamesTheChoices) {
  auto o = Preset("resnet");
  ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(o.status().message().find("'resnet'"), std::string::npos);
  EXPECT_NE(o.status().message().find("mnist"), std::string::npos);
}

TEST(OptionsTest, ValidateRejectsBadValues) {
  VaeOptions o;
  o.latent_dim = 0;
  EXPECT_EQ(Validate(o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Validate(o).message().find("latent_dim"), std::string::npos);

  VaeOptions conv = *Preset("conv");
  conv.height = 30;  // 30 is not divisible by 2^2
  EXPECT_EQ(Validate(conv).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Validate(conv).message().find("divisible"), std::string::npos);

  EXPECT_EQ(OptionsFromJson("{not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseLikelihood("poisson").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vae
