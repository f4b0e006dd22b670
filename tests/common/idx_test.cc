// Tests for the idx reader: exact round trips of small plain and gzipped files, and one test per rejection the
// header promises (bad magic, type, dims, truncation, oversized header, trailing bytes, missing file), each
// asserting the exact absl code and the key words of the message. The reader must never crash: every prefix and a
// few thousand random corruptions of a valid file are fed to it.
#include "common/idx.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/model/status_matchers.h"
namespace vae {
namespace {

namespace fs = std::filesystem;

using ::vae::testing::HasCodeAndWords;

// An idx file's bytes: 0x00 0x00 type ndims, big-endian uint32 dims, then `data`.
std::string MakeIdx(uint8_t type, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    out.push_back(static_cast<char>(d >> 24));
    out.push_back(static_cast<char>(d >> 16));
    out.push_back(static_cast<char>(d >> 8));
    out.push_back(static_cast<char>(d));
  }
  out.append(data.begin(), data.end());
  return out;
}

std::vector<uint8_t> Iota(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("idx_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WritePlain(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::string WriteGzip(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    }
    EXPECT_EQ(gzclose(f), Z_OK);
    return path;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

TEST_F(IdxTest, ParseIdxRoundTripsExactly) {
  // 2x3x4 uint8 values 0..23, row-major.
  absl::StatusOr<IdxArray> a = ParseIdx(MakeIdx(0x08, {2, 3, 4}, Iota(24)), "mem");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dims, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(a->data, Iota(24));
}

TEST_F(IdxTest, ReadsPlainLabelsAndImagesExactly) {
  // The first five MNIST training labels.
  const std::vector<uint8_t> labels = {5, 0, 4, 1, 9};
  absl::StatusOr<IdxArray> l = ReadIdx(WritePlain("labels", MakeIdx(0x08, {5}, labels)));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->dims, (std::vector<int64_t>{5}));
  EXPECT_EQ(l->data, labels);

  // 255 - i exercises bytes above 127 (no sign extension anywhere).
  std::vector<uint8_t> pixels(2 * 2 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(255 - i);
  absl::StatusOr<IdxArray> img = ReadIdx(WritePlain("images", MakeIdx(0x08, {2, 2, 3}, pixels)));
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->dims, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(img->data, pixels);
  EXPECT_EQ(img->data.front(), 255);
  EXPECT_EQ(img->data.back(), 244);
}

TEST_F(IdxTest, ReadsGzipExactlyAndDetectsItByMagicNotName) {
  const std::string bytes = MakeIdx(0x08, {3, 28, 28}, Iota(3 * 28 * 28, 7));
  for (const char* name : {"images.gz", "images-no-suffix"}) {
    absl::StatusOr<IdxArray> a = ReadIdx(WriteGzip(name, bytes));
    ASSERT_TRUE(a.ok()) << name << ": " << a.status();
    EXPECT_EQ(a->dims, (std::vector<int64_t>{3, 28, 28}));
    EXPECT_EQ(a->data, Iota(3 * 28 * 28, 7));
  }
  // A plain file that happens to be called .gz is read as plain.
  absl::StatusOr<IdxArray> plain = ReadIdx(WritePlain("plain.gz", bytes));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->data, Iota(3 * 28 * 28, 7));
}

TEST_F(IdxTest, AcceptsOneToFourDimsAndEmptyArrays) {
  absl::StatusOr<IdxArray> four = ReadIdx(WritePlain("four", MakeIdx(0x08, {1, 2, 3, 2}, Iota(12))));
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->dims, (std::vector<int64_t>{1, 2, 3, 2}));
  EXPECT_EQ(four->data, Iota(12));

  // Zero images of 28x28: a valid, empty array (16 header bytes, no data).
  absl::StatusOr<IdxArray> empty = ReadIdx(WriteGzip("empty.gz", MakeIdx(0x08, {0, 28, 28}, {})));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(empty->data.empty());
}

TEST_F(IdxTest, MissingFileIsNotFound) {
  const std::string path = (dir_ / "does-not-exist").string();
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kNotFound, {path, "not found"}));
}

TEST_F(IdxTest, DirectoryIsInvalidArgument) {
  absl::StatusOr<IdxArray> a = ReadIdx(dir_.string());
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument, {"not a regular file"}));
}

TEST_F(IdxTest, RejectsBadMagic) {
  std::string bytes = MakeIdx(0x08, {4}, Iota(4));
  bytes[0] = 0x12;
  bytes[1] = 0x34;
  const std::string path = WritePlain("bad-magic", bytes);
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument,
                              {path, "bad magic", "0x1234", "expected 0x0000"}));
}

