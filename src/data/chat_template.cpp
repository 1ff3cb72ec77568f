// Two ways to render a conversation. A model template (the Jinja text the model ships) is rendered whole and
// tokenized as transformers does; its assistant turns are found by rendering prefixes of the conversation. A built-in
// family renders to segments (text or special token id, trained or not) and encode_segments does the rest.
#include "ranktune/data/chat_template.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/jinja.h"
#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

// Python's str.strip(), which the families' Jinja templates use (`| trim`): Unicode whitespace and U+001C-001F.
std::string strip(std::string_view s) {
  auto is_ws = [](char32_t c) { return unicode_is_space(c) || (c >= 0x1C && c <= 0x1F); };
  std::size_t a = 0, b = s.size();
  while (a < b) {
    const Utf8Char c = utf8_decode(s, a);
    if (!is_ws(c.cp)) break;
    a += c.len;
  }
  while (b > a) {
    std::size_t p = b - 1;
    while (p > a && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    if (!is_ws(utf8_decode(s, p).cp)) break;
    b = p;
  }
  return std::string(s.substr(a, b - a));
}

std::int32_t need_token(const Tokenizer& tok, ChatFamily f, std::string_view name) {
  if (auto id = tok.token_id(name)) return *id;
  throw DataError(std::string("chat template ") + chat_family_name(f) + " needs the token " + std::string(name) +
                      ", which " + tok.describe() + " does not have",
                  "choose the template of the model's family (data.chat_template)");
}

class Render {
 public:
  void text(std::string s, bool train = false) { segs_.push_back({std::move(s), -1, train}); }
  void token(std::int32_t id, bool train = false) { segs_.push_back({{}, id, train}); }
  std::vector<Segment>& segments() { return segs_; }

 private:
  std::vector<Segment> segs_;
};

void check_roles(const std::vector<ChatMessage>& msgs) {
  if (msgs.empty()) throw DataError("a chat record has no messages");
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    const std::string& r = msgs[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      throw DataError("message " + std::to_string(i) + " has role '" + r + "'", "roles are system, user, assistant");
    }
  }
}

void check_alternation(ChatFamily f, const std::vector<ChatMessage>& msgs, std::size_t first) {
  for (std::size_t i = first; i < msgs.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (msgs[i].role != want) {
      throw DataError(std::string("the ") + chat_family_name(f) +
                      " template needs an optional system message, then "
                      "user and assistant alternating; message " +
                      std::to_string(i) + " is " + msgs[i].role);
    }
  }
}

void render_llama3(const Tokenizer& tok, const std::vector<ChatMessage>& msgs, Render& r) {
  const ChatFamily f = ChatFamily::llama3;
  r.token(need_token(tok, f, "<|begin_of_text|>"));
  const std::int32_t start = need_token(tok, f, "<|start_header_id|>"), end = need_token(tok, f, "<|end_header_id|>"),
                     eot = need_token(tok, f, "<|eot_id|>");
  for (const ChatMessage& m : msgs) {
    const bool train = m.role == "assistant";
    r.token(start);
    r.text(m.role);
    r.token(end);
    r.text("\n\n");
    r.text(strip(m.content), train);
    r.token(eot, train);
  }
}

void render_chatml(const Tokenizer& tok, const std::vector<ChatMessage>& msgs, Render& r) {
  const ChatFamily f = ChatFamily::chatml;
  const std::int32_t start = need_token(tok, f, "<|im_start|>"), end = need_token(tok, f, "<|im_end|>");
  for (const ChatMessage& m : msgs) {
    const bool train = m.role == "assistant";
    r.token(start);
    r.text(m.role + "\n");
    r.text(m.content, train);
    r.token(end, train);
    r.text("\n");
  }
}

// Llama 2: every exchange is "<s>[INST] user [/INST] answer </s>", the system prompt inside the first [INST] in
// <<SYS>> tags. Mistral: one <s>, "[INST] user [/INST] answer</s>", the system prompt before the first user text.
void render_inst(const Tokenizer& tok, ChatFamily f, const std::vector<ChatMessage>& msgs, Render& r) {
  const std::int32_t bos = need_token(tok, f, "<s>"), eos = need_token(tok, f, "</s>");
  std::size_t first = 0;
  std::string system;
  if (msgs[0].role == "system") system = strip(msgs[0].content), first = 1;
  check_alternation(f, msgs, first);
  const bool llama2 = f == ChatFamily::llama2;
  if (!llama2) r.token(bos);
  for (std::size_t i = first; i < msgs.size(); ++i) {
    const std::string content = strip(msgs[i].content);
    if (msgs[i].role == "user") {
      std::string user = content;
      if (i == first && !system.empty()) {
        user = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
      }
      if (llama2) r.token(bos);
      r.text("[INST] " + user + " [/INST]");
    } else {
      r.text(llama2 ? " " + content + " " : " " + content, true);
      r.token(eos, true);
    }
  }
}

