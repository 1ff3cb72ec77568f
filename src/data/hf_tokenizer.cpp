// HF tokenizer.json BPE: the pipeline of HF `tokenizers` (added-token split -> normalizer -> pre-tokenizer -> BPE
// -> post-processor; decoders in reverse), restricted to the steps the supported families use. Each step below
// states the HF behaviour it reproduces where that behaviour is not obvious.
#include "ranktune/data/hf_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "ranktune/data/bpe.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/nfc.h"
#include "ranktune/data/pre_split.h"
#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

using json = nlohmann::json;

// GPT-2's reversible byte <-> printable character map used by the ByteLevel pre-tokenizer and decoder.
struct ByteMap {
  std::string to_char[256];
  std::unordered_map<char32_t, unsigned char> to_byte;
};

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    char32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : extra++;
      utf8_append(m.to_char[b], cp);
      m.to_byte[cp] = static_cast<unsigned char>(b);
    }
    return m;
  }();
  return map;
}

// Bytes -> UTF-8 with each maximal invalid subsequence replaced by one U+FFFD (Rust's String::from_utf8_lossy).
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  for (std::size_t i = 0; i < n;) {
    const unsigned char b = byte(i);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    std::size_t k = 1;
    while (len > 0 && k < len && i + k < n) {
      const unsigned char c = byte(i + k);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
      ++k;
    }
    if (len > 0 && k == len) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += k;
    }
  }
  return out;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  for (std::size_t i = 0;;) {
    const std::size_t j = s.find(from, i);
    if (j == std::string_view::npos) {
      out.append(s.substr(i));
      return out;
    }
    out.append(s.substr(i, j - i)).append(to);
    i = j + from.size();
  }
}

enum class PrependScheme { always, first, never };

struct NormStep {
  enum Kind { prepend, replace, nfc } kind;
  std::string a, b;
};

struct PreStep {
  enum Kind { byte_level, split, metaspace } kind;
  bool add_prefix_space = false;
  bool use_regex = false;
  PreSplit pattern = PreSplit::gpt2;
  std::string replacement;
  PrependScheme scheme = PrependScheme::always;
  bool split_on_replacement = false;
};

struct DecStep {
  enum Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace } kind;
  std::string a, b;
  char32_t content = 0;
  int start = 0, stop = 0;
  bool drop_first = false;  // Metaspace: the first token loses its replacement characters instead of a space
};

struct AddedToken {
  std::string content;
  std::int32_t id;
  bool special, lstrip, rstrip, normalized;
  std::string pattern;  // what is matched: the content, normalized first for a normalized token (as HF does)
};

// A stretch of text on its way through the pipeline; id >= 0 once it is an added token.
struct Piece {
  std::string text;
  std::size_t orig = 0;  // where it starts in the original text (only "is it 0" matters: Metaspace "first")
  std::int32_t id = -1;
};

class Parser {
 public:
  explicit Parser(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void refuse(const std::string& what) const {
    throw DataError(origin_ + ": " + what + " is not supported",
                    "ranktune reads BPE tokenizer.json files of the GPT-2, Llama 2/3, Mistral, TinyLlama and Qwen2 "
                    "families; docs/data.md lists the supported steps");
  }
  [[noreturn]] void malformed(const std::string& what) const {
    throw DataError(origin_ + ": malformed tokenizer.json: " + what);
  }

  const json& need(const json& obj, const char* key, const char* where) const {
    if (!obj.is_object() || !obj.contains(key)) malformed(std::string(where) + " has no '" + key + "'");
    return obj.at(key);
  }
  std::string str(const json& obj, const char* key, const char* where) const {
    const json& v = need(obj, key, where);
    if (!v.is_string()) malformed(std::string(where) + "." + key + " is not a string");
    return v.get<std::string>();
  }
  bool flag(const json& obj, const char* key, bool dflt) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return dflt;
    if (!obj.at(key).is_boolean()) malformed(std::string(key) + " is not true/false");
    return obj.at(key).get<bool>();
  }
  static std::string type_of(const json& obj) {
    return obj.is_object() && obj.contains("type") && obj.at("type").is_string() ? obj.at("type").get<std::string>()
                                                                                 : std::string("?");
  }
  std::string string_pattern(const json& obj, const char* where) const {
    const json& p = need(obj, "pattern", where);
    if (p.contains("Regex")) refuse(std::string(where) + " with a Regex pattern");
    return str(p, "String", where);
  }
  PrependScheme scheme(const json& obj) const {
    if (obj.contains("prepend_scheme")) {
      const std::string s = str(obj, "prepend_scheme", "Metaspace");
      if (s == "always") return PrependScheme::always;
      if (s == "first") return PrependScheme::first;
      if (s == "never") return PrependScheme::never;
      refuse("Metaspace prepend_scheme '" + s + "'");
    }
    return flag(obj, "add_prefix_space", true) ? PrependScheme::always : PrependScheme::never;
  }

