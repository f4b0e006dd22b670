#include "server/request_log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/metrics.h"

namespace vae::server {
namespace {

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (const char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// A text value: bare when it is a plain token, else quoted like a JSON string.
void AppendTextString(absl::string_view s, std::string* out) {
  bool plain = !s.empty();
  for (const char c : s) {
    if (c == ' ' || c == '"' || c == '\\' || c == '=' || static_cast<unsigned char>(c) < 0x20) plain = false;
  }
  if (plain) {
    out->append(s.data(), s.size());
  } else {
    AppendJsonString(s, out);
  }
}

}  // namespace

absl::StatusOr<RequestLog::Format> RequestLog::ParseFormat(absl::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(absl::StrCat("log_format is \"", name, "\", expected text or json"));
}

std::string RequestLog::Line(absl::Time time, absl::string_view event, std::initializer_list<Field> fields) const {
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone());
  std::string line;
  line.reserve(256);
  const bool json = format_ == Format::kJson;
  if (json) {
    line.append("{\"time\":\"").append(when).append("\",\"event\":");
    AppendJsonString(event, &line);
  } else {
    line.append(when).append(" ").append(event.data(), event.size());
  }
  for (const Field& f : fields) {
    if (json) {
      line.push_back(',');
      AppendJsonString(f.key, &line);
      line.push_back(':');
    } else {
      absl::StrAppend(&line, " ", f.key, "=");
    }
    switch (f.kind) {
      case Field::Kind::kString:
        json ? AppendJsonString(f.str, &line) : AppendTextString(f.str, &line);
        break;
      case Field::Kind::kInt:
        absl::StrAppend(&line, f.i);
        break;
      case Field::Kind::kDouble:
        line.append(std::isfinite(f.d) ? metrics::FormatValue(f.d) : (json ? "null" : metrics::FormatValue(f.d)));
        break;
    }
  }
  line.append(json ? "}\n" : "\n");
  return line;
}

void RequestLog::Write(absl::Time time, absl::string_view event, std::initializer_list<Field> fields) const {
  const std::string line = Line(time, event, fields);
  // One write: lines of concurrent calls do not interleave (a pipe or file takes it whole up to PIPE_BUF and beyond
  // for regular files opened O_APPEND). A failed log write is not the caller's problem.
  [[maybe_unused]] const ssize_t written = ::write(fd_, line.data(), line.size());
}

std::string RequestLog::NewRequestId() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%016x", rng());
}

}  // namespace vae::server