// No special tokens beyond bos/eos: "User: ...\n", "Assistant: " then the trained reply and eos (or "\n").
void render_plain(const Tokenizer& tok, const std::vector<ChatMessage>& msgs, Render& r) {
  if (tok.bos_id()) r.token(*tok.bos_id());
  for (const ChatMessage& m : msgs) {
    if (m.role == "assistant") {
      r.text("Assistant: ");
      r.text(m.content, true);
      if (tok.eos_id()) {
        r.token(*tok.eos_id(), true);
      } else {
        r.text("\n", true);
      }
    } else {
      r.text((m.role == "user" ? "User: " : "System: ") + m.content + "\n");
    }
  }
}

}  // namespace

const char* chat_family_name(ChatFamily f) {
  switch (f) {
    case ChatFamily::llama3: return "llama3";
    case ChatFamily::llama2: return "llama2";
    case ChatFamily::mistral: return "mistral";
    case ChatFamily::chatml: return "chatml";
    case ChatFamily::plain: return "plain";
  }
  return "?";
}

ChatFamily chat_family_detect(const Tokenizer& tok) {
  if (tok.token_id("<|start_header_id|>")) return ChatFamily::llama3;
  if (tok.token_id("<|im_start|>")) return ChatFamily::chatml;
  if (tok.token_id("[INST]")) return ChatFamily::mistral;
  if (tok.token_id("<s>") && tok.token_id("</s>")) return ChatFamily::llama2;
  return ChatFamily::plain;
}

namespace {

using json = nlohmann::json;

constexpr const char* kFamilyHint = "llama3, llama2, mistral, chatml or plain; docs/data.md shows each layout";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read " + path.string() + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& origin) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw DataError(origin + " is not a JSON object");
  return j;
}

// A special token in tokenizer_config.json is a string or an AddedToken object; str() of either is its content.
void read_special_tokens(const json& j, std::vector<std::pair<std::string, std::string>>& out) {
  for (const char* name :
       {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!j.contains(name)) continue;
    const json& v = j.at(name);
    std::string text;
    if (v.is_string()) {
      text = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
      text = v.at("content").get<std::string>();
    } else {
      continue;  // null: not set
    }
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& kv) { return kv.first == name; });
    if (it != out.end()) {
      it->second = text;
    } else {
      out.emplace_back(name, text);
    }
  }
}

JinjaList messages_value(const std::vector<ChatMessage>& msgs) {
  JinjaList list;
  list.reserve(msgs.size());
  for (const ChatMessage& m : msgs)
    list.push_back(JinjaValue::dict({{"role", JinjaValue(m.role)}, {"content", JinjaValue(m.content)}}));
  return list;
}

// What transformers' apply_chat_template hands the template: messages (the first n), tools and documents (None
// here), add_generation_prompt, and the tokenizer's named special tokens.
std::string render_template(const ChatFormat& f, const JinjaList& msgs, std::size_t n, bool gen) {
  JinjaDict vars;
  vars.emplace_back("messages",
                    JinjaValue::list(JinjaList(msgs.begin(), msgs.begin() + static_cast<std::ptrdiff_t>(n))));
  vars.emplace_back("tools", JinjaValue(nullptr));
  vars.emplace_back("documents", JinjaValue(nullptr));
  vars.emplace_back("add_generation_prompt", JinjaValue(gen));
  for (const auto& [name, text] : f.source().special_tokens) vars.emplace_back(name, JinjaValue(text));
  return f.jinja().render(vars);
}

// The first token of `ids` at which encoding `prefix` (the text up to a boundary) disagrees: tokens before it lie
// wholly before the boundary. `*straddles` is set when encoding the prefix alone gives more tokens from there on,
// i.e. the token of `ids` at the returned index starts before the boundary.
std::size_t tokens_before(const Tokenizer& tok, std::string_view prefix, const std::vector<std::int32_t>& ids,
                          bool* straddles) {
  const std::vector<std::int32_t> head = tok.encode(prefix, false);
  const auto at =
      static_cast<std::size_t>(std::mismatch(head.begin(), head.end(), ids.begin(), ids.end()).first - head.begin());
  if (straddles) *straddles = at < head.size();
  return at;
}

