// defines: the effective configuration as a checkpoint records it (config_ini, INI text that --config reads back, and
// config_ini_read), and config_changes: the settings a resumed run changes against that record, each either shown
// (a new learning rate or more steps is a legitimate resume) or refused, where the saved tensors would lose their
// meaning (a random-init model's shape, LoRA's rank, scale and targets, the base's quantization, the tokenizer). Pure:
// unit-tested without a checkpoint.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/core/config.h"

namespace ranktune {

// Dotted key -> value as ConfigKey::show prints it.
using ConfigText = std::map<std::string, std::string>;

// The keys without a section first, then one [section] per dotted prefix, every key of the schema in schema order.
std::string config_ini(const Config& cfg);
// Reads config_ini's text back. Lenient, as it reads what older builds wrote: a line without '=' is skipped, a key
// given twice keeps its first value (a generate.prompt holding a newline cannot override an earlier section's key).
ConfigText config_ini_read(std::string_view text);

struct ConfigChange {
  std::string key;
  std::string saved;   // the checkpoint's value; "(not recorded)" for a key its build did not have
  std::string now;     // this run's
  std::string refuse;  // empty: allowed (shown); else why the checkpoint means nothing under the new value
};

// The keys whose values differ, in schema order, without the ones that do not shape training (resume itself,
// [generate], [export], [prepare]) and without saved keys the schema no longer has. A key `saved` lacks is shown, never
// refused, but for model.quantize other than none (older builds had only a 16-bit base). Refused: lora.r, and
// lora.alpha / lora.target_modules of a LoRA run; model.quantize (both ways); data.tokenizer; the [model] keys that
// define a random-init model (all but path and max_seq_len) while model.path is empty in both. Everything else
// (train.*, seed, data.path, device, parallel.*, model.path, ...) is shown: model.path's identity is the base check's
// (train_checkpoint.h), and a world-size or mode change is the reshard's.
std::vector<ConfigChange> config_changes(const ConfigText& saved, const Config& now);

// "train.lr 0.001 -> 0.0005, train.steps 4 -> 6" (an empty value shows as "").
std::string config_changes_describe(const std::vector<ConfigChange>& changes);

}  // namespace ranktune
