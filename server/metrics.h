// A small Prometheus registry: counters, gauges and histograms with label sets, written out in the text exposition
// format 0.0.4 (HELP and TYPE lines, escaped label values, cumulative `le` buckets with _sum and _count).
//
// Hot path: a series (Counter, Gauge, Histogram) is found once by its label values (Family::WithLabels: a map lookup
// under the family's mutex) and the pointer kept; updating it is lock-free (relaxed atomics: a histogram observation
// is two atomic adds). Values that live elsewhere (queue depths, the training job, /proc) are copied into gauges by
// collectors that Exposition() runs first, so they cost nothing between scrapes.
//
// Thread-safety: everything may be called from any thread. A series lives as long as its registry (WithLabels hands
// out stable pointers) unless its family is Clear()ed, which only collectors do, for their own families, under the
// scrape lock. Names and label names are the caller's to get right (Prometheus' [a-zA-Z_:][a-zA-Z0-9_:]*).
#ifndef VAE_SERVER_METRICS_H_
#define VAE_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace vae::server::metrics {

// A value that only goes up (Set is for mirroring a count kept elsewhere, which must itself only go up).
class Counter {
 public:
  void Increment(double by = 1);
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double by = 1);
  void Decrement(double by = 1) { Increment(-by); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted in buckets with upper bounds `bounds` (ascending; +Inf is implicit).
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double value);
  // Replaces the counts with ones kept elsewhere: `counts[i]` observations in bucket i (not cumulative; one more
  // entry than bounds, the last for +Inf) and their `sum`.
  void Mirror(const std::vector<int64_t>& counts, double sum);

  struct Data {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
  };
  Data Read() const;

 private:
  const std::vector<double>* const bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<double> sum_{0};
};

enum class Type { kCounter, kGauge, kHistogram };

// Every series of one metric name: one per combination of label values.
template <typename Series>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names, std::vector<double> bounds = {})
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}

  // The series with these label values (as many as label names), created at zero on first use.
  Series& WithLabels(const std::vector<std::string>& values) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every series (a collector about to set the current ones).
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<double>& bounds() const { return bounds_; }
  // Calls `fn(label values, series)` for each series, in label order.
  void ForEach(const std::function<void(const std::vector<std::string>&, const Series&)>& fn) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  // Families are written out in the order they were added. Add them at start-up; the references stay valid.
  Family<Counter>& AddCounter(std::string name, std::string help, std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                  std::vector<double> bounds);
  // Runs before every Exposition(), under the scrape lock: copies values kept elsewhere into gauges/counters.
  void AddCollector(std::function<void()> collect);

  // Every family in the text exposition format 0.0.4 (a family without series writes its HELP and TYPE only).
  std::string Exposition() const;

 private:
  struct Entry {
    Type type;
    std::unique_ptr<Family<Counter>> counter;
    std::unique_ptr<Family<Gauge>> gauge;
    std::unique_ptr<Family<Histogram>> histogram;
  };
  mutable absl::Mutex mu_;  // the families and collectors lists; held for a whole scrape
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// Bucket bounds start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Text-format escaping: label values (\\, \", \n) and HELP text (\\, \n).
std::string EscapeLabelValue(const std::string& value);
std::string EscapeHelp(const std::string& help);
// A sample value as Prometheus writes it: integers without a decimal point, +Inf, -Inf, NaN.
std::string FormatValue(double value);

}  // namespace vae::server::metrics

#endif  // VAE_SERVER_METRICS_H_
