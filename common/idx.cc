#include "common/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vae {
namespace {

namespace fs = std::filesystem;

constexpr uint8_t kTypeUint8 = 0x08;
constexpr int kMaxDims = 4;
constexpr size_t kMagicBytes = 4;  // 0x00 0x00 type ndims
constexpr size_t kMaxHeaderBytes = kMagicBytes + 4 * kMaxDims;

// What a valid header says about the rest of the file.
struct IdxHeader {
  std::vector<int64_t> dims;
  size_t header_bytes = 0;     // 4 + 4 * ndims
  uint64_t payload_bytes = 0;  // product(dims): one byte per element
};

const char* TypeName(uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "unknown";
  }
}

std::string Hex2(uint8_t b) { return absl::StrCat(absl::Hex(b, absl::kZeroPad2)); }

uint32_t ReadBigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Parses the header at the start of `p` (`n` bytes available, possibly more than the header). Validates everything
// the header alone can tell, including that product(dims) fits in `max_bytes`.
absl::StatusOr<IdxHeader> ParseHeader(const uint8_t* p, size_t n, const std::string& what, int64_t max_bytes) {
  if (n < kMagicBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("idx ", what, ": truncated: ", n, " bytes, an idx header needs at least ", kMagicBytes));
  }
  if (p[0] != 0 || p[1] != 0) {
    std::string hint;
    if (p[0] == 0x1f && p[1] == 0x8b) hint = " (gzip data; ReadIdx decompresses it, ParseIdx does not)";
    return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": bad magic: first two bytes are 0x", Hex2(p[0]),
                                                   Hex2(p[1]), ", expected 0x0000", hint));
  }
  if (p[2] != kTypeUint8) {
    return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": unsupported element type 0x", Hex2(p[2]), " (",
                                                   TypeName(p[2]), "), expected 0x08 (unsigned byte)"));
  }
  const int ndims = p[3];
  if (ndims < 1 || ndims > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat("idx ", what, ": header declares ", ndims, " dimensions, expected 1 to ", kMaxDims));
  }
  IdxHeader header;
  header.header_bytes = kMagicBytes + 4 * static_cast<size_t>(ndims);
  if (n < header.header_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": truncated header: ", ndims, " dimensions need ",
                                                   header.header_bytes, " bytes, file has ", n));
  }
  const uint64_t limit = static_cast<uint64_t>(std::max<int64_t>(max_bytes, 0));
  uint64_t product = 1;
  bool overflow = false;
  for (int i = 0; i < ndims; ++i) {
    const uint32_t d = ReadBigEndian32(p + kMagicBytes + 4 * i);
    header.dims.push_back(static_cast<int64_t>(d));
    overflow = overflow || __builtin_mul_overflow(product, uint64_t{d}, &product);
  }
  if (overflow || product > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "idx ", what, ": oversized header: dims [", absl::StrJoin(header.dims, ","), "] promise ",
        overflow ? std::string("more than 2^64") : absl::StrCat(product), " bytes, over the limit of ", limit));
  }
  header.payload_bytes = product;
  return header;
}

absl::Status Truncated(const std::string& what, const IdxHeader& h, uint64_t have) {
  return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": truncated: header promises ", h.payload_bytes,
                                                 " bytes of data after its ", h.header_bytes, "-byte header, file has ",
                                                 have));
}

absl::Status Trailing(const std::string& what, const IdxHeader& h, uint64_t extra, bool at_least) {
  return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": ", at_least ? "at least " : "", extra,
                                                 " trailing bytes after the ", h.payload_bytes,
                                                 " bytes of data the header promises"));
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
// Reads up to `n` bytes; returns how many were read (fewer only at end of file or on error).
size_t ReadFully(std::FILE* f, uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    const size_t r = std::fread(out + got, 1, n - got, f);
    if (r == 0) break;
    got += r;
  }
  return got;
}

// Streams a gzip file through zlib's inflate. gzread() is not used because it cannot tell a stream that ends
// cleanly from one cut off right after its last deflate block (the CRC trailer missing): both just return 0.
// Concatenated gzip members (RFC 1952 allows them) are read as one stream, as gunzip does.
class GzipReader {
 public:
  GzipReader(std::FILE* f, std::string what) : f_(f), what_(std::move(what)), in_(kInputChunk) {}
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;
  ~GzipReader() {
    if (initialized_) inflateEnd(&strm_);
  }

