// defines: the subcommands' entry points and the context they share. main.cpp parses, starts MPI and dispatches;
// each command lives in its own file under src/app/.
#pragma once

#include <string>

#include "ranktune/core/cli.h"
#include "ranktune/core/config.h"
#include "ranktune/distributed/cpu_threads.h"
#include "ranktune/distributed/topology.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/plan/layer_cost.h"

namespace ranktune {

class MpiEnv;

struct AppContext {
  const MpiEnv& env;
  const Config& cfg;
  const CliRequest& request;
  const LaunchEnv& launch_env;
  const CpuThreads& cpu_threads;  // this rank's intra-op threads, set at start-up
};

int cmd_topology(const AppContext& ctx);
int cmd_train(const AppContext& ctx);
int cmd_plan(const AppContext& ctx);
int cmd_checkpoint(const AppContext& ctx);
int cmd_export(const AppContext& ctx);
int cmd_prepare(const AppContext& ctx);
int cmd_generate(const AppContext& ctx);

std::string version_string();

// The model's shape for planning: the [model] keys, or config.json under --model.path.
LlamaConfig configured_model_shape(const Config& cfg);
// train and plan over a bitsandbytes 4-bit --model.path: model.quantize becomes nf4 (given as none: ConfigError); a
// quantization_config ranktune cannot load is refused here, before anything starts. Other subcommands: unchanged.
void config_apply_model_dir(Config& cfg, const ConfigValues& given, const std::string& subcommand);

}  // namespace ranktune
