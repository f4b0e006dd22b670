// metrics::Registry and RequestLog: the exposition text and the log lines, exactly.
#include "server/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "server/request_log.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterAndGaugeWriteHelpTypeAndEscapedLabels) {
  metrics::Registry registry;
  auto& requests = registry.AddCounter("vae_requests_total", "Calls\nby \"code\" \\ method", {"method", "code"});
  requests.WithLabels({"Encode", "OK"}).Increment();
  requests.WithLabels({"Encode", "OK"}).Increment(2);
  requests.WithLabels({"a\"b\\c\nd", "X"}).Increment();
  registry.AddGauge("vae_depth", "Depth").WithLabels({}).Set(-2.5);
  EXPECT_EQ(registry.Exposition(),
            "# HELP vae_requests_total Calls\\nby \"code\" \\\\ method\n"
            "# TYPE vae_requests_total counter\n"
            "vae_requests_total{method=\"Encode\",code=\"OK\"} 3\n"
            "vae_requests_total{method=\"a\\\"b\\\\c\\nd\",code=\"X\"} 1\n"
            "# HELP vae_depth Depth\n"
            "# TYPE vae_depth gauge\n"
            "vae_depth -2.5\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  metrics::Registry registry;
  auto& h = registry.AddHistogram("vae_latency_seconds", "Latency", {"method"}, {0.1, 0.5, 1});
  auto& series = h.WithLabels({"Encode"});
  for (double v : {0.05, 0.1, 0.3, 2.0}) series.Observe(v);  // 0.1 falls in le="0.1" (upper bounds are inclusive)
  EXPECT_EQ(registry.Exposition(),
            "# HELP vae_latency_seconds Latency\n"
            "# TYPE vae_latency_seconds histogram\n"
            "vae_latency_seconds_bucket{method=\"Encode\",le=\"0.1\"} 2\n"
            "vae_latency_seconds_bucket{method=\"Encode\",le=\"0.5\"} 3\n"
            "vae_latency_seconds_bucket{method=\"Encode\",le=\"1\"} 3\n"
            "vae_latency_seconds_bucket{method=\"Encode\",le=\"+Inf\"} 4\n"
            "vae_latency_seconds_sum{method=\"Encode\"} 2.45\n"
            "vae_latency_seconds_count{method=\"Encode\"} 4\n");
}

TEST(MetricsTest, MirroredHistogramAndCollectorsRunAtScrape) {
  metrics::Registry registry;
  auto& h = registry.AddHistogram("vae_batch_size", "Rows", {}, {1, 2});
  auto& g = registry.AddGauge("vae_queue", "Queue").WithLabels({});
  int scrapes = 0;
  registry.AddCollector([&] {
    ++scrapes;
    g.Set(scrapes);
    h.WithLabels({}).Mirror({3, 0, 1}, 7);  // 3 batches of 1 row, 1 of 4 rows
  });
  const std::string text = registry.Exposition();
  EXPECT_THAT(text, HasSubstr("vae_batch_size_bucket{le=\"1\"} 3\nvae_batch_size_bucket{le=\"2\"} 3\n"
                              "vae_batch_size_bucket{le=\"+Inf\"} 4\nvae_batch_size_sum 7\nvae_batch_size_count 4\n"));
  EXPECT_THAT(text, HasSubstr("vae_queue 1\n"));
  EXPECT_THAT(registry.Exposition(), HasSubstr("vae_queue 2\n"));
}

TEST(MetricsTest, ConcurrentIncrementsAreNotLost) {
  metrics::Registry registry;
  auto& family = registry.AddCounter("c_total", "c", {"k"});
  auto& h = registry.AddHistogram("h", "h", {}, {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        family.WithLabels({"x"}).Increment();
        h.WithLabels({}).Observe(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(family.WithLabels({"x"}).value(), 40000);
  EXPECT_THAT(registry.Exposition(), HasSubstr("h_sum 40000\nh_count 40000\n"));
}

TEST(MetricsTest, FormatValue) {
  EXPECT_EQ(metrics::FormatValue(3), "3");
  EXPECT_EQ(metrics::FormatValue(0.1), "0.1");
  EXPECT_EQ(metrics::FormatValue(5e-05), "5e-05");
  EXPECT_EQ(metrics::FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(metrics::FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(metrics::FormatValue(std::nan("")), "NaN");
}

TEST(RequestLogTest, TextLineIsKeyValueWithQuotedStrings) {
  RequestLog log(RequestLog::Format::kText);
  const absl::Time t = absl::FromUnixMicros(1796108400123456);
  EXPECT_EQ(log.Line(t, "request",
                     {{"method", "Encode"}, {"images", int64_t{2}}, {"latency_ms", 0.25}, {"peer", "a b"}, {"id", ""}}),
            "2026-12-01T07:00:00.123456Z request method=Encode images=2 latency_ms=0.25 peer=\"a b\" id=\"\"\n");
}

TEST(RequestLogTest, JsonLineParsesAndCarriesTheFields) {
  RequestLog log(RequestLog::Format::kJson);
  const std::string line = log.Line(absl::FromUnixMicros(1796108400123456), "request",
                                    {{"method", "Encode"},
                                     {"request_id", "r\"1\\\n"},
                                     {"version", int64_t{3}},
                                     {"loss", std::nan("")},
                                     {"latency_ms", 1.5}});
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // one line, whatever the values hold
  const auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json["time"], "2026-12-01T07:00:00.123456Z");
  EXPECT_EQ(json["event"], "request");
  EXPECT_EQ(json["method"], "Encode");
  EXPECT_EQ(json["request_id"], "r\"1\\\n");
  EXPECT_EQ(json["version"], 3);
  EXPECT_TRUE(json["loss"].is_null());
  EXPECT_EQ(json["latency_ms"], 1.5);
}

TEST(RequestLogTest, ParseFormatNamesTheFlag) {
  EXPECT_TRUE(RequestLog::ParseFormat("json").ok());
  const auto bad = RequestLog::ParseFormat("xml");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("log_format"));
  EXPECT_NE(RequestLog::NewRequestId(), RequestLog::NewRequestId());
}

}  // namespace
}  // namespace vae::server
