// Exact contiguous partition: best[s][u] = the smallest bottleneck placing units [0, u) on the first s devices,
// where device s-1 takes units [k, u) and must hold their bytes. Devices keep their order (stage i on devices[i]);
// empty stages are allowed when there are more devices than useful cuts.
#include "ranktune/plan/balanced_plan.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/error.h"
#include "ranktune/core/text.h"

namespace ranktune {

std::int64_t parse_bytes(const std::string& text) {
  const std::string t = trim(text);
  std::size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(t, &pos);
  } catch (const std::exception&) {
    throw ConfigError("bad memory size '" + text + "': expected a number with a unit, e.g. 70GiB");
  }
  std::string unit = trim(t.substr(pos));
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "kb") scale = 1e3;
  else if (unit == "mb") scale = 1e6;
  else if (unit == "gb") scale = 1e9;
  else if (unit == "tb") scale = 1e12;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  else throw ConfigError("bad memory unit '" + unit + "' in '" + text + "': use B, MB, GB, MiB, GiB or TiB");
  if (value < 0) throw ConfigError("negative memory size '" + text + "'");
  return static_cast<std::int64_t>(std::llround(value * scale));
}

std::vector<DeviceBudget> parse_memory_budgets(const std::string& spec) {
  std::vector<DeviceBudget> out;
  std::stringstream ss(spec);
  for (std::string entry; std::getline(ss, entry, ',');) {
    entry = trim(entry);
    if (entry.empty()) continue;
    const auto colon = entry.find(':');
    if (colon == std::string::npos)
      throw ConfigError("parallel.max_memory entry '" + entry + "' needs DEVICE:SIZE, e.g. 0:70GiB");
    int device = -1;
    try {
      device = std::stoi(entry.substr(0, colon));
    } catch (const std::exception&) {
    }
    if (device < 0) throw ConfigError("parallel.max_memory entry '" + entry + "': device must be a CUDA index >= 0");
    for (const auto& d : out)
      if (d.device == device)
        throw ConfigError("parallel.max_memory names device " + std::to_string(device) + " twice");
    out.push_back({device, parse_bytes(entry.substr(colon + 1))});
  }
  return out;
}

double BalancedPlan::total_flops() const {
  double t = 0;
  for (const auto& s : stages) t += s.flops;
  return t;
}

double BalancedPlan::bottleneck_flops() const {
  double m = 0;
  for (const auto& s : stages) m = std::max(m, s.flops);
  return m;
}

double BalancedPlan::predicted_time_fraction() const {
  const double sum = total_flops();
  if (sum <= 0) return 1.0;
  const double m = micro_batches;
  return (sum + (m - 1) * bottleneck_flops()) / (m * sum);
}

