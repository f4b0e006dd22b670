// server/png_writer.h, server/idle_helpers.h and EncodePngs: every PNG decodes (OpenCV, libpng) to exactly the pixels
// written, for gray and RGB(A), several sizes, every filter and compression level; the idle helpers return every
// item in order, also when a helper stalls holding one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <thread>

#include "server/idle_helpers.h"
#include "server/png_writer.h"
#include "server/tensor_codec.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;

// Interleaved pixels, half smooth gradient and half noise (so filters and matches both matter), seeded.
std::vector<uint8_t> TestPixels(int w, int h, int c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> p(static_cast<size_t>(w) * h * c);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int k = 0; k < c; ++k) {
        const size_t i = (static_cast<size_t>(y) * w + x) * c + k;
        p[i] = y < h / 2 ? static_cast<uint8_t>(x * 7 + y * 3 + k * 50) : static_cast<uint8_t>(rng());
      }
    }
  }
  return p;
}

// Decodes `png` with OpenCV and returns it as interleaved pixels in PNG's channel order (RGB, RGBA).
std::vector<uint8_t> DecodeToPixels(const std::string& png, int* w, int* h, int* c) {
  cv::Mat m = cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_UNCHANGED);
  if (m.empty()) return {};
  if (m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  if (m.channels() == 4) cv::cvtColor(m, m, cv::COLOR_BGRA2RGBA);
  if (m.depth() != CV_8U) return {};
  *w = m.cols, *h = m.rows, *c = m.channels();
  return std::vector<uint8_t>(m.data, m.data + m.total() * m.elemSize());
}

