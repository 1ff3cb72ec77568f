// bnb_checkpoint: the "...-bnb-4bit" directory that transformers + bitsandbytes 0.50.2 saved
// (tests/reference/make_bnb4_fixture.py) reads into Nf4Weights whose dequantization is bnb's own, bit for bit, and
// whose bytes are what our quantizer makes of the same bf16 weights; every damaged tensor and every quantization_config
// we cannot reproduce (8-bit, fp4, GPTQ, AWQ, no double quantization, skipped decoder linears) is refused by name; and,
// given a parity fixture made on the GPU, a directory bitsandbytes quantized there loads with transformers' bf16
// logits.
#include "ranktune/model/bnb_checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/model/hf_model_dir.h"
#include "ranktune/model/llama_config.h"
#include "ranktune/model/quantize.h"
#include "support/file_text.h"
#include "support/scratch_dir.h"

namespace ranktune {
using ranktune::test::file_text;

namespace {

using nlohmann::json;

const std::string kDir = test::fixture("bnb4_tiny");
const std::string kQ = "model.layers.0.self_attn.q_proj.";

struct LinearShape {
  const char* name;
  std::vector<std::int64_t> shape;
};

// hidden 64, 4 heads / 2 KV heads of 16, FFN 128 (make_bnb4_fixture.py).
const std::vector<LinearShape> kLinears = {{"self_attn.q_proj", {64, 64}}, {"self_attn.k_proj", {32, 64}},
                                           {"self_attn.v_proj", {32, 64}}, {"self_attn.o_proj", {64, 64}},
                                           {"mlp.gate_proj", {128, 64}},   {"mlp.up_proj", {128, 64}},
                                           {"mlp.down_proj", {64, 128}}};

std::string bytes_text(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<std::uint8_t>()), static_cast<std::size_t>(c.numel()));
}

at::Tensor text_bytes(const std::string& s) {
  return at::from_blob(const_cast<char*>(s.data()), {static_cast<std::int64_t>(s.size())}, at::kByte).clone();
}

template <class E>
void expect_refused(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "not refused; expected a message with " << words.front();
  } catch (const E& e) {
    for (const std::string& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
}

TEST(BnbCheckpoint, FixtureDequantizesToBitsandbytesWeights) {
  const SafetensorsFile model(kDir + "/model.safetensors");
  const SafetensorsFile ref(kDir + "/reference.safetensors");
  int read = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (const LinearShape& l : kLinears) {
      const std::string name = "model.layers." + std::to_string(layer) + "." + l.name;
      SCOPED_TRACE(name);
      const Nf4Weight w = nf4_weight_read(model, name + ".", at::kCPU, l.shape);
      EXPECT_EQ(w.shape, l.shape);
      EXPECT_EQ(w.dtype, at::kBFloat16);
      const at::Tensor deq = nf4_dequantize(w);
      EXPECT_TRUE(at::equal(deq, ref.tensor("dequant." + name))) << test::rel_error(deq, ref.tensor("dequant." + name));
      // Our quantizer on the same bf16 weight gives the bytes transformers saved, and the same quant-state JSON.
      const Nf4Weight mine = nf4_quantize(ref.tensor("source." + name));
      EXPECT_TRUE(at::equal(mine.packed, w.packed));
      EXPECT_TRUE(at::equal(mine.absmax, w.absmax));
      EXPECT_TRUE(at::equal(mine.nested_absmax, w.nested_absmax));
      EXPECT_EQ(mine.offset, w.offset);
      EXPECT_EQ(nf4_quant_state_json(w), bytes_text(model.tensor(name + ".weight.quant_state.bitsandbytes__nf4")));
      // Owned memory, not the file's mapping.
      EXPECT_NE(w.packed.data_ptr(), model.tensor(name + ".weight").data_ptr());
      ++read;
    }
  }
  EXPECT_EQ(read, 14);
}

