// A tokenizer as llama.cpp's GGUF vocabulary (see the header). The tokenizer is first loaded as ranktune loads it
// (which refuses what ranktune itself cannot reproduce); its tokenizer.json is then read again for what llama.cpp must
// be told: the family, the split pattern, the merges, and the steps llama.cpp has no equivalent of.
#include "ranktune/data/gguf_vocab.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "ranktune/data/byte_tokenizer_files.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/pre_split.h"
#include "ranktune/data/tokenizer.h"

namespace ranktune {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kMetaspace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

class Refusal {
 public:
  explicit Refusal(std::string origin) : origin_(std::move(origin)) {}
  [[noreturn]] void operator()(const std::string& what) const {
    throw DataError(origin_ + ": " + what + ", which llama.cpp's tokenizers cannot reproduce",
                    "export this model with --export.format=hf and convert it with llama.cpp's own tools, or train "
                    "with a tokenizer of the GPT-2, Llama 2/3, Mistral or Qwen2 kind");
  }

 private:
  std::string origin_;
};

std::string type_of(const json& j) { return j.is_object() ? j.value("type", std::string("?")) : std::string("?"); }

bool flag(const json& j, const char* key, bool dflt) {
  return j.contains(key) && j.at(key).is_boolean() ? j.at(key).get<bool>() : dflt;
}

// The steps of a normalizer or pre-tokenizer with its Sequences flattened.
void flatten(const json& j, const char* list_key, std::vector<json>& out) {
  if (j.is_null()) return;
  if (type_of(j) == "Sequence") {
    for (const json& s : j.at(list_key)) flatten(s, list_key, out);
  } else {
    out.push_back(j);
  }
}

// GPT-2's byte-to-symbol table: printable bytes stand for themselves, the other 68 for U+0100 onwards in order.
std::string byte_symbol(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int c = 0; c < b; ++c)
      if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

struct Entry {
  std::string text;
  std::int32_t type = gguf_token_unused;
  bool set = false;
};

// The byte tokenizer: ids 0-255 are the bytes, which a merge-free byte-level BPE gives exactly.
void byte_vocab(std::vector<Entry>& entries, GgufVocab& v) {
  v.model = "gpt2";
  v.pre = "gpt-2";
  for (int b = 0; b < 256; ++b) entries[b] = {byte_symbol(b), gguf_token_normal, true};
  const char* specials[] = {"<bos>", "<eos>", "<pad>"};  // ids 256-258, as byte_tokenizer_json() names them
  for (int i = 0; i < 3; ++i) entries[256 + i] = {specials[i], gguf_token_control, true};
}

std::vector<std::pair<std::string, std::string>> merges_of(const json& model) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const json& e : model.at("merges")) {
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const std::size_t sp = s.find(' ');
      out.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {
      out.emplace_back(e.at(0).get<std::string>(), e.at(1).get<std::string>());
    }
  }
  return out;
}

void byte_level_vocab(const json& j, const Refusal& refuse, GgufVocab& v) {
  const json& model = j.at("model");
  if (flag(model, "byte_fallback", false)) refuse("a byte-level BPE with byte_fallback");
  std::vector<json> norm, pre;
  flatten(j.value("normalizer", json()), "normalizers", norm);
  flatten(j.value("pre_tokenizer", json()), "pretokenizers", pre);
  // NFC is kept: llama.cpp skips it, which changes nothing for text that is already NFC (nearly all text).
  for (const json& n : norm)
    if (type_of(n) != "NFC") refuse("the normalizer " + type_of(n) + " before a byte-level BPE");
  std::vector<PreSplit> splits;
  for (const json& p : pre) {
    if (type_of(p) == "ByteLevel") {
      if (flag(p, "add_prefix_space", true)) refuse("a ByteLevel pre_tokenizer with add_prefix_space=true");
      if (flag(p, "use_regex", true)) splits.push_back(PreSplit::gpt2);
    } else if (type_of(p) == "Split") {
      splits.push_back(*pre_split_from_pattern(p.at("pattern").at("Regex").get<std::string>()));
    } else {
      refuse("the pre_tokenizer " + type_of(p) + " in a byte-level BPE");
    }
  }
  if (splits.size() != 1)
    refuse(std::to_string(splits.size()) + " regex splits before the byte-level step (llama.cpp runs exactly one)");
  const PreSplit split = splits.front();
  v.model = "gpt2";
  v.pre = split == PreSplit::gpt2 ? "gpt-2" : split == PreSplit::llama3 ? "llama-bpe" : "qwen2";
  // llama.cpp ties ignore_merges to the pre-tokenizer: on for llama-bpe, off for the others.
  const bool ignore = flag(model, "ignore_merges", false);
  if (ignore != (split == PreSplit::llama3))
    refuse(std::string("ignore_merges=") + (ignore ? "true" : "false") + " with the " + pre_split_name(split) +
           " split pattern");
  for (const auto& [a, b] : merges_of(model)) {
    if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos)
      refuse("the merge of '" + a + "' and '" + b + "', whose space the GGUF merge list cannot hold");
    v.merges.push_back(a + " " + b);
  }
}