TEST(PngWriterTest, EveryFilterAndLevelDecodesToExactlyThePixels) {
  const PngFilter filters[] = {PngFilter::kNone,    PngFilter::kSub,   PngFilter::kUp,
                               PngFilter::kAverage, PngFilter::kPaeth, PngFilter::kAdaptive};
  const std::pair<int, int> sizes[] = {{1, 1}, {28, 28}, {13, 7}, {64, 64}, {178, 218}};
  for (int c : {1, 3, 4}) {
    for (auto [w, h] : sizes) {
      const std::vector<uint8_t> pixels = TestPixels(w, h, c, 7u * w + h + c);
      for (PngFilter filter : filters) {
        for (int level : {0, 1, 6, 12}) {
          SCOPED_TRACE(::testing::Message()
                       << w << "x" << h << "x" << c << " filter " << static_cast<int>(filter) << " level " << level);
          auto png = WritePng(pixels.data(), w, h, c, {level, filter});
          ASSERT_TRUE(png.ok()) << png.status();
          EXPECT_EQ(png->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
          int dw = 0, dh = 0, dc = 0;
          EXPECT_EQ(DecodeToPixels(*png, &dw, &dh, &dc), pixels);
          EXPECT_EQ(dw, w);
          EXPECT_EQ(dh, h);
          EXPECT_EQ(dc, c);
        }
      }
    }
  }
}

TEST(PngWriterTest, CompressesAFlatImageAndStoresAtLevelZero) {
  const std::vector<uint8_t> flat(64 * 64, 200);
  auto compressed = WritePng(flat.data(), 64, 64, 1, {1, PngFilter::kNone});
  auto stored = WritePng(flat.data(), 64, 64, 1, {0, PngFilter::kNone});
  ASSERT_TRUE(compressed.ok() && stored.ok());
  // 64 rows of 65 bytes: stored keeps all 4160 of them (+ 57 bytes of PNG and zlib framing); deflate needs < 100.
  EXPECT_GT(stored->size(), 64u * 65u);
  EXPECT_LT(compressed->size(), 150u);
}

TEST(PngWriterTest, RefusesSizesChannelsAndLevelsPngCannotHold) {
  const uint8_t pixel[4] = {1, 2, 3, 4};
  EXPECT_THAT(WritePng(pixel, 0, 1, 1).status().message(), HasSubstr("cannot write a 0x1 (WxH) image"));
  EXPECT_THAT(WritePng(pixel, 1, 1, 5).status().message(), HasSubstr("with 5 channels"));
  EXPECT_THAT(WritePng(pixel, int64_t{1} << 31, 1, 1).status().message(), HasSubstr("cannot write"));
  EXPECT_EQ(WritePng(pixel, 1, 1, 1, {13, PngFilter::kNone}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(WritePng(pixel, 1, 1, 1, {-1, PngFilter::kNone}).status().message(),
              HasSubstr("compression level -1, expected 0..12"));
}

// EncodePngs from float tensors: the decoded PNG equals round-half-to-even(clamp(x, 0, 1) * 255), gray and RGB,
// serially and through the idle helpers, in order.
TEST(EncodePngsTest, DecodesToTheQuantisedTensorForGrayAndRgb) {
  IdleHelpers helpers(2);
  at::manual_seed(3);
  for (int64_t c : {1, 3}) {
    for (auto [h, w] : {std::pair<int64_t, int64_t>{28, 28}, {5, 9}, {64, 48}}) {
      // Values in [-0.2, 1.2] so clamping matters, plus exact halves (x.5 / 255) that round to even.
      at::Tensor images = at::rand({40, c, h, w}) * 1.4 - 0.2;
      images[0][0][0][0] = 127.5f / 255.0f;
      const at::Tensor expected =
          images.clamp(0, 1).mul(255.0).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();
      for (IdleHelpers* pool : {static_cast<IdleHelpers*>(nullptr), &helpers}) {
        PngEncoding encoding;
        encoding.helpers = pool;
        encoding.min_parallel_bytes = 0;
        auto pngs = EncodePngs(images, encoding);
        ASSERT_TRUE(pngs.ok()) << pngs.status();
        ASSERT_EQ(pngs->size(), 40u);
        for (int64_t i = 0; i < 40; ++i) {
          int dw = 0, dh = 0, dc = 0;
          const std::vector<uint8_t> decoded = DecodeToPixels((*pngs)[i], &dw, &dh, &dc);
          const uint8_t* want = expected[i].data_ptr<uint8_t>();
          ASSERT_EQ(decoded, std::vector<uint8_t>(want, want + c * h * w)) << "image " << i << " c " << c;
        }
      }
    }
  }
}

TEST(EncodePngsTest, NanBecomesZeroAndOtherChannelCountsAreRefused) {
  const at::Tensor nan = at::full({1, 1, 2, 2}, std::numeric_limits<float>::quiet_NaN());
  auto pngs = EncodePngs(nan);
  ASSERT_TRUE(pngs.ok());
  int w = 0, h = 0, c = 0;
  EXPECT_EQ(DecodeToPixels((*pngs)[0], &w, &h, &c), std::vector<uint8_t>(4, 0));
  EXPECT_THAT(EncodePngs(at::zeros({1, 2, 4, 4})).status().message(),
              HasSubstr("PNG output needs 1, 3 or 4 channels, the model has 2"));
}

TEST(IdleHelpersTest, ReturnsEveryItemInOrder) {
  IdleHelpers helpers(3);
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    std::atomic<int64_t> calls{0};
    auto out = helpers.Map<int64_t>(n, [&calls](int64_t i) {
      ++calls;
      return i * i;
    });
    ASSERT_EQ(static_cast<int64_t>(out.size()), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], i * i);
    EXPECT_GE(calls.load(), n);  // duplicates only for items a helper held past the caller's wait
  }
}

// A helper that lost its CPU (here: blocked) while holding an item must not hold the call up: the caller produces
// that item itself after its short wait, and the helper's late copy is dropped.
TEST(IdleHelpersTest, AStalledHelperDoesNotHoldTheCallerUp) {
  IdleHelpers helpers(1);
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto helper_items = std::make_shared<std::atomic<int>>(0);
  std::vector<int64_t> out;
  std::thread caller([&] {
    out = helpers.Map<int64_t>(200, [release, helper_items](int64_t i) {
      if (IdleHelpers::InHelperThread()) {
        ++*helper_items;
        while (!release->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return int64_t{-1};  // the helper's (late) answer: must never be used
      }
      if (i == 0) {  // hold the first item until the helper has claimed one (SCHED_IDLE: it may take a while)
        const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (helper_items->load() == 0 && std::chrono::steady_clock::now() < limit) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      return i + 1;
    });
  });
  caller.join();  // returns while the helper is still blocked
  ASSERT_EQ(out.size(), 200u);
  for (int64_t i = 0; i < 200; ++i) EXPECT_EQ(out[i], i + 1) << i;
  EXPECT_EQ(helper_items->load(), 1);  // it claimed one item and stalled on it
  release->store(true);
}

}  // namespace
}  // namespace vae::server
