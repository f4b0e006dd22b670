// The thread-count policy every layer shares (common/threads.h): a positive count is kept, 0 or less means every core.
#include "common/threads.h"

#include <gtest/gtest.h>

#include <thread>

namespace vae {
namespace {

TEST(ResolveThreadCountTest, KeepsAPositiveCount) {
  EXPECT_EQ(ResolveThreadCount(1), 1);
  EXPECT_EQ(ResolveThreadCount(3), 3);
  EXPECT_EQ(ResolveThreadCount(512), 512);  // more threads than cores is the caller's choice, not clamped
}

TEST(ResolveThreadCountTest, ZeroOrLessMeansEveryCoreAndAtLeastOne) {
  // hardware_concurrency() is 0 when the count is unknown: the policy then falls back to 1.
  const int cores = std::thread::hardware_concurrency() > 0 ? static_cast<int>(std::thread::hardware_concurrency()) : 1;
  EXPECT_EQ(ResolveThreadCount(0), cores);
  EXPECT_EQ(ResolveThreadCount(-1), cores);
  EXPECT_GE(ResolveThreadCount(0), 1);
}

}  // namespace
}  // namespace vae