  void normalizer(const json& j, std::vector<NormStep>& out) const {
    if (j.is_null()) return;
    const std::string t = type_of(j);
    if (t == "Sequence") {
      for (const json& s : need(j, "normalizers", "normalizer Sequence")) normalizer(s, out);
    } else if (t == "Prepend") {
      out.push_back({NormStep::prepend, str(j, "prepend", "normalizer Prepend"), {}});
    } else if (t == "Replace") {
      out.push_back({NormStep::replace, string_pattern(j, "normalizer Replace"), str(j, "content", "Replace")});
    } else if (t == "NFC") {
      out.push_back({NormStep::nfc, {}, {}});
    } else {
      refuse("normalizer " + t);
    }
  }

  void pre_tokenizer(const json& j, std::vector<PreStep>& out) const {
    if (j.is_null()) return;
    const std::string t = type_of(j);
    PreStep s{};
    if (t == "Sequence") {
      for (const json& p : need(j, "pretokenizers", "pre_tokenizer Sequence")) pre_tokenizer(p, out);
      return;
    } else if (t == "ByteLevel") {
      s.kind = PreStep::byte_level;
      s.add_prefix_space = flag(j, "add_prefix_space", true);
      s.use_regex = flag(j, "use_regex", true);
    } else if (t == "Split") {
      s.kind = PreStep::split;
      const json& p = need(j, "pattern", "pre_tokenizer Split");
      if (!p.contains("Regex")) refuse("pre_tokenizer Split with a String pattern");
      const std::string re = str(p, "Regex", "Split.pattern");
      const auto kind = pre_split_from_pattern(re);
      if (!kind) refuse("pre_tokenizer Split regex '" + re + "' (known: the GPT-2, Llama 3 and Qwen2 patterns)");
      s.pattern = *kind;
      const std::string behavior = str(j, "behavior", "Split");
      if (behavior != "Isolated") refuse("pre_tokenizer Split behavior " + behavior);
      if (flag(j, "invert", false)) refuse("pre_tokenizer Split with invert=true");
    } else if (t == "Metaspace") {
      s.kind = PreStep::metaspace;
      s.replacement = str(j, "replacement", "Metaspace");
      s.scheme = scheme(j);
      s.split_on_replacement = flag(j, "split", true);
    } else {
      refuse("pre_tokenizer " + t);
    }
    out.push_back(std::move(s));
  }

  void decoder(const json& j, std::vector<DecStep>& out) const {
    if (j.is_null()) return;
    const std::string t = type_of(j);
    DecStep d{};
    if (t == "Sequence") {
      for (const json& s : need(j, "decoders", "decoder Sequence")) decoder(s, out);
      return;
    } else if (t == "ByteLevel") {
      d.kind = DecStep::byte_level;
    } else if (t == "Replace") {
      d.kind = DecStep::replace;
      d.a = string_pattern(j, "decoder Replace");
      d.b = str(j, "content", "decoder Replace");
    } else if (t == "ByteFallback") {
      d.kind = DecStep::byte_fallback;
    } else if (t == "Fuse") {
      d.kind = DecStep::fuse;
    } else if (t == "Strip") {
      d.kind = DecStep::strip;
      const std::string c = str(j, "content", "decoder Strip");
      const Utf8Char ch = c.empty() ? Utf8Char{} : utf8_decode(c, 0);
      if (c.empty() || ch.len != c.size()) malformed("decoder Strip content must be one character");
      d.content = ch.cp;
      d.start = need(j, "start", "decoder Strip").get<int>();
      d.stop = need(j, "stop", "decoder Strip").get<int>();
    } else if (t == "Metaspace") {
      d.kind = DecStep::metaspace;
      d.a = str(j, "replacement", "decoder Metaspace");
      d.drop_first = scheme(j) != PrependScheme::never;
    } else {
      refuse("decoder " + t);
    }
    out.push_back(std::move(d));
  }

