// defines: the chat templates of the supported model families and chat_encode, which renders a conversation into
// token ids with a loss mask: prompt tokens (system, user, role headers) are context only; each assistant reply and
// the token that ends it are trained, so the model learns to answer and to stop.
// The layouts are written out in docs/data.md; tests check the ids against HF `tokenizers` on the rendered text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ranktune/data/document.h"
#include "ranktune/data/tokenizer.h"

namespace ranktune {

enum class ChatFamily { llama3, llama2, mistral, chatml, plain };

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

const char* chat_family_name(ChatFamily f);

// "llama3" | "llama2" | "mistral" | "chatml" | "plain"; "auto" picks from the tokenizer. Throws DataError.
ChatFamily chat_family_parse(std::string_view name, const Tokenizer& tok);

// The family whose special tokens the tokenizer has: <|start_header_id|> -> llama3, <|im_start|> -> chatml,
// [INST] -> mistral, <s> and </s> -> llama2, otherwise plain.
ChatFamily chat_family_detect(const Tokenizer& tok);

// Throws DataError for an unknown role, an empty conversation, a family's ordering rule broken (llama2/mistral:
// optional system, then user/assistant alternating from user) or a special token the tokenizer lacks.
TokenizedDoc chat_encode(const Tokenizer& tok, ChatFamily family, const std::vector<ChatMessage>& messages);

}  // namespace ranktune
