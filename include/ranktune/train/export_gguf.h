// defines: checkpoint_export_gguf (`ranktune export CKPT OUT.gguf --export.format=gguf`): the model a checkpoint holds
// (LoRA folded into its base first, as the merged HF export does) as one GGUF file for llama.cpp, Ollama and LM
// Studio, with llama.cpp's architecture keys and tensor names (Llama and Mistral as "llama", their Q/K rows permuted
// to its rotary layout; Qwen2 as "qwen2") and the run's tokenizer (data/gguf_vocab.h); and the two mappings it uses.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "ranktune/io/h5.h"
#include "ranktune/train/export.h"

namespace ranktune {

struct GgufExportOptions {
  std::string dtype = "bf16";  // bf16 | fp16 | fp32 | q8_0 for the matrices; norms, biases, rope factors stay F32
  bool overwrite = false;      // replace an existing out_file
  h5::FileLocking locking = h5::FileLocking::best_effort;
};

// Writes out_file through a temporary sibling renamed into place, so it is absent, the old file, or complete. An
// existing out_file without overwrite, or a directory there, is a UsageError checked before anything is read; what
// the format or llama.cpp cannot carry (a Qwen2 with o_proj or MLP biases, a tokenizer llama.cpp would split
// differently) is a ConfigError or DataError (exit 2) naming it.
ExportResult checkpoint_export_gguf(const std::filesystem::path& checkpoint, const std::filesystem::path& out_file,
                                    const GgufExportOptions& options);

// llama.cpp's name of one of our (= transformers') parameters: "model.layers.3.mlp.down_proj.weight" ->
// "blk.3.ffn_down.weight"; "" for a name it has none for.
std::string gguf_tensor_name(const std::string& hf_name);

// The rows of a q_proj/k_proj weight or bias, head by head, from transformers' rotary layout (the two halves of a
// head rotate together) to llama.cpp's "llama" layout (adjacent pairs rotate together); `heads` is the number of
// heads the rows hold (num_kv_heads for k_proj). The same reordering llama.cpp's convert_hf_to_gguf.py applies.
at::Tensor gguf_permute_qk(const at::Tensor& w, std::int64_t heads);

}  // namespace ranktune