TEST_F(IdxTest, ParseIdxSaysWhenGivenGzipBytes) {
  const std::string gz = ReadFile(WriteGzip("x.gz", MakeIdx(0x08, {4}, Iota(4))));
  absl::StatusOr<IdxArray> a = ParseIdx(gz, "buffer");
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument, {"0x1f8b", "gzip"}));
}

TEST_F(IdxTest, RejectsUnsupportedType) {
  // 0x0D is float32: a valid idx type this reader does not accept.
  const std::string path = WritePlain("float", MakeIdx(0x0D, {2}, Iota(8)));
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument,
                              {path, "unsupported element type 0x0d (float32)", "expected 0x08"}));
}

TEST_F(IdxTest, RejectsZeroAndFiveDims) {
  absl::StatusOr<IdxArray> zero = ReadIdx(WritePlain("zero", MakeIdx(0x08, {}, {})));
  EXPECT_TRUE(
      HasCodeAndWords(zero.status(), absl::StatusCode::kInvalidArgument, {"declares 0 dimensions, expected 1 to 4"}));

  absl::StatusOr<IdxArray> five = ReadIdx(WritePlain("five", MakeIdx(0x08, {1, 1, 1, 1, 1}, {9})));
  EXPECT_TRUE(
      HasCodeAndWords(five.status(), absl::StatusCode::kInvalidArgument, {"declares 5 dimensions, expected 1 to 4"}));
}

TEST_F(IdxTest, RejectsTruncatedDataPlainAndGzip) {
  // [10, 28, 28] promises 7840 data bytes; only 100 follow the 16-byte header.
  const std::string bytes = MakeIdx(0x08, {10, 28, 28}, Iota(100));
  for (const std::string& path : {WritePlain("short", bytes), WriteGzip("short.gz", bytes)}) {
    absl::StatusOr<IdxArray> a = ReadIdx(path);
    EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument,
                                {path, "truncated: header promises 7840 bytes", "file has 100"}))
        << path;
  }
}

TEST_F(IdxTest, RejectsTruncatedHeader) {
  // Three dims need a 16-byte header; the file stops after 6 bytes.
  const std::string bytes = MakeIdx(0x08, {10, 28, 28}, {}).substr(0, 6);
  absl::StatusOr<IdxArray> a = ReadIdx(WritePlain("short-header", bytes));
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument,
                              {"truncated header: 3 dimensions need 16 bytes", "file has 6"}));

  absl::StatusOr<IdxArray> empty = ReadIdx(WritePlain("empty-file", ""));
  EXPECT_TRUE(HasCodeAndWords(empty.status(), absl::StatusCode::kInvalidArgument, {"truncated: 0 bytes"}));
}

TEST_F(IdxTest, RejectsOversizedHeaderBeforeAllocating) {
  // 0xFFFFFFFF^3 is ~7.9e28 bytes: over the 4 GiB default limit, and over 2^64 (the product overflows). The reader
  // must say so from the header alone, not try to allocate.
  const std::string huge = MakeIdx(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, {});
  for (const std::string& path : {WritePlain("huge", huge), WriteGzip("huge.gz", huge)}) {
    absl::StatusOr<IdxArray> a = ReadIdx(path);
    EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument,
                                {"oversized header", "more than 2^64", "4294967295,4294967295,4294967295"}))
        << path;
  }
  // A single 0xFFFFFFFF dim (4 GiB - 1) fits 64 bits but not a 1 MiB limit.
  absl::StatusOr<IdxArray> b = ReadIdx(WritePlain("4g", MakeIdx(0x08, {0xFFFFFFFFu}, {})), int64_t{1} << 20);
  EXPECT_TRUE(
      HasCodeAndWords(b.status(), absl::StatusCode::kInvalidArgument,
                      {"oversized header: dims [4294967295] promise 4294967295 bytes, over the limit of 1048576"}));
  // [10, 28, 28] = 7840 bytes against a 1000-byte limit: rejected even though the file is complete.
  absl::StatusOr<IdxArray> c =
      ReadIdx(WriteGzip("7840.gz", MakeIdx(0x08, {10, 28, 28}, Iota(7840))), /*max_bytes=*/1000);
  EXPECT_TRUE(
      HasCodeAndWords(c.status(), absl::StatusCode::kInvalidArgument, {"promise 7840 bytes, over the limit of 1000"}));
}

TEST_F(IdxTest, RejectsTrailingBytesPlainAndGzip) {
  // [4] promises 4 data bytes; 7 follow.
  const std::string bytes = MakeIdx(0x08, {4}, Iota(7));
  for (const std::string& path : {WritePlain("long", bytes), WriteGzip("long.gz", bytes)}) {
    absl::StatusOr<IdxArray> a = ReadIdx(path);
    EXPECT_TRUE(
        HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument, {path, "3 trailing bytes after the 4 bytes"}))
        << path;
  }
  absl::StatusOr<IdxArray> mem = ParseIdx(bytes, "mem");
  EXPECT_TRUE(HasCodeAndWords(mem.status(), absl::StatusCode::kInvalidArgument, {"3 trailing bytes"}));
}

