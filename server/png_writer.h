// PNG files written directly from 8-bit pixels: the signature, IHDR, one IDAT holding a zlib stream of the filtered
// rows compressed by libdeflate, and IEND (PNG spec, ISO/IEC 15948:2004, sections 5, 9-11). Lossless, 8 bits per
// channel, no interlace, no ancillary chunks: what every PNG decoder reads.
//
// Why not OpenCV's cv::imencode (libpng + zlib): for the small images a VAE answers with, it spent most of its time
// setting up (libpng's structs, zlib's deflateInit zeroing ~256 KiB of windows per image) rather than compressing.
// Here each thread keeps one libdeflate compressor per level, and a 28x28 image costs a few microseconds
// (BENCHMARKS.md, "PNG output"). Torch-free and gRPC-free; thread-safe (all state is thread-local).
#ifndef VAE_SERVER_PNG_WRITER_H_
#define VAE_SERVER_PNG_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace vae::server {

// The filter applied to every row before compression (PNG spec 9.2). kAdaptive picks, per row, the filter whose output
// has the smallest sum of absolute (signed) values, libpng's heuristic.
enum class PngFilter { kNone, kSub, kUp, kAverage, kPaeth, kAdaptive };

struct PngOptions {
  int level = 0;  // libdeflate compression level: 0 (stored) to 12 (smallest, slowest)
  PngFilter filter = PngFilter::kNone;
};

// The defaults of the service's PNG answers, chosen by `vae-bench png` (BENCHMARKS.md, "PNG output"): for 28x28
// samples, deflate at any level costs 7+ us per image, almost all of it setting up the compressor's tables, where
// stored (level 0) rows cost 0.2 us; a stored file is ~1.9x the bytes of OpenCV's default (880 vs 464), still 3.6x
// smaller than the same image as a float32 tensor answer. Level 1 unfiltered is the choice where bytes matter more
// (387 bytes, 3.4x cheaper than OpenCV's default in the encoder alone, 2.8x on the whole path).
inline constexpr PngOptions kServingPngOptions{};

// A PNG of `pixels`: `height` rows of `width` x `channels` bytes each (interleaved; 1 gray, 2 gray + alpha, 3 RGB,
// 4 RGBA), row after row with no padding. INVALID_ARGUMENT for a size or channel count PNG cannot hold or an options
// level outside 0..12; INTERNAL when the compressor cannot be allocated.
absl::StatusOr<std::string> WritePng(const uint8_t* pixels, int64_t width, int64_t height, int channels,
                                     const PngOptions& options = kServingPngOptions);

}  // namespace vae::server

#endif  // VAE_SERVER_PNG_WRITER_H_
