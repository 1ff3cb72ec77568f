// defines: GgufWriter, the container of llama.cpp's GGUF v3 files (little-endian header, typed key-value metadata,
// tensor infos, then each tensor's data padded to general.alignment), and the ggml encodings it stores: F32, F16 and
// BF16 as raw values, Q8_0 as blocks of 32 (gguf_q8_0_quantize, bit-identical to ggml's reference quantizer). File I/O
// alone: which keys and tensor names a model gets is train/export_gguf.h's business.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace ranktune {

enum class GgmlType : std::uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };  // ggml's type ids

const char* ggml_type_name(GgmlType t);  // "F32", "F16", "Q8_0", "BF16" (as llama.cpp prints them)
// Q8_0 stores rows in blocks of 32: a row of another length cannot be that type.
bool ggml_row_fits(GgmlType t, std::int64_t row_length);
// Bytes of `numel` values (a whole number of blocks for Q8_0).
std::uint64_t ggml_type_bytes(GgmlType t, std::uint64_t numel);

// IEEE binary16 of f, rounded to nearest even (what numpy's astype(float16) and ggml's FP32_TO_FP16 give).
std::uint16_t fp16_from_fp32(float f);

// Q8_0 of n values (n % 32 == 0) into n / 32 * 34 bytes: per block d = max|x| / 127 as fp16, then the 32 values
// x * (1 / d) rounded half away from zero as int8 (0 where d is 0): ggml's quantize_row_q8_0_ref and gguf-py's
// quants.Q8_0, whose fp32 arithmetic this repeats step for step.
void gguf_q8_0_quantize(const float* x, std::size_t n, std::uint8_t* out);

// The bytes of one tensor, produced when the writer reaches it, so that only one tensor's encoding is in memory.
using GgufTensorData = std::function<std::vector<std::uint8_t>()>;

class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t alignment = 32);  // a power of two; written as general.alignment

  // Keys appear in the file in the order they are added; a key added twice is a std::logic_error.
  void add_u32(const std::string& key, std::uint32_t v);
  void add_i32(const std::string& key, std::int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_i32s(const std::string& key, const std::vector<std::int32_t>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);

  // shape is outermost first, as LibTorch writes it; the file holds it innermost first (ggml's ne). `data` must
  // return exactly ggml_type_bytes(type, numel) bytes. A name of 64 bytes or more (ggml's limit), more than 4
  // dimensions, a row Q8_0 cannot hold or a repeated name is a std::invalid_argument.
  void add_tensor(const std::string& name, const std::vector<std::int64_t>& shape, GgmlType type, GgufTensorData data);

  std::size_t tensor_count() const { return tensors_.size(); }

  // Writes the file at `path` (created or truncated; making it durable is the caller's part) and returns its size.
  // A failed write is a std::system_error naming the path; a data callback of the wrong size a std::logic_error.
  std::uint64_t write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    GgmlType type;
    std::uint64_t bytes;
    GgufTensorData data;
  };
  void add_kv(const std::string& key, std::string encoded_value);

  std::uint32_t alignment_;
  std::set<std::string> keys_;
  std::vector<std::pair<std::string, std::string>> kvs_;  // key, (type tag + value) as written
  std::set<std::string> names_;
  std::vector<Tensor> tensors_;
};

}  // namespace ranktune