// The tokens of `ids` before each cut, when encoding the text piece by piece (cut at every turn boundary) gives
// exactly `ids`: then no token spans a boundary, which is the usual case (turns start after a role header and end
// with an end-of-turn token). Empty when it does not; the boundaries are then found one by one (tokens_before).
std::vector<std::size_t> tokens_at_cuts(const Tokenizer& tok, std::string_view text,
                                        const std::vector<std::size_t>& cuts, const std::vector<std::int32_t>& ids) {
  std::vector<std::size_t> at;
  std::size_t from = 0, n = 0;
  for (std::size_t k = 0; k <= cuts.size(); ++k) {
    const std::size_t to = k < cuts.size() ? cuts[k] : text.size();
    const std::string_view piece = text.substr(from, to - from);
    const std::vector<std::int32_t> part = from == 0 ? tok.encode(piece, false) : tok.encode_continuation(piece);
    if (n + part.size() > ids.size() ||
        !std::equal(part.begin(), part.end(), ids.begin() + static_cast<std::ptrdiff_t>(n)))
      return {};
    n += part.size();
    if (k < cuts.size()) at.push_back(n);
    from = to;
  }
  if (n != ids.size()) return {};
  return at;
}

TokenizedDoc encode_with_template(const Tokenizer& tok, const ChatFormat& f, const std::vector<ChatMessage>& msgs) {
  if (msgs.empty()) throw DataError("a chat record has no messages");
  const std::string& origin = f.source().origin;
  const JinjaList all = messages_value(msgs);
  const std::string full = render_template(f, all, msgs.size(), false);
  std::vector<std::pair<std::size_t, std::size_t>> spans;  // byte ranges of the assistant turns in `full`
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].role != "assistant") continue;
    std::string prompt;
    try {
      prompt = render_template(f, all, i, true);
    } catch (const DataError& e) {
      throw DataError(std::string(e.what()) + " (rendering messages[:" + std::to_string(i) +
                          "] with add_generation_prompt=true: the prompt of assistant message " + std::to_string(i) +
                          ")",
                      e.hint());
    }
    const std::string upto = i + 1 == msgs.size() ? full : render_template(f, all, i + 1, false);
    const char* broken = !upto.starts_with(prompt) ? "the prompt rendered with add_generation_prompt=true is not a "
                                                     "prefix of the conversation with the reply"
                         : !full.starts_with(upto) ? "the template renders it differently once later messages follow"
                                                   : nullptr;
    if (broken) {  // a skipped record keeps only the message, so the fix is in it
      throw DataError(origin + ": cannot find the trained span of assistant message " + std::to_string(i) + ": " +
                      broken + "; name a built-in format instead (--data.chat_template=" + kFamilyHint + ")");
    }
    spans.emplace_back(prompt.size(), upto.size());
  }
  TokenizedDoc doc;
  doc.ids = tok.encode(full, false);  // what apply_chat_template(tokenize=True) gives: add_special_tokens=False
  doc.train.assign(doc.ids.size(), 0);
  // A token is trained when it overlaps an assistant turn (HF's rule for return_assistant_tokens_mask); the ids stay
  // exactly those of the whole text.
  std::vector<std::size_t> cuts;
  for (const auto& [a, b] : spans) {
    if (a == b) continue;
    if (a > 0) cuts.push_back(a);
    if (b < full.size()) cuts.push_back(b);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  const std::vector<std::size_t> at = cuts.empty() ? std::vector<std::size_t>()
                                                   : tokens_at_cuts(tok, full, cuts, doc.ids);
  if (cuts.empty() || !at.empty()) {
    auto token_at = [&](std::size_t c) {
      if (c == 0) return std::size_t{0};
      if (c == full.size()) return doc.ids.size();
      return at[static_cast<std::size_t>(std::lower_bound(cuts.begin(), cuts.end(), c) - cuts.begin())];
    };
    for (const auto& [a, b] : spans)
      if (a != b)
        for (std::size_t k = token_at(a); k < token_at(b); ++k) doc.train[k] = 1;
    return doc;
  }
  // Some token spans a boundary: the tokens before boundary c are where encoding the text up to c stops agreeing
  // with the whole (a token straddling c overlaps the turn, so it is trained).
  for (const auto& [a, b] : spans) {
    if (a == b) continue;
    const std::size_t first = a == 0 ? 0 : tokens_before(tok, std::string_view(full).substr(0, a), doc.ids, nullptr);
    bool straddles = false;
    std::size_t last = b == full.size() ? doc.ids.size()
                                        : tokens_before(tok, std::string_view(full).substr(0, b), doc.ids, &straddles);
    if (straddles) last = std::min(last + 1, doc.ids.size());
    for (std::size_t k = first; k < last; ++k) doc.train[k] = 1;
  }
  return doc;
}

}  // namespace