BalancedPlan plan_balanced(const PlanRequest& req) {
  const auto& units = req.units;
  const int n = static_cast<int>(units.size());
  const int s_count = static_cast<int>(req.devices.size());
  if (s_count == 0) throw ConfigError("balanced plan: no device to place the model on");
  if (req.micro_batches < 1) throw ConfigError("parallel.micro_batches must be >= 1");

  std::vector<double> pre_flops(n + 1, 0);
  for (int i = 0; i < n; ++i) pre_flops[i + 1] = pre_flops[i] + units[i].flops;
  auto seg_bytes = [&](int k, int u) {
    std::int64_t b = stage_peak_bytes(units, k, u);
    if (k == 0 && u == n && n > 0) b -= req.tied_replica_bytes;
    return b;
  };
  auto seg_flops = [&](int k, int u) { return pre_flops[u] - pre_flops[k]; };

  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[s][u]: bottleneck for units [0,u) on devices [0,s); cut[s][u]: where device s-1 starts.
  std::vector<std::vector<double>> best(s_count + 1, std::vector<double>(n + 1, kInf));
  std::vector<std::vector<int>> cut(s_count + 1, std::vector<int>(n + 1, -1));
  best[0][0] = 0;
  for (int s = 1; s <= s_count; ++s) {
    const std::int64_t budget = req.devices[s - 1].bytes;
    for (int u = 0; u <= n; ++u) {
      for (int k = u; k >= 0; --k) {
        if (best[s - 1][k] == kInf) continue;
        // Longer segments only grow (dropping the tied replica at k == 0 never undercuts the embedding it needs).
        if (k < u && seg_bytes(k, u) > budget) break;
        const double v = std::max(best[s - 1][k], seg_flops(k, u));
        // k runs downwards, so ties keep the later cut: earlier devices get fewer units, which keeps the first
        // device (that also holds the process's CUDA context and the embedding) lighter.
        if (v < best[s][u]) best[s][u] = v, cut[s][u] = k;
      }
    }
  }
  if (best[s_count][n] == kInf) {
    std::int64_t total = seg_bytes(0, n), offered = 0, largest = 0, max_budget = 0;
    std::string largest_name;
    for (const auto& d : req.devices) offered += d.bytes, max_budget = std::max(max_budget, d.bytes);
    for (int i = 0; i < n; ++i)
      if (const std::int64_t b = stage_peak_bytes(units, i, i + 1); b > largest)
        largest = b, largest_name = units[i].name;
    std::ostringstream os;
    os << "the model does not fit: training needs " << format_bytes(total) << " in total across " << s_count
       << " device(s) offering " << format_bytes(offered);
    if (largest > max_budget)
      os << ", and '" << largest_name << "' alone needs " << format_bytes(largest) << " (largest device budget "
         << format_bytes(max_budget) << ")";
    else
      os << " (contiguous stages cannot be packed into the budgets, ~" << format_bytes((total + s_count - 1) / s_count)
         << " per device needed)";
    throw OutOfMemoryError(os.str());
  }

  BalancedPlan plan;
  plan.units = units;
  plan.micro_batches = req.micro_batches;
  plan.stages.resize(s_count);
  for (int s = s_count, u = n; s >= 1; --s) {
    const int k = cut[s][u];
    Stage& st = plan.stages[s - 1];
    st.device = req.devices[s - 1].device;
    st.budget = req.devices[s - 1].bytes;
    st.first = k;
    st.last = u - 1;
    st.bytes = k < u ? seg_bytes(k, u) : 0;
    st.flops = seg_flops(k, u);
    u = k;
  }
  return plan;
}

BalancedPlan plan_balanced_for(const LlamaConfig& model, const TrainSetup& setup,
                               const std::vector<DeviceBudget>& devices, int micro_batches) {
  auto request = [&](TrainSetup s) {
    s.pipeline_chunks = micro_batches;
    PlanRequest r;
    r.units = layer_costs(model, s);
    r.devices = devices;
    r.micro_batches = micro_batches;
    if (model.tie_word_embeddings)
      r.tied_replica_bytes = r.units.back().weight_bytes - model.hidden_size * (s.on_gpu ? 2 : 4);
    return r;
  };
  try {
    return plan_balanced(request(setup));
  } catch (const OutOfMemoryError& e) {
    std::vector<std::string> ways;
    auto fits = [&](const TrainSetup& s) {
      try {
        plan_balanced(request(s));
        return true;
      } catch (const OutOfMemoryError&) {
        return false;
      }
    };
    // The fewest layers recomputing that fit: the same results as every layer recomputing, with less recomputation.
    if (const std::int64_t n = fewest_recomputing_layers(model, setup, fits); n > 0) {
      TrainSetup fewest = setup;
      fewest.activation_checkpointing = true;
      fewest.activation_checkpointing_layers = n;
      ways.push_back((setup.activation_checkpointing ? "" : "--train.activation_checkpointing=true ") +
                     std::string("--train.activation_checkpointing_layers=") + std::to_string(n) + " (" +
                     format_bytes(training_footprint_bytes(model, fewest)) + " in total)");
    }
    for (const PlanVariant& v : plan_variants(model, setup))
      if (fits(v.setup))
        ways.push_back(v.option + " (" + format_bytes(training_footprint_bytes(model, v.setup)) + " in total)");
    throw OutOfMemoryError(e.what(), ways.empty()
                                         ? "more GPUs, or LoRA with activation checkpointing and a smaller micro-batch"
                                         : plan_ways_hint(ways, "more GPUs"));
  }
}

std::int64_t fewest_recomputing_layers(const LlamaConfig& model, const TrainSetup& setup,
                                       const std::function<bool(const TrainSetup&)>& fits) {
  std::int64_t fewest = 0;
  TrainSetup s = setup;
  s.activation_checkpointing = true;
  for (s.activation_checkpointing_layers = model.num_layers - 1; s.activation_checkpointing_layers > 0 && fits(s);
       --s.activation_checkpointing_layers)
    fewest = s.activation_checkpointing_layers;
  return fewest;
}

