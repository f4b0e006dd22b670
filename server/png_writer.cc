#include "server/png_writer.h"

#include <libdeflate.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace vae::server {
namespace {

constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";
constexpr int kMaxLevel = 12;

struct CompressorDeleter {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};

// This thread's compressor at `level`, allocated on first use (libdeflate's compressors are not thread-safe and
// cost a few hundred KiB each to set up: keep them).
libdeflate_compressor* ThreadCompressor(int level) {
  thread_local std::array<std::unique_ptr<libdeflate_compressor, CompressorDeleter>, kMaxLevel + 1> compressors;
  auto& c = compressors[level];
  if (c == nullptr) c.reset(libdeflate_alloc_compressor(level));
  return c.get();
}

void PutBigEndian32(uint32_t v, char* out) {
  out[0] = static_cast<char>(v >> 24);
  out[1] = static_cast<char>(v >> 16);
  out[2] = static_cast<char>(v >> 8);
  out[3] = static_cast<char>(v);
}

// Writes a chunk's length and type at `out` (its data follows at out + 8), and after the data its CRC-32 of type and
// data (PNG spec 5.3). Returns the chunk's total size.
size_t FinishChunk(char* out, const char type[4], size_t data_length) {
  PutBigEndian32(static_cast<uint32_t>(data_length), out);
  std::memcpy(out + 4, type, 4);
  const uint32_t crc = libdeflate_crc32(0, out + 4, 4 + data_length);
  PutBigEndian32(crc, out + 8 + data_length);
  return 12 + data_length;
}

// PNG spec 9.4: the Paeth predictor of left a, above b, upper left c.
inline uint8_t Paeth(int a, int b, int c) {
  const int p = a + b - c;
  const int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return static_cast<uint8_t>(a);
  return static_cast<uint8_t>(pb <= pc ? b : c);
}

// Filters one row of `n` bytes with filter type `type` (1-4) into out[0..n): `row` this row, `prior` the row above
// (zeros for the first), `bpp` bytes per pixel (PNG spec 9.2).
void FilterRow(int type, const uint8_t* row, const uint8_t* prior, size_t n, size_t bpp, uint8_t* out) {
  switch (type) {
    case 0:
      std::memcpy(out, row, n);
      break;
    case 1:
      for (size_t i = 0; i < bpp; ++i) out[i] = row[i];
      for (size_t i = bpp; i < n; ++i) out[i] = static_cast<uint8_t>(row[i] - row[i - bpp]);
      break;
    case 2:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(row[i] - prior[i]);
      break;
    case 3:
      for (size_t i = 0; i < bpp; ++i) out[i] = static_cast<uint8_t>(row[i] - (prior[i] >> 1));
      for (size_t i = bpp; i < n; ++i) out[i] = static_cast<uint8_t>(row[i] - ((row[i - bpp] + prior[i]) >> 1));
      break;
    case 4:
      for (size_t i = 0; i < bpp; ++i) out[i] = static_cast<uint8_t>(row[i] - Paeth(0, prior[i], 0));
      for (size_t i = bpp; i < n; ++i) {
        out[i] = static_cast<uint8_t>(row[i] - Paeth(row[i - bpp], prior[i], prior[i - bpp]));
      }
      break;
  }
}

// Sum of the filtered bytes as signed values' magnitudes: libpng's "minimum sum of absolute differences".
size_t SumOfMagnitudes(const uint8_t* v, size_t n) {
  size_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<size_t>(std::abs(static_cast<int8_t>(v[i])));
  return sum;
}

}  // namespace

absl::StatusOr<std::string> WritePng(const uint8_t* pixels, int64_t width, int64_t height, int channels,
                                     const PngOptions& options) {
  // IHDR holds width and height as 31-bit integers; keep the filtered image's size well inside memory's reach too.
  constexpr int64_t kMaxSide = (int64_t{1} << 31) - 1;
  if (width <= 0 || height <= 0 || width > kMaxSide || height > kMaxSide || channels < 1 || channels > 4 ||
      width * channels > (int64_t{1} << 30) / height) {
    return absl::InvalidArgumentError(absl::StrCat("png: cannot write a ", width, "x", height, " (WxH) image with ",
                                                   channels, " channels; expected sides >= 1, 1-4 channels, < 1 GiB"));
  }
  if (options.level < 0 || options.level > kMaxLevel) {
    return absl::InvalidArgumentError(absl::StrCat("png: compression level ", options.level, ", expected 0..12"));
  }
  libdeflate_compressor* compressor = ThreadCompressor(options.level);
  if (compressor == nullptr) return absl::InternalError("png: libdeflate could not allocate a compressor");

  // The filtered image: each row is its filter type byte, then the filtered bytes (PNG spec 7.3).
  const size_t row_bytes = static_cast<size_t>(width) * channels;
  const size_t bpp = static_cast<size_t>(channels);
  thread_local std::vector<uint8_t> filtered, zeros, trial;
  filtered.resize((row_bytes + 1) * height);
  zeros.assign(row_bytes, 0);
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = pixels + y * row_bytes;
    const uint8_t* prior = y == 0 ? zeros.data() : row - row_bytes;
    uint8_t* out = filtered.data() + y * (row_bytes + 1);
    int type = 0;
    switch (options.filter) {
      case PngFilter::kNone:
        type = 0;
        break;
      case PngFilter::kSub:
        type = 1;
        break;
      case PngFilter::kUp:
        type = 2;
        break;
      case PngFilter::kAverage:
        type = 3;
        break;
      case PngFilter::kPaeth:
        type = 4;
        break;
      case PngFilter::kAdaptive: {
        trial.resize(row_bytes);
        size_t best = SIZE_MAX;
        for (int t = 0; t <= 4; ++t) {
          FilterRow(t, row, prior, row_bytes, bpp, trial.data());
          const size_t sum = SumOfMagnitudes(trial.data(), row_bytes);
          if (sum < best) best = sum, type = t;
        }
        break;
      }
    }
    out[0] = static_cast<uint8_t>(type);
    FilterRow(type, row, prior, row_bytes, bpp, out + 1);
  }

  // signature (8) | IHDR chunk (12 + 13) | IDAT chunk (12 + zlib stream) | IEND chunk (12)
  const size_t bound = libdeflate_zlib_compress_bound(compressor, filtered.size());
  constexpr size_t kIdatAt = 8 + 25;
  std::string png(kIdatAt + 12 + bound + 12, '\0');
  char* p = png.data();
  std::memcpy(p, kSignature, 8);
  PutBigEndian32(static_cast<uint32_t>(width), p + 16);
  PutBigEndian32(static_cast<uint32_t>(height), p + 20);
  constexpr uint8_t kColorType[] = {0, 0, 4, 2, 6};  // by channels: gray, gray + alpha, RGB, RGBA
  p[24] = 8;                                         // bit depth
  p[25] = static_cast<char>(kColorType[channels]);
  p[26] = p[27] = p[28] = 0;  // compression method 0 (deflate), filter method 0, no interlace
  FinishChunk(p + 8, "IHDR", 13);
  const size_t compressed =
      libdeflate_zlib_compress(compressor, filtered.data(), filtered.size(), p + kIdatAt + 8, bound);
  if (compressed == 0) return absl::InternalError("png: libdeflate could not compress the image");
  const size_t idat = FinishChunk(p + kIdatAt, "IDAT", compressed);
  const size_t end = kIdatAt + idat;
  FinishChunk(p + end, "IEND", 0);
  png.resize(end + 12);
  return png;
}

}  // namespace vae::server