TEST(BnbCheckpoint, FixtureConfigIsBnbNf4) {
  EXPECT_TRUE(hf_model_dir_is_bnb_nf4(kDir));
  EXPECT_TRUE(llama_config_load(kDir + "/config.json").bnb_nf4);
  EXPECT_FALSE(hf_model_dir_is_bnb_nf4(test::fixture("llama_tied")));
  EXPECT_FALSE(llama_config_load(test::fixture("llama_tied/config.json")).bnb_nf4);
  EXPECT_THROW(hf_model_dir_is_bnb_nf4(kDir + "/absent"), ModelDirError);
  const std::vector<std::string> names = bnb_nf4_tensor_names(kQ);
  ASSERT_EQ(names.size(), 6u);
  const SafetensorsFile model(kDir + "/model.safetensors");
  for (const std::string& n : names) EXPECT_NE(model.find(n), nullptr) << n;
}

// The whole directory through the loader (model/quantize.h): every linear's NF4 base is the file's; the logits are, in
// fp32, transformers' over bitsandbytes' dequantized weights to fp32 rounding and, in bf16, those of bitsandbytes' own
// Linear4bit forward within bf16 rounding, far nearer than those of the weights before quantization (0.32 away).
TEST(BnbCheckpoint, LoadsAndMatchesTransformersLogits) {
  const SafetensorsFile model(kDir + "/model.safetensors");
  const SafetensorsFile ref(kDir + "/reference.safetensors");
  at::NoGradGuard no_grad;
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    Llama m = llama_from_pretrained_quantized(kDir, at::TensorOptions().dtype(dtype), Quantize::nf4);
    ASSERT_TRUE(llama_quantized(*m));
    const Linear q = m->model->layers->ptr<DecoderBlockImpl>(0)->self_attn->q_proj;
    ASSERT_NE(q->weight_nf4, nullptr);
    EXPECT_TRUE(at::equal(q->weight_nf4->packed, model.tensor(kQ + "weight")));
    EXPECT_TRUE(at::equal(nf4_dequantize(*q->weight_nf4), ref.tensor("dequant.model.layers.0.self_attn.q_proj")));
    const at::Tensor logits = m->forward(ref.tensor("input_ids")).to(at::kFloat);
    const double fp32 = test::rel_error(logits, ref.tensor("logits_fp32"));
    const double bnb = test::rel_error(logits, ref.tensor("logits"));
    const double unquantized = test::rel_error(logits, ref.tensor("logits_unquantized"));
    if (dtype == at::kFloat) {
      // bnb's fp32 matmul_4bit rounds the dequantized weight to the state's dtype (bf16) first, as nf4_linear does;
      // dequantizing straight to fp32 would move these logits by 0.0062.
      EXPECT_LT(fp32, 1e-5);
      EXPECT_GT(test::rel_error(logits, ref.tensor("logits_fp32_unrounded")), 1e-3);
    } else {
      EXPECT_LT(bnb, 3e-2);
    }
    EXPECT_GT(unquantized, 0.25);
  }
}