  // TemplateProcessing's single-sequence template -> the ids before and after the text.
  void post_processor(const json& j, std::vector<std::int32_t>& prefix, std::vector<std::int32_t>& suffix) const {
    if (j.is_null()) return;
    const std::string t = type_of(j);
    if (t == "Sequence") {
      for (const json& p : need(j, "processors", "post_processor Sequence")) post_processor(p, prefix, suffix);
    } else if (t == "ByteLevel") {
      return;  // only adjusts offsets
    } else if (t == "TemplateProcessing") {
      const json& specials = need(j, "special_tokens", "TemplateProcessing");
      bool seen_sequence = false;
      for (const json& item : need(j, "single", "TemplateProcessing")) {
        if (item.contains("Sequence")) {
          if (str(item.at("Sequence"), "id", "TemplateProcessing.single") != "A") refuse("a single template using B");
          seen_sequence = true;
        } else if (item.contains("SpecialToken")) {
          const std::string name = str(item.at("SpecialToken"), "id", "TemplateProcessing.single");
          if (!specials.contains(name)) malformed("TemplateProcessing special token '" + name + "' is not defined");
          for (const json& id : need(specials.at(name), "ids", "TemplateProcessing.special_tokens")) {
            (seen_sequence ? suffix : prefix).push_back(id.get<std::int32_t>());
          }
        } else {
          malformed("TemplateProcessing.single has an item that is neither Sequence nor SpecialToken");
        }
      }
    } else {
      refuse("post_processor " + t);
    }
  }

  BpeModel model(const json& j) const {
    const std::string t = type_of(j);
    if (t != "BPE") refuse("model type " + t);
    if (j.contains("dropout") && !j.at("dropout").is_null() && j.at("dropout").get<double>() != 0.0) {
      refuse("BPE dropout");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (j.contains(key) && !j.at(key).is_null() && !j.at(key).get<std::string>().empty()) {
        refuse(std::string("BPE ") + key);
      }
    }
    BpeOptions opt;
    if (j.contains("unk_token") && !j.at("unk_token").is_null()) opt.unk_token = str(j, "unk_token", "model");
    opt.byte_fallback = flag(j, "byte_fallback", false);
    opt.fuse_unk = flag(j, "fuse_unk", false);
    opt.ignore_merges = flag(j, "ignore_merges", false);

    TokenMap vocab;
    const json& v = need(j, "vocab", "model");
    if (!v.is_object()) malformed("model.vocab is not an object");
    vocab.reserve(v.size());
    for (const auto& [tok, id] : v.items()) vocab.emplace(tok, id.get<std::int32_t>());

    std::vector<std::pair<std::string, std::string>> merges;
    const json& m = need(j, "merges", "model");
    merges.reserve(m.size());
    for (const json& e : m) {
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const std::size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          malformed("merge '" + s + "' is not two tokens separated by one space");
        }
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2) {
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        malformed("a merge is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
    return BpeModel(std::move(vocab), merges, std::move(opt), origin_);
  }

  std::vector<AddedToken> added_tokens(const json& j) const {
    std::vector<AddedToken> out;
    if (j.is_null()) return out;
    for (const json& t : j) {
      AddedToken a{str(t, "content", "added_tokens[]"),
                   need(t, "id", "added_tokens[]").get<std::int32_t>(),
                   flag(t, "special", false),
                   flag(t, "lstrip", false),
                   flag(t, "rstrip", false),
                   flag(t, "normalized", false),
                   {}};
      if (flag(t, "single_word", false)) refuse("added token '" + a.content + "' with single_word=true");
      if (a.content.empty()) malformed("an added token has empty content");
      out.push_back(std::move(a));
    }
    return out;
  }

  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const json& j, const std::string& origin, const std::string& config_json)
      : model_(Parser(origin).model(Parser(origin).need(j, "model", "tokenizer.json"))), origin_(origin) {
    Parser p(origin);
    for (const char* key : {"truncation", "padding"}) {
      if (j.contains(key) && !j.at(key).is_null()) p.refuse(std::string(key) + " settings inside tokenizer.json");
    }
    added_ = p.added_tokens(j.value("added_tokens", json()));
    p.normalizer(j.value("normalizer", json()), norm_);
    p.pre_tokenizer(j.value("pre_tokenizer", json()), pre_);
    p.post_processor(j.value("post_processor", json()), prefix_, suffix_);
    p.decoder(j.value("decoder", json()), dec_);
    vocab_size_ = model_.size();
    for (AddedToken& a : added_) {
      a.pattern = a.normalized ? normalize(a.content) : a.content;
      vocab_size_ = std::max(vocab_size_, a.id + 1);
      added_by_id_[a.id] = &a;
      added_by_content_[a.content] = a.id;
      if (!a.pattern.empty()) added_starts_[a.normalized][static_cast<unsigned char>(a.pattern[0])] = true;
    }
    for (std::int32_t id : prefix_) check_id(p, id, "post_processor");
    for (std::int32_t id : suffix_) check_id(p, id, "post_processor");
    set_special_ids(config_json, p);
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_special) const override {
    return encode_from(text, add_special, 0);
  }