std::vector<PlanVariant> plan_variants(const LlamaConfig& model, const TrainSetup& setup) {
  std::vector<PlanVariant> out;
  auto add = [&](std::string option, auto change) {
    TrainSetup s = setup;
    change(s);
    out.push_back({std::move(option), s});
  };
  if (setup.lora_r == 0) add("LoRA: --lora.r=16", [](TrainSetup& s) { s.lora_r = 16; });
  if (!setup.nf4 && !model.bnb_nf4)
    add(std::string("QLoRA: --model.quantize=nf4") + (setup.lora_r == 0 ? " --lora.r=16" : ""), [](TrainSetup& s) {
      s.nf4 = true;
      s.lora_r = std::max(s.lora_r, 16);
    });
  if (!setup.activation_checkpointing)
    add("--train.activation_checkpointing=true", [](TrainSetup& s) { s.activation_checkpointing = true; });
  else if (activation_checkpointed_count(model.num_layers, setup.activation_checkpointing_layers) < model.num_layers)
    add("--train.activation_checkpointing_layers=0 (every layer recomputes)",
        [](TrainSetup& s) { s.activation_checkpointing_layers = 0; });
  // Long sequences: the MLP's intermediate-wide tensors for 8192 tokens at a time (model/tiled_mlp.h).
  if (setup.on_gpu && (setup.mlp_chunk_tokens == 0 || setup.mlp_chunk_tokens > 8192) && setup.seq_len > 8192)
    add("--train.mlp_chunk_tokens=8192", [](TrainSetup& s) { s.mlp_chunk_tokens = 8192; });
  if (setup.micro_batch > 1) {
    const std::int64_t half = std::max<std::int64_t>(1, setup.micro_batch / 2);
    add("--train.micro_batch=" + std::to_string(half) + " (and more --train.grad_accum)",
        [half](TrainSetup& s) { s.micro_batch = half; });
  }
  return out;
}

std::string plan_ways_hint(const std::vector<std::string>& ways, const std::string& last) {
  if (ways.empty()) return last;
  std::string hint = "any of: ";
  for (const std::string& w : ways) hint += w + "; ";
  return hint + "or " + last;
}

std::string plan_table(const BalancedPlan& p, const std::vector<std::string>& labels) {
  std::ostringstream os;
  const double total = p.total_flops();
  os << std::left << std::setw(8) << "device" << std::setw(22) << "units" << std::setw(8) << "layers" << std::setw(12)
     << "weights" << std::setw(12) << "grad+optim" << std::setw(13) << "activations" << std::setw(12) << "total"
     << std::setw(12) << "budget"
     << "time share\n";
  for (std::size_t k = 0; k < p.stages.size(); ++k) {
    const Stage& s = p.stages[k];
    std::int64_t w = 0, st = 0, a = 0, working = 0;
    int layers = 0;
    for (int i = s.first; i <= s.last; ++i) {
      w += p.units[i].weight_bytes, st += p.units[i].state_bytes, a += p.units[i].activation_bytes;
      working = std::max(working, p.units[i].working_bytes);
      layers += p.units[i].name.rfind("layer", 0) == 0;
    }
    a += working;  // activations at the stage's peak: what is saved plus one unit's working set
    const std::string range =
        s.empty() ? "(none)" : p.units[s.first].name + (s.first == s.last ? "" : " .. " + p.units[s.last].name);
    char share[16];
    std::snprintf(share, sizeof share, "%.1f%%", total > 0 ? 100.0 * s.flops / total : 0.0);
    os << std::setw(8) << (k < labels.size() ? labels[k] : "cuda:" + std::to_string(s.device)) << std::setw(22) << range
       << std::setw(8) << layers << std::setw(12) << format_bytes(w) << std::setw(12) << format_bytes(st)
       << std::setw(13) << format_bytes(a) << std::setw(12) << format_bytes(s.bytes) << std::setw(12)
       << (s.budget >= (std::int64_t{1} << 45) ? std::string("host") : format_bytes(s.budget)) << share << '\n';
  }
  char line[160];
  std::snprintf(
      line, sizeof line,
      "pipeline: %d micro-batch(es) over %zu stage(s): predicted %.2fx the speed of naive sequential execution\n",
      p.micro_batches, p.stages.size(), p.predicted_speedup_over_sequential());
  os << line;
  return os.str();
}

}  // namespace ranktune