// SentencePiece-style: byte fallback, spaces written as U+2581 by the normalizer (Llama 2: Prepend + Replace) or the
// Metaspace pre-tokenizer without splitting (Mistral), which is what llama.cpp's "llama" tokenizer does itself.
void spm_vocab(const json& j, const Refusal& refuse, GgufVocab& v) {
  const json& model = j.at("model");
  if (!flag(model, "byte_fallback", false)) refuse("a BPE with neither byte_fallback nor a ByteLevel pre_tokenizer");
  std::vector<json> norm, pre;
  flatten(j.value("normalizer", json()), "normalizers", norm);
  flatten(j.value("pre_tokenizer", json()), "pretokenizers", pre);
  bool escapes = false, prefix = false;
  for (const json& n : norm) {
    const std::string t = type_of(n);
    if (t == "Prepend" && n.value("prepend", std::string()) == kMetaspace) {
      prefix = true;
    } else if (t == "Replace" && n.at("pattern").value("String", std::string()) == " " &&
               n.value("content", std::string()) == kMetaspace) {
      escapes = true;
    } else {
      refuse("the normalizer " + t + " in a SentencePiece-style BPE");
    }
  }
  for (const json& p : pre) {
    if (type_of(p) != "Metaspace" || p.value("replacement", std::string()) != kMetaspace)
      refuse("the pre_tokenizer " + type_of(p) + " in a SentencePiece-style BPE");
    if (flag(p, "split", true)) refuse("a Metaspace pre_tokenizer with split=true");
    const std::string scheme = p.value("prepend_scheme", flag(p, "add_prefix_space", true) ? "always" : "never");
    escapes = true;
    prefix = scheme != "never";
  }
  if (!escapes) refuse("a SentencePiece-style BPE that does not write spaces as U+2581");
  v.model = "llama";
  v.pre = "default";
  v.add_space_prefix = prefix;
}

// "llama" scores: llama.cpp merges the adjacent pair whose joined token scores highest, HF the pair of lowest rank;
// scoring each token by the first rank that makes it orders both the same. Tokens no merge makes (characters, bytes,
// specials) score below every merge, so that llama.cpp only forms them where nothing else applies, as HF does.
void spm_scores(const json& model, const std::vector<Entry>& entries, GgufVocab& v) {
  const auto merges = merges_of(model);
  std::unordered_map<std::string, std::int32_t> id_of;
  for (const auto& [tok, id] : model.at("vocab").items()) id_of[tok] = id.get<std::int32_t>();
  v.scores.assign(entries.size(), -static_cast<float>(merges.size() + 1));
  for (std::size_t r = merges.size(); r-- > 0;) {
    const auto it = id_of.find(merges[r].first + merges[r].second);
    if (it != id_of.end() && it->second < static_cast<std::int32_t>(v.scores.size()))
      v.scores[it->second] = -static_cast<float>(r + 1);
  }
}

json read_json(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DataError("cannot read tokenizer file '" + file.string() + "'");
  return json::parse(in);
}