  std::vector<std::int32_t> encode_continuation(std::string_view text) const override {
    return encode_from(text, false, 1);
  }

  // `base` is where the text starts in the whole input: 0, or past it for a continuation.
  std::vector<std::int32_t> encode_from(std::string_view text, bool add_special, std::size_t base) const {
    utf8_validate(text, "text to tokenize");
    std::vector<Piece> pieces;
    for (Piece& raw : split_added(std::string(text), base, false)) {
      if (raw.id >= 0) {
        pieces.push_back(std::move(raw));
        continue;
      }
      for (Piece& q : split_added(normalize(raw.text), raw.orig, true)) pieces.push_back(std::move(q));
    }
    for (const PreStep& step : pre_) pieces = pre_tokenize(step, std::move(pieces));

    std::vector<std::int32_t> ids;
    if (add_special) ids = prefix_;
    for (const Piece& q : pieces) {
      if (q.id >= 0) {
        ids.push_back(q.id);
      } else {
        model_.tokenize(q.text, ids);
      }
    }
    if (add_special) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special) const override {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (std::int32_t id : ids) {
      if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
        // HF hands the decoder a normalized token's normalized form ("madeup" -> "▁madeup" under Llama 2's).
        if (!(skip_special && it->second->special)) toks.push_back(it->second->pattern);
      } else if (const std::string* t = model_.id_to_token(id)) {
        toks.push_back(*t);
      }
    }
    if (dec_.empty()) {
      std::string out;
      for (std::size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
      return out;
    }
    for (const DecStep& d : dec_) toks = apply(d, std::move(toks));
    std::string out;
    for (const std::string& t : toks) out += t;
    return out;
  }

  std::int32_t vocab_size() const override { return vocab_size_; }

