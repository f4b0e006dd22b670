// ZeroPng: a valid 8-bit grayscale PNG of width x height black pixels, written row by row with zlib so that the image
// is never held in memory. Zeros deflate about 1000:1, so ZeroPng(20000, 20000) -- 400 MB of pixels -- is a ~390 KB
// file: the decompression bomb of the server's image-size limit tests. Torch- and OpenCV-free.
#ifndef VAE_TESTS_SERVER_ZERO_PNG_H_
#define VAE_TESTS_SERVER_ZERO_PNG_H_

#include <zlib.h>

#include <cstdint>
#include <string>

namespace vae::testing {

inline std::string BigEndian32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                     static_cast<char>(v)};
}

inline std::string ZeroPng(uint32_t width, uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  // A chunk: length, type, data, CRC-32 of type and data (PNG spec 5.3).
  auto chunk = [&png](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    png += BigEndian32(static_cast<uint32_t>(data.size())) + body;
    png += BigEndian32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())));
  };
  // Bit depth 8, colour type 0 (grayscale), deflate, adaptive filtering, no interlace.
  chunk("IHDR", BigEndian32(width) + BigEndian32(height) + std::string("\x08\x00\x00\x00\x00", 5));
  z_stream z{};
  deflateInit(&z, Z_BEST_COMPRESSION);
  const std::string row(width + 1, '\0');  // filter type 0, then the pixels
  std::string idat;
  char out[1 << 16];
  for (uint32_t r = 0; r < height; ++r) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(row.data()));
    z.avail_in = static_cast<uInt>(row.size());
    const int flush = r + 1 == height ? Z_FINISH : Z_NO_FLUSH;
    do {
      z.next_out = reinterpret_cast<Bytef*>(out);
      z.avail_out = sizeof(out);
      deflate(&z, flush);
      idat.append(out, sizeof(out) - z.avail_out);
    } while (z.avail_out == 0);
  }
  deflateEnd(&z);
  chunk("IDAT", idat);
  chunk("IEND", "");
  return png;
}

}  // namespace vae::testing

#endif  // VAE_TESTS_SERVER_ZERO_PNG_H_
