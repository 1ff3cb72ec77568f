// defines: Tokenizer, the interface every tokenizer implements (text <-> token ids, the special ids the data
// pipeline needs), and tokenizer_load, which picks one from the config's `data.tokenizer` value.
// Plain C++ (std::vector<int32_t>): the data layer never touches LibTorch.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ranktune {

// The chat template that came with a tokenizer (read by chat_template_read): the Jinja text ("" when none), the file
// it was read from, and the named special tokens as text (bos_token, eos_token, ...), which templates use.
struct TokenizerChatTemplate {
  std::string text;
  std::string origin;
  std::vector<std::pair<std::string, std::string>> special_tokens;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids. add_special adds what the tokenizer's post-processor adds (HF `add_special_tokens=True`: e.g. a
  // leading bos for Llama); special tokens written in the text (e.g. "<|im_start|>") become their ids.
  virtual std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const = 0;

  // Text that follows other input (a special token placed by id) instead of starting it, without specials added.
  // Differs from encode(text, false) only where the start of the input is special (Metaspace "first" prepends ▁
  // only there), so a template encoded piece by piece gives the ids of its whole rendered text.
  virtual std::vector<std::int32_t> encode_continuation(std::string_view text) const { return encode(text, false); }

  // Ids -> text. skip_special drops special tokens (HF `skip_special_tokens=True`). Bytes that do not form valid
  // UTF-8 come out as U+FFFD, as in HF.
  virtual std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const = 0;

  // One past the largest id (what the model's embedding must cover).
  virtual std::int32_t vocab_size() const = 0;

  // The id of a token written as text ("<|eot_id|>", "</s>"), if the vocabulary has it.
  virtual std::optional<std::int32_t> token_id(std::string_view token) const = 0;

  // Short description for logs: "byte (259)", "hf-bpe byte-level llama3 (128256) from x/tokenizer.json".
  virtual std::string describe() const = 0;

  // Beginning/end of sequence and padding ids; nullopt when the tokenizer has none.
  std::optional<std::int32_t> bos_id() const { return bos_; }
  std::optional<std::int32_t> eos_id() const { return eos_; }
  std::optional<std::int32_t> pad_id() const { return pad_; }

  // The model's chat template, attached by tokenizer_load from the files beside tokenizer.json.
  const TokenizerChatTemplate& chat_template() const { return chat_template_; }
  void set_chat_template(TokenizerChatTemplate t) { chat_template_ = std::move(t); }

 protected:
  std::optional<std::int32_t> bos_;
  std::optional<std::int32_t> eos_;
  std::optional<std::int32_t> pad_;
  TokenizerChatTemplate chat_template_;
};

// "byte" -> the byte tokenizer; otherwise a path to a HF tokenizer.json or to a directory holding one, with the chat
// template found beside it. Throws DataError naming the file and the unsupported feature.
std::unique_ptr<Tokenizer> tokenizer_load(const std::string& spec);

// What identifies a tokenizer in a prepared dataset, independent of where its file lies: "byte", or
// "fnv1a64:<16 hex>" over tokenizer.json and the tokenizer_config.json (bos/eos/pad, chat template) and
// chat_template.jinja beside it.
std::string tokenizer_fingerprint(const std::string& spec);

}  // namespace ranktune
