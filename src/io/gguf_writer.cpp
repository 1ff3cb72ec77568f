// The GGUF v3 container (see the header). Values are written in the host's byte order, which the static_assert pins
// to little-endian, the order llama.cpp reads unless a file says otherwise.
#include "ranktune/io/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace ranktune {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF files are written little-endian");

constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr std::uint32_t kVersion = 3;
constexpr std::size_t kQ8Block = 32;
constexpr std::size_t kQ8BlockBytes = 2 + kQ8Block;
constexpr std::size_t kMaxName = 64;  // GGML_MAX_NAME, terminating zero included

// GGUF's value type tags.
enum : std::uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}

template <class T>
std::string scalar(std::uint32_t tag, T v) {
  std::string out;
  put(out, tag);
  put(out, v);
  return out;
}

template <class T>
std::string array(std::uint32_t tag, const std::vector<T>& v) {
  std::string out;
  put(out, kArray);
  put(out, tag);
  put<std::uint64_t>(out, v.size());
  for (const T& x : v) {
    if constexpr (std::is_same_v<T, std::string>) put_string(out, x);
    else put(out, x);
  }
  return out;
}

std::uint64_t padded(std::uint64_t n, std::uint32_t alignment) { return (n + alignment - 1) / alignment * alignment; }

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

[[noreturn]] void write_failed(const std::string& path) {
  throw std::system_error(errno ? errno : EIO, std::generic_category(), "cannot write '" + path + "'");
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return "F32";
    case GgmlType::f16: return "F16";
    case GgmlType::q8_0: return "Q8_0";
    case GgmlType::bf16: return "BF16";
  }
  return "?";
}

bool ggml_row_fits(GgmlType t, std::int64_t row_length) {
  return row_length > 0 && (t != GgmlType::q8_0 || row_length % static_cast<std::int64_t>(kQ8Block) == 0);
}

std::uint64_t ggml_type_bytes(GgmlType t, std::uint64_t numel) {
  switch (t) {
    case GgmlType::f32: return numel * 4;
    case GgmlType::f16:
    case GgmlType::bf16: return numel * 2;
    case GgmlType::q8_0:
      if (numel % kQ8Block) throw std::invalid_argument("Q8_0 holds whole blocks of 32 values");
      return numel / kQ8Block * kQ8BlockBytes;
  }
  throw std::invalid_argument("unknown ggml type");
}

std::uint16_t fp16_from_fp32(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  x &= 0x7fffffff;
  if (x > 0x7f800000) return sign | 0x7e00;   // NaN stays a (quiet) NaN
  if (x >= 0x477ff000) return sign | 0x7c00;  // 65520 and above round to infinity
  if (x < 0x38800000) {
    // Below fp16's smallest normal: adding 0.5 lines the value up so that the fp32 addition itself rounds it to a
    // multiple of 2^-24 (fp16's subnormal step), to nearest even; the low mantissa bits are then the fp16 bits.
    const float shifted = std::bit_cast<float>(x) + 0.5f;
    return sign | static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(shifted) - 0x3f000000);
  }
  // Rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even.
  const std::uint32_t odd = (x >> 13) & 1;
  x += 0xc8000fff + odd;
  return sign | static_cast<std::uint16_t>(x >> 13);
}

