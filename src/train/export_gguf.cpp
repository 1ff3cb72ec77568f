// A checkpoint as a GGUF file (see the header). Keys, types and tensor layouts are those llama.cpp's loader reads and
// its convert_hf_to_gguf.py writes: u32 sizes, f32 rope base and epsilon, matrices in the chosen type with 1-D tensors
// in F32, Q8_0 falling back to F16 for rows that are not whole blocks, llama3 rope scaling as a rope_freqs tensor.
#include "ranktune/train/export_gguf.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "ranktune/core/error.h"
#include "ranktune/core/parallel_range.h"
#include "ranktune/data/gguf_vocab.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/io/gguf_writer.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/lora.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

struct Dtype {
  GgmlType type;
  std::uint32_t file_type;  // llama.cpp's LLAMA_FTYPE: what general.file_type says the file mostly holds
};

Dtype dtype_of(const std::string& name) {
  if (name == "bf16") return {GgmlType::bf16, 32};
  if (name == "fp16") return {GgmlType::f16, 1};
  if (name == "fp32") return {GgmlType::f32, 0};
  if (name == "q8_0") return {GgmlType::q8_0, 7};
  throw ConfigError("export.dtype=" + name + " is not a GGUF tensor type", "use bf16, fp16, fp32 or q8_0");
}

// llama.cpp's architecture for the model, or a ConfigError naming what its graph for that architecture lacks.
std::string architecture(const LlamaConfig& c, const std::string& where) {
  const auto refuse = [&](const std::string& what) {
    throw ConfigError(where + ": " + what + ", which llama.cpp's " + c.model_type + " architecture cannot load",
                      "export with --export.format=hf to use the model with transformers or vLLM");
  };
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type != "qwen2") refuse("model_type " + c.model_type);
  if (c.o_bias) refuse("an o_proj bias");
  if (c.mlp_bias) refuse("MLP biases");
  if (c.head_dim * c.num_heads != c.hidden_size)
    refuse("head_dim " + std::to_string(c.head_dim) + " x " + std::to_string(c.num_heads) + " heads != hidden_size " +
           std::to_string(c.hidden_size));
  if (!c.rope_scaling.type.empty()) refuse("rope_scaling " + c.rope_scaling.type);
  return "qwen2";
}

// llama.cpp divides each rotary frequency by its rope_freqs entry; with llama3 scaling that is the factor by which
// transformers' llama3 rule (model/rope.cpp) lowers it.
std::vector<float> llama3_rope_factors(const LlamaConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  const double old_context = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_context / s.low_freq_factor, high_wavelen = old_context / s.high_freq_factor;
  std::vector<float> out;
  for (std::int64_t i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(i) / static_cast<double>(c.head_dim));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(s.factor));
    } else {
      const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / s.factor + smooth)));
    }
  }
  return out;
}

std::vector<std::uint8_t> bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const auto* p = static_cast<const std::uint8_t*>(c.data_ptr());
  return std::vector<std::uint8_t>(p, p + c.nbytes());
}

std::vector<std::uint8_t> encode(const at::Tensor& t, GgmlType type) {
  switch (type) {
    case GgmlType::f32: return bytes_of(t.to(at::kFloat));
    case GgmlType::f16: return bytes_of(t.to(at::kHalf));
    case GgmlType::bf16: return bytes_of(t.to(at::kBFloat16));
    case GgmlType::q8_0: break;
  }
  const at::Tensor x = t.to(at::kFloat).contiguous();
  const std::int64_t blocks = x.numel() / 32;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(blocks) * 34);
  const float* src = x.data_ptr<float>();
  parallel_range(blocks, 4096, at::get_num_threads(), [&](std::int64_t begin, std::int64_t end) {
    gguf_q8_0_quantize(src + begin * 32, static_cast<std::size_t>(end - begin) * 32, out.data() + begin * 34);
  });
  return out;
}

void add_metadata(GgufWriter& w, const std::string& arch, const LlamaConfig& c, const Dtype& d, const std::string& name,
                  std::int64_t context) {
  const auto u32 = [](std::int64_t v) { return static_cast<std::uint32_t>(v); };
  w.add_string("general.architecture", arch);
  w.add_string("general.type", "model");
  w.add_string("general.name", name);
  w.add_u32("general.file_type", d.file_type);
  w.add_u32("general.quantization_version", 2);  // GGML_QNT_VERSION
  const std::string a = arch + ".";
  w.add_u32(a + "vocab_size", u32(c.vocab_size));
  w.add_u32(a + "context_length", u32(context));
  w.add_u32(a + "embedding_length", u32(c.hidden_size));
  w.add_u32(a + "block_count", u32(c.num_layers));
  w.add_u32(a + "feed_forward_length", u32(c.intermediate_size));
  w.add_u32(a + "attention.head_count", u32(c.num_heads));
  w.add_u32(a + "attention.head_count_kv", u32(c.num_kv_heads));
  w.add_u32(a + "attention.key_length", u32(c.head_dim));
  w.add_u32(a + "attention.value_length", u32(c.head_dim));
  w.add_f32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add_f32(a + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_u32(a + "rope.dimension_count", u32(c.head_dim));
}

void add_vocab(GgufWriter& w, const GgufVocab& v) {
  w.add_string("tokenizer.ggml.model", v.model);
  w.add_string("tokenizer.ggml.pre", v.pre);
  w.add_strings("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) w.add_f32s("tokenizer.ggml.scores", v.scores);
  w.add_i32s("tokenizer.ggml.token_type", v.types);
  if (v.model == "gpt2") w.add_strings("tokenizer.ggml.merges", v.merges);
  const auto id = [&](const char* key, const std::optional<std::int32_t>& t) {
    if (t) w.add_u32(key, static_cast<std::uint32_t>(*t));
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  w.add_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.add_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.add_space_prefix) w.add_bool("tokenizer.ggml.add_space_prefix", *v.add_space_prefix);
  if (!v.chat_template.empty()) w.add_string("tokenizer.chat_template", v.chat_template);
}

void check_target(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (fs::is_directory(out, ec))
    throw UsageError("export target " + out.string() + " is a directory, but a GGUF export is one file",
                     "name the file, e.g. " + (out / "model.gguf").string());
  if (fs::exists(out, ec) && !overwrite)
    throw UsageError("export target " + out.string() + " exists",
                     "choose another file name, or replace it with --export.overwrite=true");
}

std::string size_text(std::uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return b;
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},           {"mlp.down_proj", "ffn_down"}};
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) != 0) return "";
  const std::size_t dot = hf.find('.', prefix.size());
  const std::size_t last = hf.rfind('.');
  if (dot == std::string::npos || last <= dot) return "";
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  const std::string module = hf.substr(dot + 1, last - dot - 1), suffix = hf.substr(last + 1);
  if (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return "";
  if (suffix != "weight" && suffix != "bias") return "";
  for (const auto& [ours, theirs] : kLayer)
    if (module == ours) return "blk." + layer + "." + theirs + "." + suffix;
  return "";
}