  absl::Status Init() {
    // 16 + MAX_WBITS: expect a gzip wrapper (header, CRC-32 and length trailer).
    if (inflateInit2(&strm_, 16 + MAX_WBITS) != Z_OK) {
      return absl::InternalError(absl::StrCat("idx ", what_, ": inflateInit2 failed"));
    }
    initialized_ = true;
    return absl::OkStatus();
  }

  // Inflates up to `n` bytes into `out` and sets `*got` to how many it produced: fewer than `n` only when the
  // input ended (check complete()). INVALID_ARGUMENT on corrupt data, including a CRC or length mismatch.
  absl::Status Read(uint8_t* out, uint64_t n, uint64_t* got) {
    *got = 0;
    while (*got < n && !input_ended_) {
      if (strm_.avail_in == 0) {
        const size_t r = std::fread(in_.data(), 1, in_.size(), f_);
        if (r == 0) {
          if (std::ferror(f_)) {
            return absl::InvalidArgumentError(absl::StrCat("idx ", what_, ": read error: ", std::strerror(errno)));
          }
          input_ended_ = true;
          break;
        }
        strm_.next_in = in_.data();
        strm_.avail_in = static_cast<uInt>(r);
      }
      // avail_out is a uInt: at most 1 GiB per call.
      const uint64_t want = std::min<uint64_t>(n - *got, uint64_t{1} << 30);
      strm_.next_out = out + *got;
      strm_.avail_out = static_cast<uInt>(want);
      const int ret = inflate(&strm_, Z_NO_FLUSH);
      *got += want - strm_.avail_out;
      if (ret == Z_STREAM_END) {
        // The member's CRC and length matched. More input means another member.
        complete_ = true;
        if (strm_.avail_in > 0 || !AtEof()) {
          if (inflateReset(&strm_) != Z_OK) {
            return absl::InternalError(absl::StrCat("idx ", what_, ": inflateReset failed"));
          }
          complete_ = false;
        }
      } else if (ret == Z_OK || (ret == Z_BUF_ERROR && strm_.avail_in == 0)) {
        complete_ = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("idx ", what_, ": corrupt gzip stream: ", strm_.msg != nullptr ? strm_.msg : zError(ret)));
      }
      if (complete_) input_ended_ = true;
    }
    return absl::OkStatus();
  }

  // True once the input has ended exactly at the end of a gzip member (trailer verified).
  bool complete() const { return complete_; }

 private:
  static constexpr size_t kInputChunk = size_t{1} << 18;

  bool AtEof() {
    const int c = std::fgetc(f_);
    if (c == EOF) return true;
    std::ungetc(c, f_);
    return false;
  }

  std::FILE* f_;  // not owned
  std::string what_;
  std::vector<uint8_t> in_;
  z_stream strm_{};
  bool initialized_ = false;
  bool input_ended_ = false;
  bool complete_ = false;
};

absl::StatusOr<IdxArray> ReadPlain(std::FILE* f, uint64_t file_size, const std::string& what, int64_t max_bytes) {
  uint8_t head[kMaxHeaderBytes];
  const size_t head_n = ReadFully(f, head, std::min<uint64_t>(file_size, kMaxHeaderBytes));
  absl::StatusOr<IdxHeader> header = ParseHeader(head, head_n, what, max_bytes);
  if (!header.ok()) return header.status();
  const uint64_t have = file_size - header->header_bytes;
  if (have < header->payload_bytes) return Truncated(what, *header, have);
  if (have > header->payload_bytes) return Trailing(what, *header, have - header->payload_bytes, false);

  IdxArray out;
  out.dims = header->dims;
  out.data.resize(header->payload_bytes);
  // The header bytes beyond `header_bytes` that we read ahead are the first payload bytes.
  const size_t ahead = std::min<size_t>(head_n - header->header_bytes, out.data.size());
  // A zero dimension leaves `data` empty and data() null: memcpy(nullptr, ..., 0) is undefined (fuzz_idx found it).
  if (ahead > 0) std::memcpy(out.data.data(), head + header->header_bytes, ahead);
  const size_t rest = ReadFully(f, out.data.data() + ahead, out.data.size() - ahead);
  if (ahead + rest != out.data.size()) {
    // The size checked out, so a short read means the file changed under us or an I/O error.
    return absl::InvalidArgumentError(absl::StrCat("idx ", what, ": read ", ahead + rest, " of ", out.data.size(),
                                                   " data bytes: ", std::strerror(errno)));
  }
  return out;
}

