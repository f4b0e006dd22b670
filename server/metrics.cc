#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace vae::server::metrics {
namespace {

// C++17 has no fetch_add for atomic<double>.
void AtomicAdd(std::atomic<double>* target, double by) {
  double old = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(old, old + by, std::memory_order_relaxed)) {
  }
}

// {a="x",b="y"} from names and values, with `extra` (e.g. le="0.5") last; "" when there are no labels at all.
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra = "") {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, names.empty() ? "" : ",", extra);
  out += '}';
  return out;
}

template <typename Series>
void WriteHeader(const Family<Series>& family, const char* type, std::string* out) {
  absl::StrAppend(out, "# HELP ", family.name(), " ", EscapeHelp(family.help()), "\n# TYPE ", family.name(), " ", type,
                  "\n");
}

template <typename Series>
void WriteScalar(const Family<Series>& family, const char* type, std::string* out) {
  WriteHeader(family, type, out);
  family.ForEach([&](const std::vector<std::string>& values, const Series& series) {
    absl::StrAppend(out, family.name(), LabelSet(family.label_names(), values), " ", FormatValue(series.value()), "\n");
  });
}

void WriteHistogram(const Family<Histogram>& family, const std::vector<double>& bounds, std::string* out) {
  WriteHeader(family, "histogram", out);
  family.ForEach([&](const std::vector<std::string>& values, const Histogram& series) {
    const Histogram::Data data = series.Read();
    for (size_t i = 0; i <= bounds.size(); ++i) {
      const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
      absl::StrAppend(out, family.name(), "_bucket",
                      LabelSet(family.label_names(), values, absl::StrCat("le=\"", le, "\"")), " ", data.cumulative[i],
                      "\n");
    }
    const std::string labels = LabelSet(family.label_names(), values);
    absl::StrAppend(out, family.name(), "_sum", labels, " ", FormatValue(data.sum), "\n");
    absl::StrAppend(out, family.name(), "_count", labels, " ", data.cumulative.back(), "\n");
  });
}

}  // namespace

void Counter::Increment(double by) { AtomicAdd(&value_, by); }
void Gauge::Increment(double by) { AtomicAdd(&value_, by); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // The first bucket whose upper bound is >= value (Prometheus buckets are "less than or equal").
  const size_t i = std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, value);
}

void Histogram::Mirror(const std::vector<int64_t>& counts, double sum) {
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    counts_[i].store(i < counts.size() ? static_cast<uint64_t>(counts[i]) : 0, std::memory_order_relaxed);
  }
  sum_.store(sum, std::memory_order_relaxed);
}

Histogram::Data Histogram::Read() const {
  Data data;
  data.cumulative.resize(bounds_->size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    data.cumulative[i] = total;
  }
  data.sum = sum_.load(std::memory_order_relaxed);
  return data;
}

template <typename Series>
Series& Family<Series>::WithLabels(const std::vector<std::string>& values) {
  absl::MutexLock lock(&mu_);
  auto it = series_.find(values);
  if (it == series_.end()) {
    std::unique_ptr<Series> series;
    if constexpr (std::is_same_v<Series, Histogram>) {
      series = std::make_unique<Histogram>(&bounds_);
    } else {
      series = std::make_unique<Series>();
    }
    it = series_.emplace(values, std::move(series)).first;
  }
  return *it->second;
}

template <typename Series>
void Family<Series>::Clear() {
  absl::MutexLock lock(&mu_);
  series_.clear();
}

template <typename Series>
void Family<Series>::ForEach(const std::function<void(const std::vector<std::string>&, const Series&)>& fn) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, series] : series_) fn(values, *series);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Family<Counter>& Registry::AddCounter(std::string name, std::string help, std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  Entry entry{Type::kCounter, nullptr, nullptr, nullptr};
  entry.counter = std::make_unique<Family<Counter>>(std::move(name), std::move(help), std::move(label_names));
  entries_.push_back(std::move(entry));
  return *entries_.back().counter;
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help, std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  Entry entry{Type::kGauge, nullptr, nullptr, nullptr};
  entry.gauge = std::make_unique<Family<Gauge>>(std::move(name), std::move(help), std::move(label_names));
  entries_.push_back(std::move(entry));
  return *entries_.back().gauge;
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                          std::vector<double> bounds) {
  std::sort(bounds.begin(), bounds.end());
  absl::MutexLock lock(&mu_);
  Entry entry{Type::kHistogram, nullptr, nullptr, nullptr};
  entry.histogram =
      std::make_unique<Family<Histogram>>(std::move(name), std::move(help), std::move(label_names), std::move(bounds));
  entries_.push_back(std::move(entry));
  return *entries_.back().histogram;
}

void Registry::AddCollector(std::function<void()> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::Exposition() const {
  absl::MutexLock lock(&mu_);
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const Entry& entry : entries_) {
    switch (entry.type) {
      case Type::kCounter:
        WriteScalar(*entry.counter, "counter", &out);
        break;
      case Type::kGauge:
        WriteScalar(*entry.gauge, "gauge", &out);
        break;
      case Type::kHistogram:
        WriteHistogram(*entry.histogram, entry.histogram->bounds(), &out);
        break;
    }
  }
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  for (double b = start; static_cast<int>(bounds.size()) < count; b *= factor) bounds.push_back(b);
  return bounds;
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return absl::StrCat(static_cast<int64_t>(value));
  // The shortest of 15 or 17 significant digits that reads back as the same double ("0.1", not "0.10000000000000001").
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.15g", value);
  if (std::strtod(buf, nullptr) != value) std::snprintf(buf, sizeof(buf), "%.17g", value);
  return buf;
}

}  // namespace vae::server::metrics