  std::optional<std::int32_t> token_id(std::string_view token) const override {
    if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) return it->second;
    return model_.token_to_id(token);
  }

  std::string describe() const override {
    std::string kind = "sentencepiece-style";
    for (const PreStep& s : pre_) {
      if (s.kind == PreStep::byte_level) kind = "byte-level";
    }
    for (const PreStep& s : pre_) {
      if (s.kind == PreStep::split) kind += std::string(" ") + pre_split_name(s.pattern);
    }
    return "hf-bpe " + kind + " (" + std::to_string(vocab_size_) + ") from " + origin_;
  }

 private:
  void check_id(const Parser& p, std::int32_t id, const char* where) const {
    if (id < 0 || id >= vocab_size_) p.malformed(std::string(where) + " uses id " + std::to_string(id));
  }

  // bos/eos/pad: tokenizer_config.json if given, else the post-processor template, else the usual names.
  void set_special_ids(const std::string& config_json, const Parser& p) {
    auto lookup = [&](const json& v) -> std::optional<std::int32_t> {
      std::string name;
      if (v.is_string()) name = v.get<std::string>();
      if (v.is_object() && v.contains("content")) name = v.at("content").get<std::string>();
      if (name.empty()) return std::nullopt;
      auto id = token_id(name);
      if (!id) p.malformed("tokenizer_config.json names '" + name + "', which is not a token");
      return id;
    };
    auto first_known = [&](std::initializer_list<const char*> names) -> std::optional<std::int32_t> {
      for (const char* n : names) {
        if (auto id = token_id(n)) return id;
      }
      return std::nullopt;
    };
    if (!config_json.empty()) {
      const json c = json::parse(config_json, nullptr, false);
      if (c.is_discarded() || !c.is_object()) p.malformed("tokenizer_config.json is not a JSON object");
      bos_ = lookup(c.value("bos_token", json()));
      eos_ = lookup(c.value("eos_token", json()));
      pad_ = lookup(c.value("pad_token", json()));
      return;
    }
    bos_ = prefix_.empty() ? first_known({"<s>", "<|begin_of_text|>", "<bos>"}) : prefix_.front();
    eos_ = suffix_.empty() ? first_known({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"}) : suffix_.front();
    pad_ = first_known({"<pad>", "<|pad|>", "<|finetune_right_pad_id|>"});
  }

  std::string normalize(std::string s) const {
    for (const NormStep& n : norm_) {
      if (n.kind == NormStep::prepend) {
        if (!s.empty()) s = n.a + s;
      } else if (n.kind == NormStep::nfc) {
        s = nfc_normalize(std::move(s));
      } else {
        s = replace_all(s, n.a, n.b);
      }
    }
    return s;
  }

  // Added tokens found leftmost-longest (HF's Aho-Corasick), with lstrip/rstrip taking the adjacent whitespace.
  // As in HF, every match is found on the text before any strip: an rstrip takes whitespace that holds the next
  // match (" y" in "<m>  y"), and that match is still a token; the text after it starts where it ends.
  std::vector<Piece> split_added(const std::string& text, std::size_t orig, bool normalized) const {
    std::vector<Piece> out;
    std::size_t done = 0;
    auto emit_text = [&](std::size_t a, std::size_t b) {
      if (b > a) out.push_back({text.substr(a, b - a), orig + a, -1});
    };
    for (std::size_t i = 0; i < text.size();) {
      if (!added_starts_[normalized][static_cast<unsigned char>(text[i])]) {  // most bytes start no added token
        i += utf8_len(static_cast<unsigned char>(text[i]));
        continue;
      }
      const AddedToken* best = nullptr;
      for (const AddedToken& a : added_) {
        if (a.normalized == normalized && !a.pattern.empty() && text.compare(i, a.pattern.size(), a.pattern) == 0 &&
            (best == nullptr || a.pattern.size() > best->pattern.size())) {
          best = &a;
        }
      }
      if (best == nullptr) {
        i += utf8_len(static_cast<unsigned char>(text[i]));
        continue;
      }
      std::size_t start = i, stop = i + best->pattern.size();
      const std::size_t match_end = stop;
      if (best->lstrip) {
        while (start > done) {
          std::size_t b = start - 1;
          while (b > done && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          if (!unicode_is_space(utf8_decode(text, b).cp)) break;
          start = b;
        }
        start = std::max(start, done);  // never before the previous token's end, even past this match's start
      }
      if (best->rstrip) {
        while (stop < text.size()) {
          const Utf8Char c = utf8_decode(text, stop);
          if (!unicode_is_space(c.cp)) break;
          stop += c.len;
        }
      }
      if (start > stop) {
        throw DataError("added token '" + best->content + "' (lstrip) lies inside the whitespace that the rstrip of " +
                            "the added token before it takes: HF tokenizers fails on this text too " +
                            "(\"AddedVocabulary bad split\")",
                        "remove that whitespace from the text, or set lstrip/rstrip to false in tokenizer.json");
      }
      emit_text(done, start);
      // Pushed forward to the end of that whitespace, the token is empty, and HF drops empty pieces.
      if (stop > start) out.push_back({text.substr(start, stop - start), orig + start, best->id});
      done = stop;
      i = match_end;
    }
    emit_text(done, text.size());
    return out;
  }

  std::vector<Piece> pre_tokenize(const PreStep& step, std::vector<Piece> in) const {
    std::vector<Piece> out;
    out.reserve(in.size());
    for (Piece& q : in) {
      if (q.id >= 0) {
        out.push_back(std::move(q));
        continue;
      }
      switch (step.kind) {
        case PreStep::byte_level: {
          if (step.add_prefix_space && q.text.front() != ' ') q.text.insert(0, " ");
          std::vector<std::string_view> parts;
          if (step.use_regex) {
            parts = pre_split(PreSplit::gpt2, q.text);
          } else {
            parts.push_back(q.text);
          }
          for (std::string_view part : parts) {
            std::string mapped;
            for (char c : part) mapped += byte_map().to_char[static_cast<unsigned char>(c)];
            out.push_back({std::move(mapped), q.orig + static_cast<std::size_t>(part.data() - q.text.data()), -1});
          }
          break;
        }
        case PreStep::split:
          for (std::string_view part : pre_split(step.pattern, q.text)) {
            out.push_back({std::string(part), q.orig + static_cast<std::size_t>(part.data() - q.text.data()), -1});
          }
          break;
        case PreStep::metaspace: {
          std::string s = replace_all(q.text, " ", step.replacement);
          const bool starts = s.compare(0, step.replacement.size(), step.replacement) == 0;
          if (!starts &&
              (step.scheme == PrependScheme::always || (step.scheme == PrependScheme::first && q.orig == 0))) {
            s.insert(0, step.replacement);
          }
          if (!step.split_on_replacement) {
            out.push_back({std::move(s), q.orig, -1});
            break;
          }
          // MergedWithNext: each replacement character starts a new piece.
          std::size_t begin = 0;
          for (std::size_t k = s.find(step.replacement, 1); k != std::string::npos;
               k = s.find(step.replacement, k + 1)) {
            if (k > begin) out.push_back({s.substr(begin, k - begin), q.orig + begin, -1});
            begin = k;
          }
          out.push_back({s.substr(begin), q.orig + begin, -1});
          break;
        }
      }
    }
    return out;
  }

  static std::vector<std::string> apply(const DecStep& d, std::vector<std::string> toks) {
    switch (d.kind) {
      case DecStep::byte_level: {
        std::string bytes;
        const ByteMap& m = byte_map();
        for (const std::string& t : toks) {
          std::string mine;
          bool all = true;
          for (std::size_t i = 0; i < t.size() && all;) {
            const Utf8Char c = utf8_decode(t, i);
            auto it = m.to_byte.find(c.cp);
            if (it == m.to_byte.end()) {
              all = false;
            } else {
              mine += static_cast<char>(it->second);
            }
            i += c.len;
          }
          bytes += all ? mine : t;
        }
        return {utf8_lossy(bytes)};
      }
      case DecStep::replace:
        for (std::string& t : toks) t = replace_all(t, d.a, d.b);
        return toks;
      case DecStep::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          if (utf8_lossy(pending) == pending) {
            out.push_back(pending);
          } else {
            for (std::size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (std::string& t : toks) {
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
              std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]))) {
            pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        return out;
      }
      case DecStep::fuse: {
        std::string all;
        for (const std::string& t : toks) all += t;
        return {all};
      }
      case DecStep::strip:
        for (std::string& t : toks) {
          std::vector<std::pair<char32_t, std::size_t>> cs;  // (code point, byte offset)
          for (std::size_t i = 0; i < t.size(); i += utf8_len(static_cast<unsigned char>(t[i]))) {
            cs.emplace_back(utf8_decode(t, i).cp, i);
          }
          std::size_t a = 0, b = cs.size();
          while (a < cs.size() && static_cast<int>(a) < d.start && cs[a].first == d.content) ++a;
          for (int k = 0; k < d.stop && b > a && cs[b - 1].first == d.content; ++k) --b;
          const std::size_t from = a < cs.size() ? cs[a].second : t.size();
          const std::size_t to = b < cs.size() ? cs[b].second : t.size();
          t = t.substr(from, to > from ? to - from : 0);
        }
        return toks;
      case DecStep::metaspace:
        for (std::size_t i = 0; i < toks.size(); ++i) {
          toks[i] = replace_all(toks[i], d.a, i == 0 && d.drop_first ? "" : " ");
        }
        return toks;
    }
    return toks;
  }

  BpeModel model_;
  std::string origin_;
  std::vector<AddedToken> added_;
  std::unordered_map<std::int32_t, const AddedToken*> added_by_id_;
  std::unordered_map<std::string, std::int32_t> added_by_content_;
  bool added_starts_[2][256] = {};  // [normalized][byte]: some added token's pattern starts with that byte
  std::vector<NormStep> norm_;
  std::vector<PreStep> pre_;
  std::vector<DecStep> dec_;
  std::vector<std::int32_t> prefix_, suffix_;
  std::int32_t vocab_size_ = 0;
};

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError("cannot read " + path.string() + ": " + std::strerror(errno),
                    "data.tokenizer is 'byte' or the path of a HF tokenizer.json (or of the directory holding it)");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::unique_ptr<Tokenizer> hf_tokenizer_parse(const std::string& json_text, const std::string& origin,
                                              const std::string& config_json) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw DataError(origin + ": not valid JSON: " + e.what());
  }
  try {
    return std::make_unique<HfTokenizer>(j, origin, config_json);
  } catch (const json::exception& e) {
    throw DataError(origin + ": malformed tokenizer.json: " + e.what());
  }
}

std::unique_ptr<Tokenizer> hf_tokenizer_load(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  const std::filesystem::path config = file.parent_path() / "tokenizer_config.json";
  return hf_tokenizer_parse(read_text(file), file.string(),
                            std::filesystem::exists(config) ? read_text(config) : std::string());
}

}  // namespace ranktune