void hf_vocab(const fs::path& file, std::vector<Entry>& entries, GgufVocab& v) {
  const Refusal refuse(file.string());
  const json j = read_json(file);
  const json& model = j.at("model");
  std::vector<json> pre;
  flatten(j.value("pre_tokenizer", json()), "pretokenizers", pre);
  bool byte_level = false;
  for (const json& p : pre) byte_level = byte_level || type_of(p) == "ByteLevel";
  if (byte_level) byte_level_vocab(j, refuse, v);
  else spm_vocab(j, refuse, v);

  const std::string unk = model.value("unk_token", json()).is_string() ? model.at("unk_token").get<std::string>() : "";
  for (const auto& [tok, id_json] : model.at("vocab").items()) {
    const auto id = id_json.get<std::int32_t>();
    std::int32_t type = gguf_token_normal;
    if (v.model == "llama" && tok.size() == 6 && tok.rfind("<0x", 0) == 0 && tok.back() == '>') type = gguf_token_byte;
    if (!unk.empty() && tok == unk) {
      type = gguf_token_unknown;
      v.unk = id;
    }
    entries.at(id) = {tok, type, true};
  }
  for (const json& a : j.value("added_tokens", json::array())) {
    std::string content = a.at("content").get<std::string>();
    if (flag(a, "lstrip", false) || flag(a, "rstrip", false))
      refuse("the added token '" + content + "' with lstrip/rstrip");
    const bool special = flag(a, "special", false);
    // llama.cpp matches a user-defined token against the raw text, where a space is still a space.
    if (!special && v.model == "llama")
      for (std::size_t p; (p = content.find(kMetaspace)) != std::string::npos;) content.replace(p, 3, " ");
    const auto id = a.at("id").get<std::int32_t>();
    const std::int32_t type = v.unk == id ? gguf_token_unknown : special ? gguf_token_control : gguf_token_user_defined;
    entries.at(id) = {content, type, true};
  }
  if (v.model == "llama") spm_scores(model, entries, v);
}

fs::path tokenizer_file(const std::string& spec) {
  std::error_code ec;
  return fs::is_directory(spec, ec) ? fs::path(spec) / "tokenizer.json" : fs::path(spec);
}

}  // namespace

GgufVocab gguf_vocab_build(const std::string& spec, std::int64_t vocab_size) {
  const std::unique_ptr<Tokenizer> tok = tokenizer_load(spec);
  if (tok->vocab_size() > vocab_size)
    throw DataError("tokenizer " + tok->describe() + " has " + std::to_string(tok->vocab_size()) +
                        " ids but the model's vocabulary holds " + std::to_string(vocab_size),
                    "export the model with the tokenizer it was trained with");
  GgufVocab v;
  std::vector<Entry> entries(static_cast<std::size_t>(vocab_size));
  const bool bytes = spec == "byte" || byte_tokenizer_file_is(tokenizer_file(spec).string());
  if (bytes) byte_vocab(entries, v);
  else hf_vocab(tokenizer_file(spec), entries, v);

  std::map<std::string, std::size_t> seen;
  for (std::size_t id = 0; id < entries.size(); ++id) {
    Entry& e = entries[id];
    if (!e.set) e = {"[PAD" + std::to_string(id) + "]", gguf_token_unused, true};
    if (const auto [it, fresh] = seen.emplace(e.text, id); !fresh)
      throw DataError("tokenizer " + tok->describe() + ": ids " + std::to_string(it->second) + " and " +
                          std::to_string(id) + " are both the token '" + e.text +
                          "', which a GGUF vocabulary cannot hold (llama.cpp maps each text to one id)",
                      "export this model with --export.format=hf");
    v.tokens.push_back(e.text);
    v.types.push_back(e.type);
  }
  v.bos = tok->bos_id();
  v.eos = tok->eos_id();
  v.pad = tok->pad_id();
  const std::vector<std::int32_t> plain = tok->encode("a", false), full = tok->encode("a", true);
  v.add_bos = v.bos && full.size() > plain.size() && full.front() == *v.bos;
  v.add_eos = v.eos && full.size() > plain.size() && full.back() == *v.eos;
  v.chat_template = tok->chat_template().text;
  v.describe = v.model + "/" + v.pre + ", " + std::to_string(v.tokens.size()) + " tokens" +
               (v.model == "gpt2" ? ", " + std::to_string(v.merges.size()) + " merges" : std::string()) +
               (v.chat_template.empty() ? "" : ", chat template");
  return v;
}

}  // namespace ranktune