absl::StatusOr<IdxArray> ReadGzip(std::FILE* f, const std::string& what, int64_t max_bytes) {
  GzipReader gz(f, what);
  absl::Status init = gz.Init();
  if (!init.ok()) return init;
  // Header: magic first (it says how many dims follow), then the dims. Nothing is inflated beyond what the header
  // promises plus one 64 KiB probe, so a gzip bomb costs at most max_bytes.
  uint8_t head[kMaxHeaderBytes];
  uint64_t head_n = 0;
  absl::Status st = gz.Read(head, kMagicBytes, &head_n);
  if (!st.ok()) return st;
  if (head_n == kMagicBytes && head[0] == 0 && head[1] == 0 && head[3] >= 1 && head[3] <= kMaxDims) {
    uint64_t dims_n = 0;
    st = gz.Read(head + kMagicBytes, 4 * uint64_t{head[3]}, &dims_n);
    if (!st.ok()) return st;
    head_n += dims_n;
  }
  absl::StatusOr<IdxHeader> header = ParseHeader(head, head_n, what, max_bytes);
  if (!header.ok()) return header.status();

  IdxArray out;
  out.dims = header->dims;
  out.data.resize(header->payload_bytes);
  uint64_t got = 0;
  st = gz.Read(out.data.data(), out.data.size(), &got);
  if (!st.ok()) return st;
  if (got < header->payload_bytes) return Truncated(what, *header, got);

  // Probe past the promised end: more data is an error, and reading to the end verifies the CRC trailer.
  constexpr uint64_t kProbe = uint64_t{1} << 16;
  std::vector<uint8_t> probe(kProbe);
  st = gz.Read(probe.data(), kProbe, &got);
  if (!st.ok()) return st;
  if (got > 0) return Trailing(what, *header, got, got == kProbe);
  if (!gz.complete()) {
    return absl::InvalidArgumentError(
        absl::StrCat("idx ", what, ": corrupt gzip stream: it ends before its CRC trailer (file cut off?)"));
  }
  return out;
}

}  // namespace

absl::StatusOr<IdxArray> ParseIdx(const std::string& bytes, const std::string& what, int64_t max_bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  absl::StatusOr<IdxHeader> header = ParseHeader(p, bytes.size(), what, max_bytes);
  if (!header.ok()) return header.status();
  const uint64_t have = bytes.size() - header->header_bytes;
  if (have < header->payload_bytes) return Truncated(what, *header, have);
  if (have > header->payload_bytes) return Trailing(what, *header, have - header->payload_bytes, false);
  IdxArray out;
  out.dims = header->dims;
  out.data.assign(p + header->header_bytes, p + bytes.size());
  return out;
}

absl::StatusOr<IdxArray> ReadIdx(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return absl::InvalidArgumentError(absl::StrCat("idx ", path, ": cannot stat: ", ec.message()));
    }
    return absl::NotFoundError(absl::StrCat("idx ", path, ": file not found"));
  }
  if (!fs::is_regular_file(st)) {
    return absl::InvalidArgumentError(absl::StrCat("idx ", path, ": not a regular file"));
  }
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("idx ", path, ": cannot read size: ", ec.message()));

  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("idx ", path, ": cannot open: ", std::strerror(errno)));
  }
  uint8_t magic[2] = {0, 0};
  const size_t magic_n = ReadFully(f.get(), magic, 2);
  // gzip is recognised by its magic bytes 0x1f 0x8b, never by the file name.
  std::rewind(f.get());
  if (magic_n == 2 && magic[0] == 0x1f && magic[1] == 0x8b) return ReadGzip(f.get(), path, max_bytes);
  return ReadPlain(f.get(), file_size, path, max_bytes);
}

}  // namespace vae
