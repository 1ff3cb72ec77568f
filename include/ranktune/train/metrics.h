// defines: StepMetrics (what one optimizer step reports) and MetricsWriter, the per-run metrics files written by rank
// 0: <dir>/metrics.jsonl (one JSON object per line, absent values omitted) and <dir>/metrics.csv (fixed columns, absent
// values empty). Both are flushed every row so that a killed run keeps its curve; scripts/plot_metrics.py draws them.
// Also cuda_peak_memory_gib(), the GPU memory figure of a row, and peak_memory_describe, the run's in one line.
#pragma once

#include <cmath>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ranktune {

struct StepMetrics {
  long step = 0;      // optimizer steps done (1 after the first update)
  double loss = NAN;  // training loss, averaged over ranks and micro-steps
  double lr = NAN;
  double grad_norm = NAN;     // before clipping
  double tokens_per_s = NAN;  // all ranks together
  double mfu = NAN;           // fraction of peak, 0..1
  double gpu_mem_gib = NAN;   // peak allocated since the previous row; NaN on CPU
  double elapsed_s = NAN;     // wall time since training started (this process)
  long tokens = 0;            // tokens trained on so far, all ranks
  std::optional<double> eval_loss;
};

class MetricsWriter {
 public:
  // Creates `dir` if needed. append = keep the rows of an earlier run (resume): plot_metrics.py keeps the last row of
  // each step. An inactive writer (ranks other than 0) opens nothing and writes nothing. Throws UsageError when the
  // files cannot be opened.
  MetricsWriter(const std::string& dir, bool append, bool active = true);
  void write(const StepMetrics& m);
  const std::string& jsonl_path() const { return jsonl_path_; }
  const std::string& csv_path() const { return csv_path_; }

 private:
  bool active_;
  bool failed_ = false;
  std::string jsonl_path_, csv_path_;
  std::ofstream jsonl_, csv_;
};

// Peak bytes allocated by PyTorch's CUDA caching allocator on `device`, in GiB; optionally resets the peak so the next
// call covers the next window. NaN without CUDA support.
double cuda_peak_memory_gib(int device, bool reset_peak);

// "peak memory per GPU: cuda:0 10.1 GiB cuda:1 9.8 GiB" from (CUDA index, peak GiB) pairs.
std::string peak_memory_describe(const std::vector<std::pair<int, double>>& device_peak_gib);

}  // namespace ranktune
