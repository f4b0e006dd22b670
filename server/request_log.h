// RequestLog: vae-server's structured log lines -- one per call, one per training epoch -- written to stderr with one
// write(2) each, so that lines of concurrent calls never interleave. --log_format=text writes
// `2026-12-01T07:00:00.123456Z request method=Encode status=OK ...` (key=value, values with spaces or quotes quoted);
// --log_format=json one JSON object per line with the same keys ({"time": ..., "event": "request", ...}). glog's own
// lines (start-up, warnings) stay in glog's text format beside them.
//
// Thread-safety: immutable after construction; Write from any thread.
#ifndef VAE_SERVER_REQUEST_LOG_H_
#define VAE_SERVER_REQUEST_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vae::server {

class RequestLog {
 public:
  enum class Format { kText, kJson };
  // "text" or "json"; INVALID_ARGUMENT naming --log_format otherwise.
  static absl::StatusOr<Format> ParseFormat(absl::string_view name);

  // One key and its value: a string, an integer or a number (NaN and infinities are written as null in JSON).
  struct Field {
    enum class Kind { kString, kInt, kDouble };
    Field(absl::string_view k, absl::string_view v) : key(k), kind(Kind::kString), str(v) {}
    Field(absl::string_view k, const std::string& v) : key(k), kind(Kind::kString), str(v) {}
    Field(absl::string_view k, const char* v) : key(k), kind(Kind::kString), str(v) {}
    Field(absl::string_view k, int64_t v) : key(k), kind(Kind::kInt), i(v) {}
    Field(absl::string_view k, int v) : key(k), kind(Kind::kInt), i(v) {}
    Field(absl::string_view k, double v) : key(k), kind(Kind::kDouble), d(v) {}
    absl::string_view key;
    Kind kind;
    absl::string_view str;
    int64_t i = 0;
    double d = 0;
  };

  // `fd`: where lines go (2: stderr).
  explicit RequestLog(Format format, int fd = 2) : format_(format), fd_(fd) {}

  // Writes one line: the time, the event name ("request", "train_epoch"), then `fields` in order.
  void Write(absl::Time time, absl::string_view event, std::initializer_list<Field> fields) const;
  // The line Write would write (with its newline).
  std::string Line(absl::Time time, absl::string_view event, std::initializer_list<Field> fields) const;

  // A new request id: 16 hex digits, random per process and thread.
  static std::string NewRequestId();

 private:
  const Format format_;
  const int fd_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_REQUEST_LOG_H_
