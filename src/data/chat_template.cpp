// Each family renders to segments (text or special token id, trained or not); encode_segments does the rest.
#include "ranktune/data/chat_template.h"

#include "ranktune/data/data_error.h"
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

ChatFamily chat_family_parse(std::string_view name, const Tokenizer& tok) {
  if (name == "auto") return chat_family_detect(tok);
  for (ChatFamily f :
       {ChatFamily::llama3, ChatFamily::llama2, ChatFamily::mistral, ChatFamily::chatml, ChatFamily::plain}) {
    if (name == chat_family_name(f)) return f;
  }
  throw DataError("unknown chat template '" + std::string(name) + "'",
                  "use one of auto, llama3, llama2, mistral, chatml, plain");
}

TokenizedDoc chat_encode(const Tokenizer& tok, ChatFamily family, const std::vector<ChatMessage>& messages) {
  check_roles(messages);
  Render r;
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