TEST_F(IdxTest, GzipBombStopsAtTheProbe) {
  // A 16-byte header promising 10 bytes, followed by 64 MiB of zeros (which gzip squeezes to ~64 KiB). The reader
  // inflates the promised bytes plus one 64 KiB probe, then reports "at least 65536 trailing bytes".
  std::string bytes = MakeIdx(0x08, {10}, Iota(10));
  bytes.append(size_t{64} << 20, '\0');
  const std::string path = WriteGzip("bomb.gz", bytes);
  EXPECT_LT(fs::file_size(path), size_t{1} << 20);
  absl::StatusOr<IdxArray> a = ReadIdx(path);
  EXPECT_TRUE(HasCodeAndWords(a.status(), absl::StatusCode::kInvalidArgument, {"at least 65536 trailing bytes"}));
}

TEST_F(IdxTest, RejectsCorruptAndCutGzipStreams) {
  const std::string good = ReadFile(WriteGzip("good.gz", MakeIdx(0x08, {50, 28, 28}, Iota(50 * 28 * 28))));
  // Gzip magic followed by garbage.
  absl::StatusOr<IdxArray> garbage = ReadIdx(WritePlain("garbage.gz", std::string("\x1f\x8b") + "not deflate data"));
  EXPECT_TRUE(HasCodeAndWords(garbage.status(), absl::StatusCode::kInvalidArgument, {}));
  // The same stream cut in half: zlib's "unexpected end of file", reported as truncated data.
  absl::StatusOr<IdxArray> cut = ReadIdx(WritePlain("cut.gz", good.substr(0, good.size() / 2)));
  EXPECT_TRUE(
      HasCodeAndWords(cut.status(), absl::StatusCode::kInvalidArgument, {"truncated: header promises 39200 bytes"}));
  // The stream without its 8-byte CRC/length trailer: all data inflates, but the stream is incomplete.
  absl::StatusOr<IdxArray> no_trailer = ReadIdx(WritePlain("no-trailer.gz", good.substr(0, good.size() - 8)));
  EXPECT_TRUE(HasCodeAndWords(no_trailer.status(), absl::StatusCode::kInvalidArgument, {"corrupt gzip stream"}));
  // A flipped bit in the CRC32 (the trailer's first 4 bytes).
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] ^= 0x01;
  absl::StatusOr<IdxArray> crc = ReadIdx(WritePlain("bad-crc.gz", bad_crc));
  EXPECT_TRUE(HasCodeAndWords(crc.status(), absl::StatusCode::kInvalidArgument, {"corrupt gzip stream"}));
}

TEST_F(IdxTest, EveryPrefixIsRejectedAndNothingCrashes) {
  const std::string bytes = MakeIdx(0x08, {3, 4, 5}, Iota(60));
  const std::string gz = ReadFile(WriteGzip("full.gz", bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(ParseIdx(bytes.substr(0, n), "prefix").status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_EQ(ReadIdx(WritePlain("p", bytes.substr(0, n))).status().code(), absl::StatusCode::kInvalidArgument) << n;
  }
  for (size_t n = 0; n < gz.size(); ++n) {
    EXPECT_EQ(ReadIdx(WritePlain("g", gz.substr(0, n))).status().code(), absl::StatusCode::kInvalidArgument) << n;
  }
}

TEST_F(IdxTest, RandomCorruptionNeverCrashes) {
  // Seeded: flip 1-4 random bytes of a valid plain and gzipped file, 2000 times each. Every result is either OK
  // (a data byte changed) or INVALID_ARGUMENT; and an OK result holds exactly product(dims) bytes.
  std::mt19937 rng(12345);
  const std::string bytes = MakeIdx(0x08, {2, 5, 5}, Iota(50));
  const std::string gz = ReadFile(WriteGzip("full.gz", bytes));
  for (const std::string* src : {&bytes, &gz}) {
    for (int trial = 0; trial < 2000; ++trial) {
      std::string mutated = *src;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i) mutated[rng() % mutated.size()] = static_cast<char>(rng());
      absl::StatusOr<IdxArray> a = ReadIdx(WritePlain("m", mutated), /*max_bytes=*/1 << 20);
      if (a.ok()) {
        int64_t product = 1;
        for (int64_t d : a->dims) product *= d;
        EXPECT_EQ(static_cast<int64_t>(a->data.size()), product);
      } else {
        EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
      }
    }
  }
}

}  // namespace
}  // namespace vae
