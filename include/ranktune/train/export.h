// defines: checkpoint_export (`ranktune export`): a LoRA checkpoint becomes a PEFT adapter directory (or, with merge,
// a full Hugging Face model directory), a full fine-tune a Hugging Face model directory, both loadable by
// transformers/peft; and TrainedModel, the model a checkpoint holds, rebuilt on the CPU in fp32 from its ModelRecord.
// Single-process and MPI-free: the checkpoint is verified (every file, every checksum) before a tensor is used.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

#include "ranktune/core/config_changes.h"
#include "ranktune/io/h5.h"
#include "ranktune/model/llama.h"
#include "ranktune/train/train_checkpoint.h"

namespace ranktune {

struct TrainedModel {
  std::filesystem::path step_dir;
  long step = 0;
  ModelRecord record;
  ConfigText run;  // record.run_config read once (config_ini_read): the run's model.quantize, train.precision
  std::map<std::string, at::Tensor> weights;  // trained parameters by model name, fp32 (the masters where kept)
  bool trained_on_gpu = false;                // the run's device was CUDA (its checkpoint holds `rng.cuda`)
};

// PATH: a step directory or a checkpoint root (its `latest`). A damaged or missing checkpoint is a CheckpointError
// listing the verifier's problems.
TrainedModel trained_model_read(const std::filesystem::path& checkpoint, h5::FileLocking locking);

// The model as the run held it, on the CPU in fp32, in eval mode: a full fine-tune from its recorded config.json, a
// LoRA run from its base directory (which must still match the recorded config) with the adapters attached unmerged.
// A QLoRA run (recorded model.quantize=nf4; a checkpoint without the key predates it: 16-bit) gets its 4-bit base
// back byte for byte: the 16-bit linears are quantized from the dtype the run loaded them in (bf16 on a GPU unless
// train.precision=fp32), a bitsandbytes directory's are taken as stored.
Llama trained_model_build(const TrainedModel& tm);
// The recorded model.quantize of the run ("none" when the checkpoint predates the key).
std::string trained_model_quantize(const TrainedModel& tm);

struct ExportOptions {
  at::ScalarType dtype = at::kBFloat16;  // of every written tensor
  bool merge = false;                    // LoRA: write base + B A folded in, as a full model
  bool overwrite = false;                // replace a non-empty out_dir
  h5::FileLocking locking = h5::FileLocking::best_effort;
};

struct ExportResult {
  long step = 0;
  std::filesystem::path step_dir;
  std::string what;  // "PEFT LoRA adapter (r=8, ...)" or "Hugging Face model (...)", for the summary line
};

// Writes the export into a temporary sibling of out_dir and renames it into place, so out_dir is either absent, the
// old content, or complete. A non-empty out_dir without overwrite is a UsageError checked before anything is read.
ExportResult checkpoint_export(const std::filesystem::path& checkpoint, const std::filesystem::path& out_dir,
                               const ExportOptions& options);

}  // namespace ranktune