// A parity fixture (make_bnb4_fixture.py --device cuda, made on the GPU machine by bench/qlora_gpu_parity.sh, which
// points RANKTUNE_BNB4_FIXTURE_DIR at it): the same model quantized by bitsandbytes' CUDA kernels and saved by
// transformers there, with transformers' bf16 logits on that device over it and over the committed directory. Loaded on
// the fixture's device, our dequantization (the CUDA kernel there) is bnb's bit for bit, and our bf16 logits are near
// transformers'. How near is this model's own bf16 error: its decoder weights are 8x transformers' init, so each bf16
// rounding (8 significant bits, 2.3e-3 in norm) is amplified on its way to the logits, and transformers' bf16 logits
// lie e = 1.6e-2 (CPU) from the fp32 computation over the same 4-bit weights. Two bf16 computations that each round
// differently (cuBLAS tiles, attention kernels, fused RMSNorm and RoPE) and are each within e of the fp32 result are
// within 2e of each other; more means ours is the less accurate one. The weights before quantization are 0.32 away.
TEST(BnbCheckpointGpu, DeviceQuantizedDirectoryLoadsAndMatchesTransformersLogits) {
  const char* env = std::getenv("RANKTUNE_BNB4_FIXTURE_DIR");
  if (env == nullptr || *env == '\0') GTEST_SKIP() << "RANKTUNE_BNB4_FIXTURE_DIR is not set";
  const std::string dir(env);
  const SafetensorsFile ref(dir + "/reference.safetensors");
  const auto& meta = ref.metadata();
  ASSERT_TRUE(meta.contains("device")) << ref.path()
                                       << " is not a parity fixture (tests/reference/make_bnb4_fixture.py --device)";
  const bool cuda = meta.at("device") == "cuda";
  if (cuda && !torch::cuda::is_available()) GTEST_SKIP() << "a CUDA fixture and no CUDA device visible";
  const at::Device device = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  std::cout << "  fixture: " << meta.at("description") << (cuda ? " on " + meta.at("gpu") : "") << "\n";
  const SafetensorsFile model(dir + "/model.safetensors");
  // bnb's CUDA quantizer rounds the 8-bit absmax code to the nearest code, not through the CPU's lookup table that
  // ours repeats, and sums the offset in another order: a few absmax bytes may differ, while a wrong layout or nibble
  // order would change most bytes.
  std::int64_t codes = 0, codes_differ = 0, absmax = 0, absmax_differ = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (const LinearShape& l : kLinears) {
      const std::string name = "model.layers." + std::to_string(layer) + "." + l.name;
      SCOPED_TRACE(name);
      const Nf4Weight w = nf4_weight_read(model, name + ".", device, l.shape);
      ASSERT_EQ(w.packed.device(), device);
      const at::Tensor deq = nf4_dequantize(w);
      EXPECT_EQ(deq.device(), device);
      EXPECT_TRUE(at::equal(deq.cpu(), ref.tensor("dequant." + name)))
          << test::rel_error(deq, ref.tensor("dequant." + name));
      const Nf4Weight mine = nf4_quantize(ref.tensor("source." + name).to(device));
      codes += w.packed.numel(), absmax += w.absmax.numel();
      codes_differ += at::ne(mine.packed, w.packed).sum().item<std::int64_t>();
      absmax_differ += at::ne(mine.absmax, w.absmax).sum().item<std::int64_t>();
    }
  }
  EXPECT_LE(codes_differ, codes / 1000) << codes_differ << " of " << codes << " packed bytes differ";
  EXPECT_LE(absmax_differ, absmax / 20) << absmax_differ << " of " << absmax << " absmax bytes differ";
  at::NoGradGuard no_grad;
  const at::Tensor input_ids = ref.tensor("input_ids").to(device);
  struct Case {
    std::string path;
    at::Tensor transformers, fp32;  // transformers' bf16 logits on the device; fp32 over the same 4-bit weights
  };
  const std::string committed = meta.at("committed_dir");
  const SafetensorsFile committed_ref(committed + "/reference.safetensors");
  for (const Case& c : {Case{dir, ref.tensor("logits"), ref.tensor("logits_fp32")},
                        Case{committed, ref.tensor("logits_committed"), committed_ref.tensor("logits_fp32")}}) {
    SCOPED_TRACE(c.path);
    Llama m = llama_from_pretrained_quantized(c.path, at::TensorOptions(device).dtype(at::kBFloat16), Quantize::nf4);
    ASSERT_TRUE(llama_quantized(*m));
    const at::Tensor logits = m->forward(input_ids);
    ASSERT_EQ(logits.device(), device);
    const double err = test::rel_error(logits, c.transformers);
    const double theirs = test::rel_error(c.transformers, c.fp32), ours = test::rel_error(logits, c.fp32);
    const double unquantized = test::rel_error(logits, ref.tensor("logits_unquantized"));
    EXPECT_LE(err, 2 * theirs);
    EXPECT_GT(unquantized, 0.25);
    std::cout << "  bf16 on " << device << ", " << c.path << ": logits rel err " << err << " to transformers' (bound "
              << 2 * theirs << "); to the fp32 reference: ours " << ours << ", transformers' " << theirs << "; "
              << unquantized << " to the unquantized model's\n";
  }
  std::cout << "  quantized on " << device << ": packed bytes differing from ours " << codes_differ << "/" << codes
            << ", absmax bytes " << absmax_differ << "/" << absmax << "\n";
}