at::Tensor gguf_permute_qk(const at::Tensor& w, std::int64_t heads) {
  std::vector<std::int64_t> split{heads, 2, w.size(0) / heads / 2};
  for (std::int64_t d = 1; d < w.dim(); ++d) split.push_back(w.size(d));
  return w.reshape(split).transpose(1, 2).reshape(w.sizes());
}

ExportResult checkpoint_export_gguf(const fs::path& checkpoint, const fs::path& out_file, const GgufExportOptions& o) {
  const fs::path out = fs::absolute(out_file).lexically_normal();
  check_target(out, o.overwrite);
  const Dtype dtype = dtype_of(o.dtype);
  const TrainedModel tm = trained_model_read(checkpoint, o.locking);
  const std::string where = tm.step_dir.string();
  const LlamaConfig c = llama_config_from_json(tm.record.config_json, where + " (attribute model.config)");
  const std::string arch = architecture(c, where);
  const GgufVocab vocab = gguf_vocab_build(tm.record.tokenizer.empty() ? "byte" : tm.record.tokenizer, c.vocab_size);

  Llama model = trained_model_build(tm);
  const bool lora = tm.record.lora.r > 0;
  if (lora) lora_merge(*model);

  // Attention beyond a sliding window is what ranktune refuses and llama.cpp's llama/qwen2 graphs do not have, so
  // the window is the context the file promises.
  const std::int64_t context = c.sliding_window > 0 ? std::min(c.sliding_window, c.max_position_embeddings)
                                                    : c.max_position_embeddings;
  const std::string base = tm.record.base_path.empty() ? "" : fs::path(tm.record.base_path).filename().string();
  GgufWriter w;
  add_metadata(w, arch, c, dtype, base.empty() ? out.stem().string() : base, context);
  add_vocab(w, vocab);

  if (c.rope_scaling.type == "llama3") {
    const std::vector<float> factors = llama3_rope_factors(c);
    w.add_tensor("rope_freqs.weight", {static_cast<std::int64_t>(factors.size())}, GgmlType::f32, [factors] {
      const auto* p = reinterpret_cast<const std::uint8_t*>(factors.data());
      return std::vector<std::uint8_t>(p, p + factors.size() * sizeof(float));
    });
  }
  int fallbacks = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string name = gguf_tensor_name(item.key());
    if (name.empty()) throw std::logic_error("no GGUF name for the parameter " + item.key());
    const at::Tensor t = item.value().detach();
    GgmlType type = t.dim() == 1 ? GgmlType::f32 : dtype.type;
    if (!ggml_row_fits(type, t.size(-1))) {
      type = GgmlType::f16;  // as convert_hf_to_gguf.py does for a row Q8_0 cannot hold
      ++fallbacks;
    }
    std::int64_t heads = 0;
    if (arch == "llama" && name.find(".attn_q.") != std::string::npos) heads = c.num_heads;
    if (arch == "llama" && name.find(".attn_k.") != std::string::npos) heads = c.num_kv_heads;
    w.add_tensor(name, t.sizes().vec(), type,
                 [t, type, heads] { return encode(heads ? gguf_permute_qk(t, heads) : t, type); });
  }

  const fs::path tmp = out.string() + tmp_suffix();
  std::uint64_t bytes = 0;
  try {
    std::error_code ec;
    fs::create_directories(out.parent_path(), ec);
    bytes = w.write(tmp.string());
    file_commit(tmp, out);
  } catch (const std::system_error& e) {
    std::remove(tmp.c_str());
    throw CheckpointError(std::string("GGUF export failed: ") + e.what(),
                          "check the output path, its permissions and the free space");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::string what = "GGUF " + arch + " (" + o.dtype + ", " + std::to_string(c.num_layers) + " blocks, " +
                     std::to_string(w.tensor_count()) + " tensors, " + size_text(bytes) + "; " +
                     (lora ? "LoRA merged into " +
                                 (trained_model_quantize(tm) == "nf4" ? "the dequantized NF4 base " : std::string()) +
                                 tm.record.base_path
                           : std::string("full fine-tune")) +
                     "; tokenizer " + vocab.describe + ")";
  if (fallbacks)
    what += "; " + std::to_string(fallbacks) + " matrices as F16: their rows are not whole Q8_0 blocks of 32";
  if (context != c.max_position_embeddings)
    what += "; context_length " + std::to_string(context) + ": the sliding window, which llama.cpp does not apply";
  return {tm.step, tm.step_dir, what};
}

}  // namespace ranktune
