#include "ranktune/train/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>

#include "ranktune/core/error.h"
#include "ranktune/data/packer.h"
#include "ranktune/data/tokenizer.h"
#include "ranktune/data/unicode.h"
#include "ranktune/io/row_store.h"

namespace ranktune {

std::vector<std::int32_t> generate(LlamaImpl& model, const std::vector<std::int32_t>& prompt,
                                   const GenerateOptions& o) {
  if (prompt.empty()) throw UsageError("generate: the prompt is empty");
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  const at::Device device = model.parameters().front().device();
  at::Tensor ids = at::tensor(std::vector<std::int64_t>(prompt.begin(), prompt.end()), at::kLong).unsqueeze(0);
  std::vector<std::int32_t> out;
  auto cpu_gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  for (int i = 0; i < o.max_new_tokens; ++i) {
    const std::int64_t limit = model.config().max_position_embeddings;
    at::Tensor window = ids.size(1) > limit ? ids.slice(1, ids.size(1) - limit) : ids;
    at::Tensor logits = model.forward(window.to(device)).select(1, -1).squeeze(0).to(at::kFloat).cpu();
    if (o.vocab_limit > 0 && o.vocab_limit < logits.size(0)) logits = logits.slice(0, 0, o.vocab_limit);
    std::int64_t next = 0;
    if (o.temperature <= 0) {
      next = logits.argmax().item<std::int64_t>();
    } else {
      at::Tensor probs = at::softmax(logits / o.temperature, -1);
      if (o.top_p < 1.0) {
        auto [sorted, order] = probs.sort(-1, /*descending=*/true);
        at::Tensor keep = sorted.cumsum(-1) - sorted < o.top_p;  // always keeps the most likely token
        probs = at::zeros_like(probs).scatter(0, order, sorted * keep);
      }
      next = at::multinomial(probs, 1, false, cpu_gen).item<std::int64_t>();
    }
    if (next == o.stop_token) break;
    out.push_back(static_cast<std::int32_t>(next));
    ids = at::cat({ids, at::full({1, 1}, next, at::kLong)}, 1);
  }
  if (was_training) model.train();
  return out;
}

std::vector<std::int32_t> prompt_encode(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<std::int32_t> plain = tokenizer.encode(text, /*add_special=*/false);
  const std::optional<std::int32_t> bos = tokenizer.bos_id();
  if (bos && !plain.empty() && plain.front() == *bos) return plain;
  return tokenizer.encode(text, /*add_special=*/true);
}

std::vector<std::int32_t> sample_prompt(const RowStore& rows) {
  constexpr std::size_t n = kSamplePromptTokens;
  for (std::int64_t r = 0; r < static_cast<std::int64_t>(rows.size()); ++r) {
    const PackedRow row = rows.row(r);
    for (std::size_t i = 0; i + n <= row.input_ids.size(); ++i) {
      const auto targets = row.targets.begin() + static_cast<std::ptrdiff_t>(i);
      if (row.position_ids[i] == 0 && row.position_ids[i + n - 1] == static_cast<std::int32_t>(n - 1) &&
          std::none_of(targets, targets + static_cast<std::ptrdiff_t>(n - 1),
                       [](std::int32_t t) { return t == kIgnoreTarget; }))
        return {row.input_ids.begin() + static_cast<std::ptrdiff_t>(i),
                row.input_ids.begin() + static_cast<std::ptrdiff_t>(i + n)};
    }
  }
  const PackedRow first = rows.row(0);
  return {first.input_ids.begin(), first.input_ids.begin() + kSampleFallbackTokens};
}

std::string sample_text(LlamaImpl& model, const RowStore& rows, const Tokenizer& tokenizer) {
  const std::vector<std::int32_t> prompt = sample_prompt(rows);
  GenerateOptions o;
  o.max_new_tokens = kSampleNewTokens;
  o.stop_token = tokenizer.eos_id().value_or(-1);
  o.vocab_limit = tokenizer.vocab_size();
  const std::vector<std::int32_t> continuation = generate(model, prompt, o);
  return "prompt=\"" + utf8_escape(tokenizer.decode(prompt)) + "\" | continuation=\"" +
         utf8_escape(tokenizer.decode(continuation)) + "\"";
}

}  // namespace ranktune
