// Test tool of tests/integration/llama_cpp_gguf.sh, built against a llama.cpp source tree (not against ranktune): what
// llama.cpp itself makes of a GGUF export. F32 K/V cache and no flash attention, so that an fp32 file is computed in
// fp32 throughout and its logits can be held to ranktune's within float rounding.
//   llama_cpp_gguf MODEL tokenize TEXTS special|plain   one line of ids per text of the file TEXTS (NUL-terminated
//                                                       texts), tokenized with or without bos, specials parsed
//   llama_cpp_gguf MODEL logits OUT.f32 ID...           the logits of every position, float32 [ids, n_vocab]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "llama.h"

namespace {

void errors_only(ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

int tokenize(const llama_vocab* vocab, const char* path, bool special) {
  std::ifstream in(path, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (std::size_t start = 0, end; (end = all.find('\0', start)) != std::string::npos; start = end + 1) {
    const std::string text = all.substr(start, end - start);
    std::vector<llama_token> ids(text.size() * 2 + 8);
    const int n = llama_tokenize(vocab, text.data(), static_cast<int>(text.size()), ids.data(),
                                 static_cast<int>(ids.size()), special, /*parse_special=*/true);
    if (n < 0) return 4;
    for (int i = 0; i < n; ++i) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
  }
  return 0;
}

int logits(llama_model* model, const llama_vocab* vocab, const char* out, const std::vector<llama_token>& ids) {
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = cp.n_batch = cp.n_ubatch = 256;
  cp.n_threads = cp.n_threads_batch = 1;
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) return 3;
  llama_batch b = llama_batch_init(static_cast<int>(ids.size()), 0, 1);
  b.n_tokens = static_cast<int>(ids.size());
  for (int i = 0; i < b.n_tokens; ++i) {
    b.token[i] = ids[i];
    b.pos[i] = i;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = 0;
    b.logits[i] = 1;
  }
  if (llama_decode(ctx, b) != 0) return 4;
  std::FILE* f = std::fopen(out, "wb");
  if (!f) return 5;
  for (int i = 0; i < b.n_tokens; ++i) std::fwrite(llama_get_logits_ith(ctx, i), 4, llama_vocab_n_tokens(vocab), f);
  std::fclose(f);
  llama_batch_free(b);
  llama_free(ctx);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODEL tokenize TEXTS special|plain | MODEL logits OUT.f32 ID...\n", argv[0]);
    return 2;
  }
  llama_log_set(errors_only, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.progress_callback = [](float, void*) { return true; };  // no progress dots
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    std::fprintf(stderr, "llama.cpp cannot load %s\n", argv[1]);
    return 3;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const std::string mode = argv[2];
  if (mode == "tokenize") return tokenize(vocab, argv[3], std::string(argv[4]) == "special");
  std::vector<llama_token> ids;
  for (int i = 4; i < argc; ++i) ids.push_back(std::atoi(argv[i]));
  return logits(model, vocab, argv[3], ids);
}
