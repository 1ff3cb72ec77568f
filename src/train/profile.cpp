#include "ranktune/train/profile.h"

#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <utility>

#include "ranktune/core/config.h"
#include "ranktune/core/log.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/train/metrics.h"

#ifdef RANKTUNE_HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace ranktune {
namespace {

namespace kp = torch::autograd::profiler;
namespace pi = torch::profiler::impl;

// libkineto's ActivityType numbers (kineto/ActivityType.h), as KinetoEvent::activityType() reports them.
constexpr std::uint8_t kCpuOp = 0, kUserAnnotation = 1, kGpuMemcpy = 3, kGpuMemset = 4, kGpuKernel = 5;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool has_any(const std::string& s, std::initializer_list<std::string_view> parts) {
  for (auto p : parts)
    if (s.find(p) != std::string::npos) return true;
  return false;
}

void sync_gpus(const std::vector<int>& gpus) {
#ifdef RANKTUNE_HAVE_CUDA
  for (int g : gpus) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(g));
    c10::cuda::device_synchronize();
  }
#else
  (void)gpus;
#endif
}

struct Row {
  double ns = 0;
  long calls = 0;
};

// One line of a markdown table: '|' inside a kernel's template arguments would split its cell.
std::string cell(std::string_view name, std::size_t max_len = 140) {
  std::string out;
  for (char c : name.substr(0, max_len)) out += c == '|' ? '/' : c;
  if (name.size() > max_len) out += "...";
  return out;
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// Categories that name what a span of the step is for: an op inside one (aten::mul inside aten::cross_entropy_loss,
// any kernel launched there) counts as that. The rest (matmul, copy/cast, elementwise) say only how it computes.
bool purposeful(const std::string& category) {
  return category == "attention" || category == "norm" || category == "rope" || category == "swiglu" ||
         category == "loss" || category == "optimizer" || category == "nccl";
}

struct HostOps {
  std::vector<double> self_ns;        // time outside child ops, so that nested ops are not counted twice
  std::vector<std::string> category;  // the outermost purposeful enclosing op's, else the op's own
};

HostOps host_ops(const std::vector<const kp::KinetoEvent*>& ops) {
  std::vector<std::size_t> order(ops.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& x = *ops[a];
    const auto& y = *ops[b];
    if (x.startThreadId() != y.startThreadId()) return x.startThreadId() < y.startThreadId();
    if (x.startNs() != y.startNs()) return x.startNs() < y.startNs();
    return x.endNs() > y.endNs();  // the enclosing op first
  });
  HostOps out{std::vector<double>(ops.size()), std::vector<std::string>(ops.size())};
  std::vector<std::size_t> stack;
  std::uint64_t thread = 0;
  for (std::size_t i : order) {
    const auto& e = *ops[i];
    if (stack.empty() || e.startThreadId() != thread) stack.clear();
    thread = e.startThreadId();
    while (!stack.empty() && ops[stack.back()]->endNs() <= e.startNs()) stack.pop_back();
    out.self_ns[i] = static_cast<double>(e.durationNs());
    out.category[i] = profile_category(e.name());
    if (!stack.empty()) {
      const std::size_t parent = stack.back();
      out.self_ns[parent] -= static_cast<double>(std::min(e.endNs(), ops[parent]->endNs()) - e.startNs());
      if (purposeful(out.category[parent])) out.category[i] = out.category[parent];
    }
    stack.push_back(i);
  }
  for (double& t : out.self_ns) t = std::max(t, 0.0);
  return out;
}

// Time during which at least one kernel ran; the wall time minus this is GPU idle time (launch gaps, host work).
double busy_ns(std::vector<std::pair<std::uint64_t, std::uint64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  double busy = 0;
  std::uint64_t lo = 0, hi = 0;
  bool open = false;
  for (const auto& [a, b] : spans) {
    if (open && a <= hi) {
      hi = std::max(hi, b);
      continue;
    }
    if (open) busy += static_cast<double>(hi - lo);
    lo = a;
    hi = b;
    open = true;
  }
  if (open) busy += static_cast<double>(hi - lo);
  return busy;
}

std::string file_name(const ProfileOptions& o, const char* stem, const char* ext) {
  std::string name = stem;
  if (o.world > 1) name += ".rank" + std::to_string(o.rank);
  return o.dir + "/" + name + ext;
}

}  // namespace

