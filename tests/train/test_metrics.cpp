// The metrics files: JSONL rows parse back with the values written, CSV has fixed columns with empty absent values,
// append keeps earlier rows and the header once, inactive writers write nothing.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/train/metrics.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

class MetricsTest : public testing::Test {
 protected:
  test::ScratchDir scratch{"metrics_" + test::test_name()};
  const std::string dir = scratch / "out";  // not created: an inactive writer must leave it absent
};

TEST_F(MetricsTest, JsonlAndCsvRows) {
  {
    MetricsWriter w(dir + "/run", false);
    StepMetrics m;
    m.step = 10;
    m.loss = 2.345678;
    m.lr = 3e-4;
    m.grad_norm = 0.5;
    m.tokens_per_s = 12345.5;
    m.mfu = 0.41;
    m.elapsed_s = 12.5;
    m.tokens = 40960;
    w.write(m);
    m.step = 20;
    m.eval_loss = 2.1;
    m.gpu_mem_gib = 34.25;
    w.write(m);
  }
  const auto jl = lines_of(dir + "/run/metrics.jsonl");
  ASSERT_EQ(jl.size(), 2u);
  const auto first = nlohmann::json::parse(jl[0]);
  EXPECT_EQ(first["step"], 10);
  EXPECT_DOUBLE_EQ(first["loss"].get<double>(), 2.345678);
  EXPECT_DOUBLE_EQ(first["lr"].get<double>(), 3e-4);
  EXPECT_EQ(first["tokens"], 40960);
  EXPECT_FALSE(first.contains("eval_loss"));
  EXPECT_FALSE(first.contains("gpu_mem_gib"));  // NaN on CPU: omitted, JSON has no NaN
  const auto second = nlohmann::json::parse(jl[1]);
  EXPECT_DOUBLE_EQ(second["eval_loss"].get<double>(), 2.1);
  EXPECT_DOUBLE_EQ(second["gpu_mem_gib"].get<double>(), 34.25);

  const auto csv = lines_of(dir + "/run/metrics.csv");
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[0], "step,loss,lr,grad_norm,tokens_per_s,mfu,gpu_mem_gib,elapsed_s,tokens,eval_loss");
  EXPECT_EQ(csv[1], "10,2.345678,0.0003,0.5,12345.5,0.41,,12.5,40960,");
  EXPECT_EQ(csv[2], "20,2.345678,0.0003,0.5,12345.5,0.41,34.25,12.5,40960,2.1");
}

TEST_F(MetricsTest, AppendKeepsRowsAndOneHeader) {
  StepMetrics m;
  m.step = 1;
  m.loss = 1;
  { MetricsWriter(dir, false).write(m); }
  m.step = 2;
  { MetricsWriter(dir, true).write(m); }
  EXPECT_EQ(lines_of(dir + "/metrics.csv").size(), 3u);
  EXPECT_EQ(lines_of(dir + "/metrics.jsonl").size(), 2u);
  { MetricsWriter(dir, false).write(m); }
  EXPECT_EQ(lines_of(dir + "/metrics.jsonl").size(), 1u);
}

TEST_F(MetricsTest, InactiveWritesNothingAndBadDirIsAnError) {
  MetricsWriter(dir, false, false).write(StepMetrics{});
  EXPECT_FALSE(exists(dir));
  ::mkdir(dir.c_str(), 0777);
  std::ofstream(dir + "/file") << "x";
  EXPECT_THROW(MetricsWriter(dir + "/file/sub", false), UsageError);
}

}  // namespace
}  // namespace ranktune