// config.json is checked against the packed headers as against 16-bit ones: a corrupted size is refused by its field
// before anything is allocated, and a missing quant-state tensor by name.
TEST(BnbCheckpoint, DirectoryCheckKnowsThePackedLayout) {
  EXPECT_TRUE(hf_model_config(kDir).bnb_nf4);
  const test::ScratchDir dir("bnb_dir_check");
  std::filesystem::copy_file(kDir + "/model.safetensors", dir / "model.safetensors");
  json c = json::parse(file_text(kDir + "/config.json"));
  c["intermediate_size"] = 1000000;
  std::ofstream(dir / "config.json") << c.dump();
  expect_refused<ModelDirError>([&] { hf_model_config(dir.str()); },
                                {"intermediate_size = 1000000", "model.layers.0.mlp.gate_proj.weight is [4096, 1]"});
  const SafetensorsFile model(kDir + "/model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const SafetensorsEntry& e : model.entries())
    if (e.name != kQ + "weight.nested_quant_map") tensors.emplace_back(e.name, model.tensor(e.name));
  safetensors_save(dir / "model.safetensors", tensors);
  std::ofstream(dir / "config.json") << file_text(kDir + "/config.json");
  expect_refused<ModelDirError>([&] { hf_model_config(dir.str()); }, {"missing " + kQ + "weight.nested_quant_map"});
  // Without its quantization_config the directory is refused: the quant-state tensors are unexpected.
  c = json::parse(file_text(kDir + "/config.json"));
  c.erase("quantization_config");
  std::ofstream(dir / "config.json") << c.dump();
  std::filesystem::copy_file(kDir + "/model.safetensors", dir / "model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  expect_refused<ModelDirError>([&] { hf_model_config(dir.str()); }, {"unexpected", "weight.absmax"});
}

// transformers cuts shards between any two tensors: a linear's six may sit in two shards.
TEST(BnbCheckpoint, ReadsALinearSplitOverShards) {
  const test::ScratchDir dir("bnb_sharded");
  const SafetensorsFile model(kDir + "/model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> first, second;
  json index;
  int i = 0;
  for (const SafetensorsEntry& e : model.entries()) {
    // q_proj's weight and absmax in the first shard, its other four in the second; the rest alternates.
    const bool early = e.name.rfind(kQ, 0) == 0 ? e.name == kQ + "weight" || e.name == kQ + "weight.absmax" : i++ % 2;
    (early ? first : second).emplace_back(e.name, model.tensor(e.name));
    index["weight_map"][e.name] = early ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  safetensors_save(dir / "model-00001-of-00002.safetensors", first);
  safetensors_save(dir / "model-00002-of-00002.safetensors", second);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  std::ofstream(dir / "config.json") << file_text(kDir + "/config.json");
  const HfModelDir files(dir.str());
  EXPECT_NE(files.file_of(kQ + "weight"), files.file_of(kQ + "weight.quant_map"));
  const Nf4Weight split = nf4_weight_read(files, kQ, at::kCPU, {64, 64});
  const Nf4Weight whole = nf4_weight_read(model, kQ, at::kCPU, {64, 64});
  EXPECT_TRUE(at::equal(nf4_dequantize(split), nf4_dequantize(whole)));
  EXPECT_TRUE(at::equal(split.packed, whole.packed));
  // A message names the shard that holds the faulty tensor, or the index for a missing one.
  expect_refused<ModelDirError>(
      [&] {
        nf4_weight_read(files, kQ, at::kCPU, {64, 128});
      },
      {"model-00002-of-00002.safetensors: " + kQ + "weight.quant_state"});
  expect_refused<ModelDirError>([&] { nf4_weight_read(files, "model.layers.0.mlp.nope.", at::kCPU); },
                                {"model.safetensors.index.json: model.layers.0.mlp.nope.weight is missing"});
  // The whole loader over that directory: every linear as from the single file, the same logits.
  Llama sharded = llama_from_pretrained_quantized(dir.str(), {}, Quantize::nf4);
  Llama single = llama_from_pretrained_quantized(kDir, {}, Quantize::nf4);
  const auto a = llama_nf4_state(*sharded), b = llama_nf4_state(*single);
  ASSERT_EQ(a.size(), 2u * 7 * 6);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  const SafetensorsFile ref(kDir + "/reference.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(sharded->forward(ref.tensor("input_ids")), single->forward(ref.tensor("input_ids"))));
}

// A 16-bit load of a 4-bit directory is refused with what to do, not an internal error about a missing parameter.
TEST(BnbCheckpoint, SixteenBitLoadIsRefusedByName) {
  expect_refused<ConfigError>([&] { llama_from_pretrained(kDir); },
                              {kDir, "bitsandbytes 4-bit NF4 weights", "a 16-bit load cannot use"});
  try {
    llama_from_pretrained(kDir);
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.code(), ExitCode::usage);
  }
  // model/quantize.h's none path is that load, so it is refused the same way.
  EXPECT_THROW(llama_from_pretrained_quantized(kDir, {}, Quantize::none), ConfigError);
}

// The q_proj tensors of the fixture, edited by `edit`, written alone to a scratch file and read back.
class Damaged : public ::testing::Test {
 protected:
  using Tensors = std::vector<std::pair<std::string, at::Tensor>>;
  void read(const std::function<void(Tensors&)>& edit, std::vector<std::int64_t> expected = {64, 64}) {
    const SafetensorsFile model(kDir + "/model.safetensors");
    Tensors t;
    for (const std::string& n : bnb_nf4_tensor_names(kQ)) t.emplace_back(n, model.tensor(n).clone());
    edit(t);
    const std::string path = dir_ / "model.safetensors";
    safetensors_save(path, t);
    nf4_weight_read(SafetensorsFile(path), kQ, at::kCPU, expected);
  }
  static void set_state(Tensors& t, const std::function<void(json&)>& f) {
    json s = json::parse(bytes_text(t[5].second));
    f(s);
    t[5].second = text_bytes(s.dump());
  }
  void refused(const std::function<void(Tensors&)>& edit, const std::vector<std::string>& words,
               std::vector<std::int64_t> expected = {64, 64}) {
    expect_refused<ModelDirError>([&] { read(edit, expected); }, words);
  }
  test::ScratchDir dir_{"bnb_damaged"};
};

TEST_F(Damaged, UnchangedCopyReads) {
  EXPECT_NO_THROW(read([](Tensors&) {}));
}

TEST_F(Damaged, QuantStateFieldsAreChecked) {
  const std::string state = kQ + "weight.quant_state.bitsandbytes__nf4";
  refused([](Tensors& t) { set_state(t, [](json& s) { s["quant_type"] = "fp4"; }); }, {state, "quant_type", "fp4"});
  refused([](Tensors& t) { set_state(t, [](json& s) { s["blocksize"] = 128; }); }, {state, "blocksize is 128"});
  refused([](Tensors& t) { set_state(t, [](json& s) { s["nested_blocksize"] = 128; }); }, {"nested_blocksize"});
  refused([](Tensors& t) { set_state(t, [](json& s) { s["dtype"] = "int8"; }); }, {"dtype", "int8"});
  refused([](Tensors& t) { set_state(t, [](json& s) { s.erase("shape"); }); }, {state, "\"shape\""});
  refused([](Tensors& t) { set_state(t, [](json& s) { s["nested_offset"] = "x"; }); }, {"nested_offset"});
  refused(
      [](Tensors& t) {
        set_state(t, [](json& s) {
          for (const char* k : {"nested_blocksize", "nested_dtype", "nested_offset"}) s.erase(k);
        });
      },
      {"double quantization"});
  refused([](Tensors& t) { t[5].second = text_bytes("{not json"); }, {state, "not valid JSON"});
}

TEST_F(Damaged, ShapeMustBeTheModels) {
  refused([](Tensors&) {}, {kQ + "weight.quant_state", "[64,64]", "[64, 128]"}, {64, 128});
  // A recorded shape that the packed tensor cannot hold.
  refused([](Tensors& t) { set_state(t, [](json& s) {
                             s["shape"] = {64, 128};
                           }); }, {kQ + "weight", "elements"},
          {64, 128});
}

TEST_F(Damaged, TensorsAreChecked) {
  refused([](Tensors& t) { t.erase(t.begin() + 1); }, {kQ + "weight.absmax is missing"});
  refused([](Tensors& t) { t.erase(t.begin() + 5); }, {kQ + "weight.quant_state.bitsandbytes__nf4 is missing"});
  refused([](Tensors& t) { t[1].second = t[1].second.slice(0, 0, 32).clone(); }, {kQ + "weight.absmax", "64"});
  refused([](Tensors& t) { t[1].second = t[1].second.to(at::kFloat); }, {"weight.absmax: is F32", "without double"});
  refused([](Tensors& t) { t[0].second = t[0].second.to(at::kInt); },
          {kQ + "weight: is I32", "not U8 with 2048 elements"});
  refused([](Tensors& t) { t[2].second = t[2].second.flip(0).neg(); }, {"weight.quant_map", "NF4 code"});
  refused([](Tensors& t) { t[3].second.fill_(std::nanf("")); }, {"weight.nested_absmax", "NaN"});
}

// config.json's quantization_config, as the fixture's with `edit` applied.
std::string config_with(const std::function<void(json&)>& edit) {
  json j = json::parse(file_text(kDir + "/config.json"));
  edit(j["quantization_config"]);
  return j.dump();
}

void quant_refused(const std::function<void(json&)>& edit, const std::vector<std::string>& words) {
  const std::string text = config_with(edit);
  expect_refused<ConfigError>([&] { hf_quantization_parse(text, "D/config.json"); }, words);
  // The same refusal where config.json is read for the model.
  expect_refused<ConfigError>([&] { llama_config_from_json(text, "D/config.json"); }, words);
}

TEST(HfQuantization, AcceptsBitsandbytesNf4WithDoubleQuant) {
  EXPECT_EQ(hf_quantization_parse(file_text(kDir + "/config.json"), "c"), HfQuantization::bnb_nf4);
  EXPECT_EQ(hf_quantization_parse(R"({"model_type": "llama"})", "c"), HfQuantization::none);
  EXPECT_EQ(hf_quantization_parse(R"({"quantization_config": null})", "c"), HfQuantization::none);
  // Older transformers wrote no quant_method; a head or embedding left in 16 bits is what transformers does anyway.
  const std::string old = config_with([](json& q) {
    q.erase("quant_method");
    q["llm_int8_skip_modules"] = {"lm_head", "model.embed_tokens", "model.layers.11.mlp"};  // 2 layers: no layer 11
  });
  EXPECT_EQ(hf_quantization_parse(old, "c"), HfQuantization::bnb_nf4);
  EXPECT_TRUE(llama_config_from_json(old, "c").bnb_nf4);
}

TEST(HfQuantization, RefusesWhatIsNotNf4DoubleQuant) {
  quant_refused([](json& q) { q["load_in_8bit"] = true, q["load_in_4bit"] = false; },
                {"D/config.json", "load_in_8bit"});
  quant_refused([](json& q) { q = {{"quant_method", "gptq"}, {"bits", 4}}; }, {"quant_method \"gptq\""});
  quant_refused([](json& q) { q = {{"quant_method", "awq"}, {"bits", 4}}; }, {"quant_method \"awq\""});
  quant_refused([](json& q) { q["bnb_4bit_quant_type"] = "fp4"; }, {"bnb_4bit_quant_type", "fp4"});
  quant_refused([](json& q) { q.erase("bnb_4bit_quant_type"); }, {"fp4", "default"});
  quant_refused([](json& q) { q["bnb_4bit_use_double_quant"] = false; }, {"bnb_4bit_use_double_quant"});
  quant_refused([](json& q) { q["bnb_4bit_quant_storage"] = "bfloat16"; }, {"bnb_4bit_quant_storage", "bfloat16"});
  quant_refused([](json& q) { q["bnb_4bit_blocksize"] = 128; }, {"bnb_4bit_blocksize is 128"});
  quant_refused([](json& q) { q["load_in_4bit"] = false, q["_load_in_4bit"] = false; }, {"load_in_4bit"});
  quant_refused([](json& q) { q = {{"quant_method", "bitsandbytes"}}; }, {"load_in_4bit"});
}

TEST(HfQuantization, RefusesSkippedDecoderLinears) {
  const auto skip = [](std::vector<std::string> s) { return [s](json& q) { q["llm_int8_skip_modules"] = s; }; };
  quant_refused(skip({"lm_head", "model.layers.1.mlp"}), {"\"model.layers.1.mlp\"", "model.layers.1.mlp.gate_proj"});
  quant_refused(skip({"q_proj"}), {"model.layers.0.self_attn.q_proj"});
  quant_refused(skip({"model.layers.*"}), {"model.layers.0.self_attn.q_proj"});
  quant_refused(skip({"model.layers.1"}), {"model.layers.1.self_attn.q_proj"});
  quant_refused([](json& q) { q["llm_int8_skip_modules"] = "lm_head"; }, {"llm_int8_skip_modules"});
}

}  // namespace
}  // namespace ranktune
