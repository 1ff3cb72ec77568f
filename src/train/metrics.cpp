#include "ranktune/train/metrics.h"

#include <sys/stat.h>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/io/durable_file.h"
#ifdef RANKTUNE_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ranktune {
namespace {

constexpr const char* kCsvHeader = "step,loss,lr,grad_norm,tokens_per_s,mfu,gpu_mem_gib,elapsed_s,tokens,eval_loss";

// %.9g keeps a float32 loss exact and stays short; non-finite values have no JSON spelling.
std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void json_field(std::string& out, const char* key, double v) {
  if (!std::isfinite(v)) return;
  out += ",\"";
  out += key;
  out += "\":" + number(v);
}

std::string csv_field(double v) { return std::isfinite(v) ? number(v) : ""; }

void open_file(std::ofstream& f, const std::string& path, bool append) {
  f.open(path, append ? std::ios::app : std::ios::trunc);
  if (!f)
    throw UsageError("cannot write metrics file " + path + ": " + std::strerror(errno),
                     "check that output_dir is writable");
}

bool non_empty_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& dir, bool append, bool active)
    : active_(active), jsonl_path_(dir + "/metrics.jsonl"), csv_path_(dir + "/metrics.csv") {
  if (!active_) return;
  dir_create(dir, "output", "output_dir");
  const bool had_csv = append && non_empty_file(csv_path_);
  open_file(jsonl_, jsonl_path_, append);
  open_file(csv_, csv_path_, append);
  if (!had_csv) csv_ << kCsvHeader << '\n' << std::flush;
}

void MetricsWriter::write(const StepMetrics& m) {
  if (!active_ || failed_) return;
  std::string j = "{\"step\":" + std::to_string(m.step);
  json_field(j, "loss", m.loss);
  json_field(j, "lr", m.lr);
  json_field(j, "grad_norm", m.grad_norm);
  json_field(j, "tokens_per_s", m.tokens_per_s);
  json_field(j, "mfu", m.mfu);
  json_field(j, "gpu_mem_gib", m.gpu_mem_gib);
  json_field(j, "elapsed_s", m.elapsed_s);
  j += ",\"tokens\":" + std::to_string(m.tokens);
  if (m.eval_loss) json_field(j, "eval_loss", *m.eval_loss);
  j += "}\n";
  jsonl_ << j << std::flush;
  csv_ << m.step << ',' << csv_field(m.loss) << ',' << csv_field(m.lr) << ',' << csv_field(m.grad_norm) << ','
       << csv_field(m.tokens_per_s) << ',' << csv_field(m.mfu) << ',' << csv_field(m.gpu_mem_gib) << ','
       << csv_field(m.elapsed_s) << ',' << m.tokens << ',' << (m.eval_loss ? csv_field(*m.eval_loss) : "") << '\n'
       << std::flush;
  // A full disk must not end a training run: say so once and stop writing metrics.
  if (!jsonl_ || !csv_) {
    failed_ = true;
    log_error() << "warning: writing " << jsonl_path_ << " failed (" << std::strerror(errno)
                << "); no further metrics rows are written";
  }
}

double cuda_peak_memory_gib(int device, bool reset_peak) {
#ifdef RANKTUNE_HAVE_CUDA
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto stats = alloc::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  const double peak = static_cast<double>(
      stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
  if (reset_peak) alloc::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  return peak / (1024.0 * 1024.0 * 1024.0);
#else
  (void)device;
  (void)reset_peak;
  return NAN;
#endif
}

std::string peak_memory_describe(const std::vector<std::pair<int, double>>& device_peak_gib) {
  std::string line = "peak memory per GPU:";
  for (const auto& [device, gib] : device_peak_gib) {
    char part[48];
    std::snprintf(part, sizeof part, " cuda:%d %.1f GiB", device, gib);
    line += part;
  }
  return line;
}

}  // namespace ranktune