std::string profile_category(std::string_view name) {
  const std::string n = lower(name);
  if (has_any(n, {"nccl"})) return "nccl";
  if (has_any(n, {"flash", "fmha", "attention", "attn", "sdpa", "efficient", "cudnn"})) return "attention";
  // The optimizer before the norms: the gradient clip's norm is optimizer work, not RMSNorm.
  if (has_any(n, {"adam", "foreach", "multi_tensor", "vector_norm", "normtwoops", "clip"})) return "optimizer";
  if (has_any(n, {"cross_entropy", "crossentropy", "nll_loss", "softmax", "logsumexp", "token_loss"})) return "loss";
  if (has_any(n, {"normal_", "normal<"})) return "other";  // an RNG fill (at::native::normal_kernel), not a norm
  if (has_any(n, {"norm", "rsqrt"})) return "norm";
  if (has_any(n, {"rope", "rotary"})) return "rope";
  if (has_any(n, {"swiglu", "silu", "glu", "sigmoid"})) return "swiglu";
  if (has_any(n, {"gemm", "matmul", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "nvjet",
                  "xmma", "cutlass", "cublas"}))
    return "matmul";
  if (has_any(n, {"copy", "aten::to", "aten::_to_copy", "aten::cat", "catarray", "memcpy", "memset", "aten::contiguous",
                  "aten::clone"}))
    return "copy/cast";
  if (has_any(n, {"elementwise", "aten::add", "aten::mul", "aten::sub", "aten::div", "aten::neg", "aten::fill",
                  "aten::zero", "aten::where", "aten::exp", "aten::pow", "aten::sum", "aten::mean", "reduce_kernel",
                  "aten::masked_fill", "aten::embedding"}))
    return "elementwise";
  // Autograd's own nodes (MmBackward0, evaluate_function): host-side bookkeeping around the backward kernels.
  if (has_any(n, {"backward", "autograd::"})) return "autograd";
  return "other";
}

StepProfiler::StepProfiler(ProfileOptions o) : o_(std::move(o)) {}

StepProfiler::~StepProfiler() {
  if (!active_) {
    if (!done_)
      log0() << "profile: the run ended before step " << o_.first_step + o_.skip + 1 << "; no profile written";
    return;
  }
  try {
    finish();
  } catch (const std::exception& e) {
    log_error() << "profile: not written: " << e.what();
  }
}

void StepProfiler::step_begin(long step) {
  if (done_ || active_ || step != o_.first_step + o_.skip) return;
  sync_gpus(o_.gpus);  // the warm-up's queued kernels stay out of the window
  const bool cuda = !o_.gpus.empty();
  std::set<pi::ActivityType> activities{pi::ActivityType::CPU};
  if (cuda) activities.insert(pi::ActivityType::CUDA);
  const pi::ProfilerConfig config(pi::ProfilerState::KINETO);
  kp::prepareProfiler(config, activities);
  kp::enableProfiler(config, activities);
  active_ = true;
  start_ = std::chrono::steady_clock::now();
}

void StepProfiler::step_end(long step) {
  // A step before the window may end inside it: the trainer queues a step ahead before it reads the one before.
  if (!active_ || step < o_.first_step + o_.skip) return;
  ++profiled_;
  // Trainer resets the allocator's peak after each step, so each step's own peak is read before that.
  for (int g : o_.gpus) peak_gib_ = std::max(peak_gib_, cuda_peak_memory_gib(g, false));
  if (step + 1 >= o_.first_step + o_.skip + o_.steps) finish();
}

