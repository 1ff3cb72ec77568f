// The resume rule: which setting changes leave a checkpoint meaningful. Keys are matched by name, so a key added to
// the schema later is simply "not recorded" in older checkpoints.
#include "ranktune/core/config_changes.h"

#include <algorithm>
#include <array>
#include <iterator>

#include "ranktune/core/text.h"

namespace ranktune {
namespace {

constexpr const char* kNotRecorded = "(not recorded)";

bool has_prefix(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Settings that say how to run this invocation, not what was trained.
bool ignored(std::string_view key) {
  return key == "resume" || has_prefix(key, "generate.") || has_prefix(key, "export.") || has_prefix(key, "prepare.");
}

// The [model] keys that define a random-init model (model.path empty): its tensors' shapes and their meaning.
// max_seq_len is not one: no tensor depends on it.
constexpr std::array<std::string_view, 9> kRandomModelKeys = {"model.hidden_size",       "model.num_layers",
                                                              "model.num_heads",         "model.num_kv_heads",
                                                              "model.intermediate_size", "model.vocab_size",
                                                              "model.rope_theta",        "model.rms_norm_eps",
                                                              "model.tie_embeddings"};

std::string value_or(const ConfigText& t, const std::string& key, const std::string& missing) {
  const auto it = t.find(key);
  return it == t.end() ? missing : it->second;
}

// Why `key`'s change makes the checkpoint meaningless, or "" when it is a legitimate change on resume.
std::string refusal(const std::string& key, const ConfigText& saved, const Config& now) {
  if (key == "lora.r") return "the saved trainable tensors follow it: adapters of that rank, or the whole model for 0";
  if (key == "lora.alpha" || key == "lora.target_modules") {
    const bool both_lora = value_or(saved, "lora.r", "0") != "0" && now.lora.r > 0;
    return both_lora ? "the saved LoRA adapters were trained under it" : "";
  }
  if (key == "model.quantize") {
    return "the saved LoRA adapters were trained on the base as it held it (16-bit, or rounded to NF4): on another "
           "they correct the wrong weights";
  }
  if (key == "data.tokenizer") {
    // Compared as resolved: `auto` over a random init is `byte`, as older checkpoints recorded it.
    Config then;
    then.data.tokenizer = value_or(saved, "data.tokenizer", "");
    then.model.path = value_or(saved, "model.path", "");
    return config_tokenizer(then) != config_tokenizer(now) ? "the saved embeddings index that tokenizer's vocabulary"
                                                           : "";
  }
  if (std::find(kRandomModelKeys.begin(), kRandomModelKeys.end(), key) != kRandomModelKeys.end()) {
    const bool random_init = value_or(saved, "model.path", kNotRecorded).empty() && now.model.path.empty();
    return random_init ? "the saved weights belong to the model it defines" : "";
  }
  return "";
}

std::string shown(const std::string& v) { return v.empty() ? "\"\"" : v; }

}  // namespace

std::string config_ini(const Config& cfg) {
  std::string top;
  std::vector<std::pair<std::string, std::string>> sections;  // in order of first appearance
  for (const auto& k : config_schema()) {
    const auto dot = k.name.find('.');
    const std::string line = k.name.substr(dot == std::string::npos ? 0 : dot + 1) + " = " + k.show(cfg) + "\n";
    if (dot == std::string::npos) {
      top += line;
      continue;
    }
    const std::string section = k.name.substr(0, dot);
    auto it = std::find_if(sections.begin(), sections.end(), [&](const auto& s) { return s.first == section; });
    if (it == sections.end()) {
      sections.emplace_back(section, "");
      it = std::prev(sections.end());
    }
    it->second += line;
  }
  std::string out = top;
  for (const auto& [name, body] : sections) out += "\n[" + name + "]\n" + body;
  return out;
}

ConfigText config_ini_read(std::string_view text) {
  ConfigText out;
  std::string section;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t end = std::min(text.find('\n', begin), text.size());
    const std::string line = trim(text.substr(begin, end - begin));
    begin = end + 1;
    if (line.size() >= 2 && line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = trim(line.substr(0, eq));
    out.emplace(section.empty() ? key : section + "." + key, trim(line.substr(eq + 1)));
  }
  return out;
}

std::vector<ConfigChange> config_changes(const ConfigText& saved, const Config& now) {
  std::vector<ConfigChange> out;
  for (const ConfigKey& k : config_schema()) {
    if (ignored(k.name)) continue;
    const auto it = saved.find(k.name);
    const std::string value = trim(k.show(now));  // as config_ini_read gives the saved one
    if (it == saved.end()) {
      // Builds before model.quantize existed trained on a 16-bit base only.
      const bool refused = k.name == "model.quantize" && value != "none";
      out.push_back({k.name, kNotRecorded, value, refused ? refusal(k.name, saved, now) : ""});
    } else if (it->second != value) {
      out.push_back({k.name, it->second, value, refusal(k.name, saved, now)});
    }
  }
  return out;
}

std::string config_changes_describe(const std::vector<ConfigChange>& changes) {
  std::string out;
  for (const ConfigChange& c : changes)
    out += (out.empty() ? "" : ", ") + c.key + " " + shown(c.saved) + " -> " + shown(c.now);
  return out;
}

}  // namespace ranktune
