// Which tokenizer a command uses, and whether it fits the model (see the header). The model directory's config.json
// is read here on its own (vocab_size, bos_token_id, eos_token_id): the check runs before the weights or any text.
#include "ranktune/app/tokenizer_choice.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/data/byte_tokenizer_files.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// bos_token_id / eos_token_id as config.json and generation_config.json write them: an id, a list of ids, or absent.
std::set<std::int64_t> ids_of(const nlohmann::json& j, const char* key) {
  std::set<std::int64_t> out;
  if (!j.is_object() || !j.contains(key)) return out;
  const auto& v = j.at(key);
  if (v.is_number_integer()) out.insert(v.get<std::int64_t>());
  if (v.is_array())
    for (const auto& x : v)
      if (x.is_number_integer()) out.insert(x.get<std::int64_t>());
  return out;
}

std::string ids_text(const std::set<std::int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : ", ") + std::to_string(id);
  return ids.size() > 1 ? "[" + s + "]" : s;
}

// "DIR/tokenizer.json" plus its tokenizer_config.json when there is one: where the special tokens were read.
std::string tokenizer_files(const std::string& spec) {
  const fs::path cfg = fs::path(spec).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  return spec + (fs::exists(cfg, ec) ? " (special tokens from " + cfg.string() + ")" : "");
}

std::string special_text(const Tokenizer& tok, const char* what, std::int32_t id) {
  std::string name;
  try {
    name = tok.decode({id}, /*skip_special=*/false);
  } catch (const std::exception&) {
  }
  return std::string(what) + " id " + std::to_string(id) + (name.empty() ? "" : " ('" + name + "')");
}

void check_model(const Tokenizer& tok, const TokenizerChoice& c) {
  const fs::path config_path = fs::path(c.model_dir) / "config.json";
  const nlohmann::json config = read_json(config_path);
  if (!config.is_object()) return;  // loading the model reports a missing or malformed config.json
  const std::string model_config = config_path.string();
  const std::string files = c.spec == "byte" ? "the byte tokenizer" : "tokenizer " + tokenizer_files(c.spec);
  const std::string fix =
      c.model_own ? "the model directory's tokenizer and config.json disagree: correct the one that is wrong"
                  : "use the model's own tokenizer (data.tokenizer=auto reads " + c.model_dir +
                        "/tokenizer.json), or a tokenizer of this model's vocabulary";
  if (config.contains("vocab_size") && config.at("vocab_size").is_number_integer()) {
    const auto vocab = config.at("vocab_size").get<std::int64_t>();
    if (tok.vocab_size() > vocab)
      throw ConfigError(files + " has " + std::to_string(tok.vocab_size()) + " tokens, more than vocab_size " +
                            std::to_string(vocab) + " in " + model_config + ": it is not this model's tokenizer",
                        fix);
  }
  if (c.explicit_byte) return;  // asked for, and warned about: its ids are not the model's
  const std::set<std::int64_t> bos = ids_of(config, "bos_token_id");
  if (tok.bos_id() && !bos.empty() && !bos.count(*tok.bos_id()))
    throw ConfigError(files + " has " + special_text(tok, "bos", *tok.bos_id()) + " but " + model_config +
                          " has bos_token_id " + ids_text(bos),
                      fix);
  std::set<std::int64_t> eos = ids_of(config, "eos_token_id");
  const fs::path generation = fs::path(c.model_dir) / "generation_config.json";
  for (auto id : ids_of(read_json(generation), "eos_token_id")) eos.insert(id);  // HF generate stops at either
  if (tok.eos_id() && !eos.empty() && !eos.count(*tok.eos_id()))
    throw ConfigError(files + " has " + special_text(tok, "eos", *tok.eos_id()) + " but " + model_config +
                          (fs::exists(generation) ? " (with generation_config.json)" : "") + " has eos_token_id " +
                          ids_text(eos),
                      fix);
}

}  // namespace

TokenizerChoice tokenizer_choose(const std::string& setting, const std::string& model_dir) {
  TokenizerChoice c;
  c.model_dir = model_dir;
  if (setting == "byte") {
    c.spec = "byte";
    c.origin = "data.tokenizer=byte";
    const fs::path own = fs::path(model_dir) / "tokenizer.json";
    c.explicit_byte = !model_dir.empty() && !byte_tokenizer_file_is(own.string());
    return c;
  }
  if (setting != "auto") {
    std::error_code ec;
    c.spec = fs::is_directory(setting, ec) ? (fs::path(setting) / "tokenizer.json").string() : setting;
    c.origin = "data.tokenizer=" + setting;
    c.model_own = !model_dir.empty() && fs::equivalent(fs::path(c.spec).parent_path(), model_dir, ec);
    return c;
  }
  if (model_dir.empty()) {
    c.spec = "byte";
    c.origin = "data.tokenizer=auto without a model directory";
    return c;
  }
  const fs::path own = fs::path(model_dir) / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(own, ec))
    throw ConfigError("the model directory " + model_dir +
                          " has no tokenizer.json, and data.tokenizer=auto uses "
                          "the model's own tokenizer",
                      "copy the model's tokenizer.json (and tokenizer_config.json) into " + model_dir +
                          ", or name one with --data.tokenizer=PATH (--data.tokenizer=byte: byte ids, which the "
                          "pretrained embeddings never saw)");
  c.model_own = true;
  if (byte_tokenizer_file_is(own.string())) {
    c.spec = "byte";
    c.origin = "the model's own: " + own.string() + " is ranktune's byte tokenizer (data.tokenizer=auto)";
    return c;
  }
  c.spec = own.string();
  c.origin = "the model's own (data.tokenizer=auto)";
  return c;
}

std::unique_ptr<Tokenizer> tokenizer_open(const TokenizerChoice& c) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = tokenizer_load(c.spec);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError("data.tokenizer '" + c.spec + "': " + e.what());
  }
  if (!c.model_dir.empty()) check_model(*tok, c);
  log0() << "tokenizer: " << tok->describe() << "; " << c.origin;
  if (c.explicit_byte && log_context().rank == 0)
    log_error() << "warning: the byte tokenizer (ids 0-258) over the pretrained model " << c.model_dir
                << ", whose embeddings were trained on its own tokenizer's ids; data.tokenizer=auto uses "
                << c.model_dir << "/tokenizer.json";
  return tok;
}

}  // namespace ranktune