TokenizerChatTemplate chat_template_parse(const std::string& config_json, const std::string& config_origin,
                                          const std::string& jinja, const std::string& jinja_origin,
                                          const std::string& special_tokens_map_json) {
  TokenizerChatTemplate t;
  json config = json::object();
  if (!config_json.empty()) config = parse_json(config_json, config_origin);
  read_special_tokens(config, t.special_tokens);
  // transformers reads the legacy special_tokens_map.json only for a config without added_tokens_decoder; its
  // entries then override the config's.
  if (!special_tokens_map_json.empty() && !config.contains("added_tokens_decoder"))
    read_special_tokens(parse_json(special_tokens_map_json, "special_tokens_map.json"), t.special_tokens);
  if (!jinja.empty()) {
    t.text = jinja;
    t.origin = jinja_origin;
    return t;
  }
  const json& ct = config.contains("chat_template") ? config.at("chat_template") : json();
  if (ct.is_string()) {
    t.text = ct.get<std::string>();
  } else if (ct.is_array()) {
    for (const json& e : ct) {
      if (!e.is_object() || !e.contains("name") || !e.contains("template") || !e.at("name").is_string() ||
          !e.at("template").is_string())
        throw DataError(config_origin + ": chat_template is a list whose items are not {\"name\", \"template\"}");
      if (e.at("name").get<std::string>() == "default") t.text = e.at("template").get<std::string>();
    }
    if (t.text.empty())
      throw DataError(config_origin + ": chat_template lists named templates but none is named \"default\"",
                      "ranktune renders the default template; choose a built-in format with --data.chat_template");
  } else if (!ct.is_null()) {
    throw DataError(config_origin + ": chat_template is neither a string nor a list of named templates");
  }
  if (!t.text.empty()) t.origin = config_origin;
  return t;
}

TokenizerChatTemplate chat_template_read(const std::string& tokenizer_path) {
  namespace fs = std::filesystem;
  fs::path dir(tokenizer_path);
  if (!fs::is_directory(dir)) dir = dir.parent_path();
  const fs::path config = dir / "tokenizer_config.json", jinja = dir / "chat_template.jinja",
                 special = dir / "special_tokens_map.json";
  auto text = [](const fs::path& p) { return fs::exists(p) ? read_file(p) : std::string(); };
  return chat_template_parse(text(config), config.string(), text(jinja), jinja.string(), text(special));
}

ChatFormat::ChatFormat(ChatFamily family) : family_(family) {}

ChatFormat ChatFormat::model_template(const TokenizerChatTemplate& source) {
  ChatFormat f(ChatFamily::plain);
  f.source_ = source;
  f.jinja_ = std::make_shared<const JinjaTemplate>(source.text, source.origin);
  return f;
}

std::string ChatFormat::name() const { return is_template() ? "template" : chat_family_name(family_); }

std::string ChatFormat::describe() const {
  if (is_template()) return "model template (" + source_.origin + ")";
  return std::string("built-in ") + chat_family_name(family_);
}

ChatFormat chat_format_parse(std::string_view name, const Tokenizer& tok) {
  const TokenizerChatTemplate& own = tok.chat_template();
  if (name == "auto" || name == "template") {
    if (!own.text.empty()) return ChatFormat::model_template(own);
    if (name == "auto" && dynamic_cast<const ByteTokenizer*>(&tok)) return ChatFamily::plain;
    throw DataError("data.chat_template=" + std::string(name) + ": the tokenizer " + tok.describe() +
                        " comes without a chat template (no chat_template.jinja, no chat_template in "
                        "tokenizer_config.json), so messages records have no format",
                    std::string("name a built-in format: --data.chat_template=") +
                        chat_family_name(chat_family_detect(tok)) + " (its special tokens suggest it), or one of " +
                        kFamilyHint);
  }
  for (ChatFamily f :
       {ChatFamily::llama3, ChatFamily::llama2, ChatFamily::mistral, ChatFamily::chatml, ChatFamily::plain}) {
    if (name == chat_family_name(f)) return f;
  }
  throw DataError("unknown chat template '" + std::string(name) + "'",
                  "use auto, template (the model's own), or a built-in format: llama3, llama2, mistral, chatml, "
                  "plain");
}

TokenizedDoc chat_encode(const Tokenizer& tok, const ChatFormat& format, const std::vector<ChatMessage>& messages) {
  if (format.is_template()) return encode_with_template(tok, format, messages);
  check_roles(messages);
  Render r;
  const ChatFamily family = format.family();
  switch (family) {
    case ChatFamily::llama3: render_llama3(tok, messages, r); break;
    case ChatFamily::chatml: render_chatml(tok, messages, r); break;
    case ChatFamily::llama2:
    case ChatFamily::mistral: render_inst(tok, family, messages, r); break;
    case ChatFamily::plain: render_plain(tok, messages, r); break;
  }
  return encode_segments(tok, r.segments());
}

}  // namespace ranktune