void gguf_q8_0_quantize(const float* x, std::size_t n, std::uint8_t* out) {
  if (n % kQ8Block) throw std::invalid_argument("Q8_0 quantizes whole blocks of 32 values");
  for (std::size_t b = 0; b < n / kQ8Block; ++b, x += kQ8Block, out += kQ8BlockBytes) {
    float amax = 0;
    for (std::size_t j = 0; j < kQ8Block; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t d16 = fp16_from_fp32(d);
    std::memcpy(out, &d16, 2);
    for (std::size_t j = 0; j < kQ8Block; ++j) {
      const std::int8_t q = static_cast<std::int8_t>(std::round(x[j] * id));  // std::round: half away from zero
      std::memcpy(out + 2 + j, &q, 1);
    }
  }
}

GgufWriter::GgufWriter(std::uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw std::invalid_argument("GGUF alignment must be a power of two");
}

void GgufWriter::add_kv(const std::string& key, std::string encoded_value) {
  if (key == "general.alignment" || !keys_.insert(key).second)
    throw std::logic_error("GGUF key " + key + " added twice");
  kvs_.emplace_back(key, std::move(encoded_value));
}

void GgufWriter::add_u32(const std::string& key, std::uint32_t v) { add_kv(key, scalar(kU32, v)); }
void GgufWriter::add_i32(const std::string& key, std::int32_t v) { add_kv(key, scalar(kI32, v)); }
void GgufWriter::add_f32(const std::string& key, float v) { add_kv(key, scalar(kF32, v)); }
void GgufWriter::add_bool(const std::string& key, bool v) { add_kv(key, scalar<std::uint8_t>(kBool, v ? 1 : 0)); }
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  std::string out;
  put(out, kString);
  put_string(out, v);
  add_kv(key, std::move(out));
}
void GgufWriter::add_strings(const std::string& key, const std::vector<std::string>& v) {
  add_kv(key, array(kString, v));
}
void GgufWriter::add_i32s(const std::string& key, const std::vector<std::int32_t>& v) { add_kv(key, array(kI32, v)); }
void GgufWriter::add_f32s(const std::string& key, const std::vector<float>& v) { add_kv(key, array(kF32, v)); }

void GgufWriter::add_tensor(const std::string& name, const std::vector<std::int64_t>& shape, GgmlType type,
                            GgufTensorData data) {
  if (name.empty() || name.size() >= kMaxName)
    throw std::invalid_argument("GGUF tensor name '" + name + "' must have 1 to 63 bytes");
  if (shape.empty() || shape.size() > 4)
    throw std::invalid_argument("GGUF tensor " + name + " must have 1 to 4 dimensions");
  std::uint64_t numel = 1;
  for (const std::int64_t d : shape) {
    if (d <= 0) throw std::invalid_argument("GGUF tensor " + name + " has an empty dimension");
    numel *= static_cast<std::uint64_t>(d);
  }
  if (!ggml_row_fits(type, shape.back()))
    throw std::invalid_argument("GGUF tensor " + name + ": rows of " + std::to_string(shape.back()) +
                                " values cannot be " + ggml_type_name(type));
  if (!names_.insert(name).second) throw std::invalid_argument("GGUF tensor " + name + " added twice");
  tensors_.push_back({name, shape, type, ggml_type_bytes(type, numel), std::move(data)});
}

std::uint64_t GgufWriter::write(const std::string& path) const {
  std::string head;
  put(head, kMagic);
  put(head, kVersion);
  put<std::uint64_t>(head, tensors_.size());
  put<std::uint64_t>(head, kvs_.size() + 1);
  for (const auto& [key, value] : kvs_) {
    put_string(head, key);
    head += value;
  }
  put_string(head, "general.alignment");
  head += scalar(kU32, alignment_);
  std::uint64_t offset = 0;  // from the start of the data section
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<std::uint32_t>(head, static_cast<std::uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) put<std::uint64_t>(head, static_cast<std::uint64_t>(*d));
    put(head, static_cast<std::uint32_t>(t.type));
    put(head, offset);
    offset += padded(t.bytes, alignment_);
  }
  head.resize(padded(head.size(), alignment_), '\0');

  errno = 0;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "wb"));
  if (!file) write_failed(path);
  const auto emit = [&](const void* p, std::size_t n) {
    if (n && std::fwrite(p, 1, n, file.get()) != n) write_failed(path);
  };
  emit(head.data(), head.size());
  std::uint64_t size = head.size();
  const std::vector<std::uint8_t> zeros(alignment_, 0);
  for (const Tensor& t : tensors_) {
    const std::vector<std::uint8_t> bytes = t.data();
    if (bytes.size() != t.bytes)
      throw std::logic_error("GGUF tensor " + t.name + ": " + std::to_string(bytes.size()) + " bytes given, " +
                             std::to_string(t.bytes) + " expected");
    emit(bytes.data(), bytes.size());
    const std::uint64_t pad = padded(t.bytes, alignment_) - t.bytes;
    emit(zeros.data(), pad);
    size += t.bytes + pad;
  }
  if (std::fflush(file.get()) != 0) write_failed(path);
  if (std::fclose(file.release()) != 0) write_failed(path);
  return size;
}

}  // namespace ranktune
