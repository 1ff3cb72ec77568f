// defines: ChatFormat (how messages records become text: the model's own Jinja chat template, or a built-in family)
// and chat_encode, which renders a conversation into token ids with a loss mask: prompt tokens (system, user, role
// headers) are context only; each assistant turn (the reply and the end-of-turn marker the template writes after
// it) is trained, so the model learns to answer and to stop. Also how a tokenizer directory's chat template is read.
// docs/data.md describes both; tests check renderings and ids against transformers' apply_chat_template.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/data/document.h"
#include "ranktune/data/tokenizer.h"

namespace ranktune {

class JinjaTemplate;

enum class ChatFamily { llama3, llama2, mistral, chatml, plain };

struct ChatMessage {
  std::string role;  // system | user | assistant (a model template may accept others)
  std::string content;
};

const char* chat_family_name(ChatFamily f);

// The family whose special tokens the tokenizer has: <|start_header_id|> -> llama3, <|im_start|> -> chatml,
// [INST] -> mistral, <s> and </s> -> llama2, otherwise plain. Only a suggestion in messages: `auto` never guesses.
ChatFamily chat_family_detect(const Tokenizer& tok);

// The chat template of a tokenizer directory, as transformers finds it: chat_template.jinja (what save_pretrained
// writes, preferred) or tokenizer_config.json's "chat_template" (a string, or a list of {name, template} of which
// "default" is used); the special tokens as text from tokenizer_config.json (and a legacy special_tokens_map.json).
// `tokenizer_path` is a tokenizer.json or its directory. Empty text when there is none; DataError when malformed.
TokenizerChatTemplate chat_template_read(const std::string& tokenizer_path);

// The same from file contents ("" for a missing file); the origins name the files in messages.
TokenizerChatTemplate chat_template_parse(const std::string& config_json, const std::string& config_origin,
                                          const std::string& jinja, const std::string& jinja_origin,
                                          const std::string& special_tokens_map_json = {});

class ChatFormat {
 public:
  ChatFormat(ChatFamily family);  // a built-in family; implicit, so a family can stand where a format is expected

  // The model's own template, compiled once; DataError naming the first construct outside the Jinja subset.
  static ChatFormat model_template(const TokenizerChatTemplate& source);

  bool is_template() const { return jinja_ != nullptr; }
  ChatFamily family() const { return family_; }
  const JinjaTemplate& jinja() const { return *jinja_; }
  const TokenizerChatTemplate& source() const { return source_; }

  std::string name() const;      // "template" or the family's name: what a prepared dataset records
  std::string describe() const;  // for the log: "model template (DIR/tokenizer_config.json)", "built-in llama3"

 private:
  ChatFamily family_ = ChatFamily::plain;
  std::shared_ptr<const JinjaTemplate> jinja_;
  TokenizerChatTemplate source_;
};

// data.chat_template: "auto" is the model's template when the tokenizer ships one, plain for the byte tokenizer, and
// otherwise a DataError whose hint names the family the tokens suggest (a family is used only when named);
// "template" is the model's template (a DataError without one); a family name is that built-in family.
ChatFormat chat_format_parse(std::string_view name, const Tokenizer& tok);

// Built-in families: DataError for an unknown role, an empty conversation, a family's ordering rule broken
// (llama2/mistral: optional system, then user/assistant alternating from user) or a special token the tokenizer lacks.
// Model template: the whole conversation is rendered once and tokenized as transformers' apply_chat_template does;
// assistant turn i is the text between the rendering of messages[:i] with add_generation_prompt and that of
// messages[:i+1]. DataError with the template's own message when it raises, and when a rendering is not a prefix of
// the next one (then the turns cannot be told apart).
TokenizedDoc chat_encode(const Tokenizer& tok, const ChatFormat& format, const std::vector<ChatMessage>& messages);

}  // namespace ranktune