void StepProfiler::finish() {
  sync_gpus(o_.gpus);
  const double wall_ns = static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
  active_ = false;
  done_ = true;
  std::unique_ptr<kp::ProfilerResult> result = kp::disableProfiler();
  const bool cuda = !o_.gpus.empty();

  // Rows keyed by (category, name): one elementwise kernel is norm work in RMSNorm and rope work in RoPE.
  std::map<std::pair<std::string, std::string>, Row> by_name;
  std::map<std::string, Row> by_category;
  double sum_ns = 0;
  double busy = 0;
  std::vector<const kp::KinetoEvent*> ops;
  for (const auto& e : result->events())
    if ((e.activityType() == kCpuOp || e.activityType() == kUserAnnotation) && e.deviceType() == c10::DeviceType::CPU)
      ops.push_back(&e);
  const HostOps host = host_ops(ops);
  if (cuda) {
    // A kernel's linked correlation id is that of the CPU op that launched it.
    std::map<std::uint64_t, std::string> launched_in;
    for (std::size_t i = 0; i < ops.size(); ++i)
      if (ops[i]->correlationId() != 0) launched_in[ops[i]->correlationId()] = host.category[i];
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    for (const auto& e : result->events()) {
      const auto a = e.activityType();
      if (a != kGpuKernel && a != kGpuMemcpy && a != kGpuMemset) continue;
      std::string category = profile_category(e.name());
      const auto op = launched_in.find(e.linkedCorrelationId());
      if (op != launched_in.end() && (purposeful(op->second) || category == "other")) category = op->second;
      Row& r = by_name[{category, e.name()}];
      r.ns += static_cast<double>(e.durationNs());
      ++r.calls;
      spans.emplace_back(e.startNs(), e.endNs());
    }
    busy = busy_ns(std::move(spans));
  } else {
    for (std::size_t i = 0; i < ops.size(); ++i) {
      Row& r = by_name[{host.category[i], ops[i]->name()}];
      r.ns += host.self_ns[i];
      ++r.calls;
    }
  }
  for (const auto& [key, r] : by_name) {
    Row& c = by_category[key.first];
    c.ns += r.ns;
    c.calls += r.calls;
    sum_ns += r.ns;
  }
  if (!cuda) busy = sum_ns;

  dir_create(o_.dir, "output", "output_dir");
  const std::string trace = file_name(o_, "profile_trace", ".json");
  result->save(trace);

  double peak_gib = peak_gib_;
  const char* peak_what = "peak allocated by the CUDA caching allocator during the profiled steps (fullest GPU)";
  if (!cuda) {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    peak_gib = static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
    peak_what = "peak resident set size of the process so far (CPU run)";
  }

  const double ms = 1e-6;
  auto pct = [&](double ns) { return wall_ns > 0 ? 100.0 * ns / wall_ns : 0.0; };
  std::string md = "# Profile of training steps " + std::to_string(o_.first_step + o_.skip + 1) + "-" +
                   std::to_string(o_.first_step + o_.skip + profiled_) + "\n\n";
  md += "- " + std::to_string(profiled_) + " steps after " + std::to_string(o_.skip) + " warm-up, rank " +
        std::to_string(o_.rank) + " of " + std::to_string(o_.world) + ", " +
        (cuda ? "GPU kernels (Kineto/CUPTI: kernels, memcpy, memset)" : "CPU ops, self time (no CUDA activity)") + "\n";
  md += fmt("- wall time of the profiled steps: %.3f ms (%.3f ms/step)\n", wall_ns * ms,
            profiled_ > 0 ? wall_ns * ms / static_cast<double>(profiled_) : 0.0);
  const double idle = std::max(0.0, wall_ns - busy);
  md += std::string("- ") + (cuda ? "kernel" : "op self") +
        fmt(" time summed: %.3f ms (%.1f%% of wall)\n", sum_ns * ms, pct(sum_ns));
  md += std::string("- ") + (cuda ? "GPU" : "ops") +
        fmt(": %.3f ms busy, %.3f ms idle (%.1f%% of wall: launch gaps, host work, synchronisation)\n", busy * ms,
            idle * ms, pct(idle));
  md += fmt("- peak memory: %.3f GiB, ", peak_gib) + peak_what + "\n";
  md += "- chrome trace: " + trace + " (open in https://ui.perfetto.dev)\n\n";

  auto sorted = [](const auto& m) {
    std::vector<std::pair<typename std::decay_t<decltype(m)>::key_type, Row>> v(m.begin(), m.end());
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
    return v;
  };
  md += "## By category\n\n| category | total ms | calls | % of wall |\n|---|---:|---:|---:|\n";
  for (const auto& [name, r] : sorted(by_category))
    md += "| " + name + fmt(" | %.3f | ", r.ns * ms) + std::to_string(r.calls) + fmt(" | %.1f |\n", pct(r.ns));
  md += std::string("\n## By ") + (cuda ? "kernel" : "op") +
        "\n\n| name | category | total ms | calls | avg us | % of wall |\n|---|---|---:|---:|---:|---:|\n";
  for (const auto& [key, r] : sorted(by_name))
    md += "| " + cell(key.second) + " | " + key.first + fmt(" | %.3f | ", r.ns * ms) + std::to_string(r.calls) +
          fmt(" | %.1f | %.1f |\n", r.ns / 1e3 / static_cast<double>(std::max(1L, r.calls)), pct(r.ns));

  const std::string table = file_name(o_, "profile_kernels", ".md");
  std::ofstream(table) << md;
  log0() << "profile: " << profiled_ << " steps, " << fmt("%.1f ms wall, %.1f%% ", wall_ns * ms, pct(sum_ns))
         << (cuda ? "in kernels" : "in ops") << " -> " << table << ", " << trace;
}

std::unique_ptr<StepProfiler> step_profiler_from_config(const Config& cfg, long first_step, int rank, int world,
                                                        std::vector<int> gpus) {
  if (cfg.train.profile_steps <= 0) return nullptr;
  ProfileOptions o;
  o.first_step = first_step;
  o.skip = cfg.train.profile_skip;
  o.steps = cfg.train.profile_steps;
  o.dir = cfg.output_dir;
  o.rank = rank;
  o.world = world;
  o.gpus = std::move(gpus);
  return std::make_unique<StepProfiler>(std::move(o));
}

}  // namespace ranktune
