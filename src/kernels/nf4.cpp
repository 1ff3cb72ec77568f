// NF4 quantization as bitsandbytes 0.50 does it on CPU, and the ATen dequantization (the CUDA kernel is nf4.cu).
// The 4-bit stage repeats bnb's default backend op for op (float32 reciprocal-multiply, clamp, bucketize on the code
// midpoints: a value on a midpoint takes the lower code), so it is exact on any device; on the CPU the same float32
// operations run fused, one pass over the weight (the ATen chain took ~0.4 s of CPU per 5632x2048 weight, most of it
// in bucketize; the pass ~0.03 s). The 8-bit stage of the absmaxes repeats bnb's native CPU kernel, which rounds
// through a 65536-entry lookup table rather than to the nearest code: only the same table gives the same bytes.
#include "ranktune/kernels/nf4.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/core/parallel_range.h"
#ifdef RANKTUNE_HAVE_CUDA
#include "nf4_cuda.h"
#endif

namespace ranktune {
namespace {

// QLoRA's NF4 code: quantiles of N(0, 1) scaled to [-1, 1], with an exact zero.
// clang-format off
constexpr std::array<float, 16> kNf4Code = {
    -1.0f,  -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
    1.0f};
// clang-format on

constexpr int kLutSize = 65536;

// bnb's create_dynamic_map(signed=True): for each decade 10^-6 .. 10^0, the midpoints of an evenly spaced split of
// [0.1, 1] (2^i parts for the i-th decade) with both signs, plus 0 and 1, sorted. Built with the same torch ops as
// bnb so that every float is the same.
std::vector<float> build_dynamic_map() {
  constexpr std::array<double, 7> kDecade = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const at::Tensor bounds = at::linspace(0.1, 1, (std::int64_t{1} << i) + 1, at::kFloat);
    const at::Tensor means = (bounds.slice(0, 0, -1) + bounds.slice(0, 1)) / 2.0;
    for (double sign : {1.0, -1.0}) {
      const at::Tensor v = (means * (sign * kDecade[i])).contiguous();
      data.insert(data.end(), v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  return data;
}

const std::vector<float>& dynamic_map() {
  static const std::vector<float> map = build_dynamic_map();
  return map;
}

// bnb's CPU table: entry i holds the first code whose midpoint with its successor is not below the point
// -1 + 2i/65535; a normalized value picks the entry of its nearest point.
const std::array<std::uint8_t, kLutSize>& dynamic_lut() {
  static const std::array<std::uint8_t, kLutSize> lut = [] {
    const std::vector<float>& code = dynamic_map();
    std::array<float, 255> mid{};
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (code[i] + code[i + 1]);
    std::array<std::uint8_t, kLutSize> t{};
    int c = 0;
    for (int i = 0; i < kLutSize; ++i) {
      const float point = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1);
      while (c < 255 && mid[c] < point) ++c;
      t[i] = static_cast<std::uint8_t>(c);
    }
    return t;
  }();
  return lut;
}

std::uint16_t lut_index(float normalized) {
  const float v = std::clamp(normalized, -1.0f, 1.0f);
  return static_cast<std::uint16_t>((v + 1.0f) * 0.5f * static_cast<float>(kLutSize - 1) + 0.5f);
}

// bnb's quantize_blockwise on CPU (blocks of 256, float32 input): per block its absmax, then each value divided by it
// through the table; an all-zero block gets absmax 0 and code 0.
void quantize_blockwise_8bit(const float* x, std::int64_t n, std::uint8_t* q, float* absmax) {
  const auto& lut = dynamic_lut();
  for (std::int64_t b = 0; b * kNf4NestedBlockSize < n; ++b) {
    const std::int64_t begin = b * kNf4NestedBlockSize, end = std::min(n, begin + kNf4NestedBlockSize);
    float m = 0.0f;
    for (std::int64_t i = begin; i < end; ++i) m = std::max(m, std::fabs(x[i]));
    absmax[b] = m;
    if (m == 0.0f) {
      std::fill(q + begin, q + end, std::uint8_t{0});
      continue;
    }
    const float inv = 1.0f / m;
    for (std::int64_t i = begin; i < end; ++i) q[i] = lut[lut_index(x[i] * inv)];
  }
}

// The 16 codes' midpoints as bnb computes them: (code[:-1] + code[1:]) / 2 in float32.
std::array<float, 15> nf4_midpoints() {
  std::array<float, 15> mid{};
  for (int k = 0; k < 15; ++k) mid[k] = (kNf4Code[k] + kNf4Code[k + 1]) / 2.0f;
  return mid;
}

// bnb clamps an absmax to 1e-38 before dividing by it (a float32 subnormal, as torch rounds the Python scalar).
constexpr float kAbsmaxFloor = static_cast<float>(1e-38);

// One block of the CPU pass, in float32 throughout and with loops of fixed length, which the compiler vectorizes.
// A last partial block is padded with zeros: they change no absmax and take the code of 0, which is also what an odd
// element count's padding nibble is.
struct Nf4Block {
  float v[kNf4BlockSize];
  std::int32_t code[kNf4BlockSize];

  // The largest |v| and whether every v is finite, through the bits: for a non-negative float, the integer order of
  // its bits is its order, and +Inf and NaN have the largest bits.
  std::pair<float, bool> absmax() const {
    std::int32_t top = 0;
    for (std::int64_t i = 0; i < kNf4BlockSize; ++i)
      top = std::max(top, std::bit_cast<std::int32_t>(v[i]) & std::numeric_limits<std::int32_t>::max());
    return {std::bit_cast<float>(top), top < std::bit_cast<std::int32_t>(std::numeric_limits<float>::infinity())};
  }

  // bucketize(v, midpoints, right=False): how many midpoints lie strictly below, so a value on a midpoint takes the
  // lower code.
  void encode(const std::array<float, 15>& mid) {
    for (std::int64_t i = 0; i < kNf4BlockSize; ++i) code[i] = 0;
    for (float m : mid)
      for (std::int64_t i = 0; i < kNf4BlockSize; ++i) code[i] += v[i] > m ? 1 : 0;
  }
};

// The 4-bit stage on a CPU weight of `n` elements: the reference's float32 operations block by block, blocks split
// over the intra-op threads. Returns false, with the outputs unspecified, if a value is NaN or Inf.
template <typename T>
bool quantize_4bit_cpu(const T* x, std::int64_t n, std::uint8_t* packed, float* absmax) {
  const std::array<float, 15> mid = nf4_midpoints();
  const std::int64_t blocks = (n + kNf4BlockSize - 1) / kNf4BlockSize;
  std::atomic<bool> finite{true};
  parallel_range(blocks, /*grain=*/2048, at::get_num_threads(), [&](std::int64_t b0, std::int64_t b1) {
    Nf4Block blk;
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t begin = b * kNf4BlockSize, len = std::min(kNf4BlockSize, n - begin);
      if (len == kNf4BlockSize) {
        for (std::int64_t i = 0; i < kNf4BlockSize; ++i) blk.v[i] = static_cast<float>(x[begin + i]);
      } else {
        for (std::int64_t i = 0; i < kNf4BlockSize; ++i) blk.v[i] = i < len ? static_cast<float>(x[begin + i]) : 0.0f;
      }
      const auto [m, ok] = blk.absmax();
      if (!ok) {
        finite = false;
        return;
      }
      if (len == kNf4BlockSize) {  // a whole block: times the reciprocal of the clamped absmax; the unclamped is kept
        const float r = 1.0f / std::max(m, kAbsmaxFloor);
        for (std::int64_t i = 0; i < kNf4BlockSize; ++i) blk.v[i] = std::clamp(blk.v[i] * r, -1.0f, 1.0f);
        absmax[b] = m;
      } else {  // the last partial block: divided by its clamped absmax, which is what is kept
        const float d = std::max(m, kAbsmaxFloor);
        for (std::int64_t i = 0; i < kNf4BlockSize; ++i) blk.v[i] = std::clamp(blk.v[i] / d, -1.0f, 1.0f);
        absmax[b] = d;
      }
      blk.encode(mid);
      std::uint8_t out[kNf4BlockSize / 2];
      for (std::int64_t j = 0; j < kNf4BlockSize / 2; ++j)
        out[j] = static_cast<std::uint8_t>((blk.code[2 * j] << 4) | blk.code[2 * j + 1]);
      std::memcpy(packed + begin / 2, out, static_cast<std::size_t>((len + 1) / 2));
    }
  });
  return finite;
}

// The 8-bit stage, on the CPU whatever the weight's device: absmax - mean(absmax) in blocks of 256. `absmax` is the
// float32 per-block absmax of the 4-bit stage.
void double_quantize(Nf4Weight& w, const at::Tensor& absmax_any_device, const at::Device& device) {
  const at::Tensor absmax = absmax_any_device.to(at::kCPU).contiguous();
  const at::Tensor offset = absmax.mean();
  w.offset = offset.item<float>();
  const at::Tensor centred = (absmax - offset).contiguous();
  const std::int64_t blocks = centred.numel();
  at::Tensor q8 = at::empty({blocks}, at::kByte);
  at::Tensor nested = at::empty({(blocks + kNf4NestedBlockSize - 1) / kNf4NestedBlockSize}, at::kFloat);
  quantize_blockwise_8bit(centred.data_ptr<float>(), blocks, q8.data_ptr<std::uint8_t>(), nested.data_ptr<float>());
  w.absmax = q8.to(device);
  w.nested_absmax = nested.to(device);
  w.nested_quant_map = nf4_dynamic_map().to(device);
}

[[noreturn]] void throw_nonfinite() {
  throw UsageError("nf4: the weight holds NaN or Inf values, which 4-bit blocks cannot represent");
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kFloat: return "float32";
    default: throw LibraryError(std::string("nf4: unsupported weight dtype ") + c10::toString(t));
  }
}

// Python's repr of a float (what json.dumps writes): the shortest round-trip digits, positional for decimal exponents
// -4..15 (with ".0" on integers), else d.ddde+XX.
std::string python_float_repr(double x) {
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const auto e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const auto nd = static_cast<int>(digits.size());
  std::string out;
  if (exp < -4 || exp >= 16) {
    const int a = std::abs(exp);
    out = digits.substr(0, 1) + (nd > 1 ? "." + digits.substr(1) : "") + "e" + (exp < 0 ? "-" : "+") +
          (a < 10 ? "0" : "") + std::to_string(a);
  } else if (exp < 0) {
    out = "0." + std::string(-exp - 1, '0') + digits;
  } else if (nd <= exp + 1) {
    out = digits + std::string(exp + 1 - nd, '0') + ".0";
  } else {
    out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
  }
  return sign + out;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw LibraryError("nf4: " + what);
}

void check_table(const at::Tensor& t, const char* name, std::int64_t size, at::ScalarType dtype, at::Device device) {
  require(t.defined(), std::string(name) + " is missing");
  require(t.scalar_type() == dtype && t.numel() == size && t.device() == device,
          std::string(name) + " must be " + c10::toString(dtype) + " with " + std::to_string(size) + " elements on " +
              device.str() + ", got " + c10::toString(t.scalar_type()) + " with " + std::to_string(t.numel()) + " on " +
              t.device().str());
}

// Shape, dtype and size checks shared by both quantization paths.
Nf4Weight nf4_prepare(const at::Tensor& weight) {
  Nf4Weight w;
  w.dtype = weight.scalar_type();
  dtype_name(w.dtype);
  w.shape = weight.sizes().vec();
  require(weight.numel() > 0 && weight.dim() > 0, "cannot quantize an empty or 0-d weight");
  return w;
}

}  // namespace

std::int64_t Nf4Weight::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Nf4Weight Nf4Weight::to(at::Device device) const {
  Nf4Weight w = *this;
  for (at::Tensor* t : {&w.packed, &w.absmax, &w.quant_map, &w.nested_absmax, &w.nested_quant_map}) *t = t->to(device);
  return w;
}

at::Tensor nf4_code() { return at::tensor(at::ArrayRef<float>(kNf4Code.data(), kNf4Code.size())); }

at::Tensor nf4_dynamic_map() { return at::tensor(at::ArrayRef<float>(dynamic_map())); }

Nf4Weight nf4_quantize(const at::Tensor& weight) {
  if (!weight.device().is_cpu()) return nf4_quantize_reference(weight);
  Nf4Weight w = nf4_prepare(weight);
  const std::int64_t n = weight.numel();
  const at::Tensor x = weight.contiguous();
  at::Tensor packed = at::empty({(n + 1) / 2, 1}, at::kByte);
  at::Tensor absmax = at::empty({w.blocks()}, at::kFloat);
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "nf4_quantize", [&] {
    finite =
        quantize_4bit_cpu(x.const_data_ptr<scalar_t>(), n, packed.data_ptr<std::uint8_t>(), absmax.data_ptr<float>());
  });
  if (!finite) throw_nonfinite();
  w.packed = packed;
  w.quant_map = nf4_code();
  double_quantize(w, absmax, weight.device());
  return w;
}

Nf4Weight nf4_quantize_reference(const at::Tensor& weight) {
  Nf4Weight w = nf4_prepare(weight);
  const std::int64_t n = weight.numel();
  const at::Tensor a = weight.reshape(-1).to(at::kFloat);
  if (!a.isfinite().all().item<bool>()) throw_nonfinite();

  // 4-bit stage: whole blocks scale by a reciprocal, a last partial block divides (bnb does both, and they round
  // differently); bnb clamps a partial block's absmax to 1e-38 but not the others'.
  const at::Device device = weight.device();
  const std::int64_t rem = n % kNf4BlockSize, full = n - rem;
  std::vector<at::Tensor> absmaxes, scaled;
  if (full > 0) {
    const at::Tensor blocks = a.slice(0, 0, full).view({full / kNf4BlockSize, kNf4BlockSize});
    const at::Tensor m = blocks.abs().amax(1);
    absmaxes.push_back(m);
    scaled.push_back(at::clamp(blocks * m.clamp_min(1e-38).reciprocal().view({-1, 1}), -1, 1).view(-1));
  }
  if (rem > 0) {
    const at::Tensor tail = a.slice(0, full);
    const at::Tensor m = tail.abs().max().clamp_min(1e-38);
    absmaxes.push_back(m.view(1));
    scaled.push_back(at::clamp(tail / m, -1, 1));
  }
  if (n % 2 == 1) scaled.push_back(at::zeros({1}, a.options()));  // the padding nibble: code of 0
  const at::Tensor code = nf4_code().to(device);
  const at::Tensor mids = (code.slice(0, 0, -1) + code.slice(0, 1)) / 2;
  const at::Tensor q = at::bucketize(at::cat(scaled), mids, /*out_int32=*/true, /*right=*/false).to(at::kByte);
  w.packed = at::bitwise_or(at::bitwise_left_shift(q.slice(0, 0, c10::nullopt, 2), 4), q.slice(0, 1, c10::nullopt, 2))
                 .view({-1, 1});
  w.quant_map = code;
  double_quantize(w, at::cat(absmaxes), device);
  return w;
}

void nf4_check(const Nf4Weight& w) {
  dtype_name(w.dtype);
  require(!w.shape.empty(), "shape is empty (a 0-d weight)");
  for (std::int64_t d : w.shape) require(d > 0, "shape has a dimension of size 0 or less");
  require(std::isfinite(w.offset), "nested offset is not finite");
  require(w.packed.defined(), "packed weight is missing");
  const at::Device dev = w.packed.device();
  const std::int64_t blocks = w.blocks();
  check_table(w.packed, "packed weight", (w.numel() + 1) / 2, at::kByte, dev);
  check_table(w.absmax, "absmax", blocks, at::kByte, dev);
  check_table(w.quant_map, "quant_map", 16, at::kFloat, dev);
  check_table(w.nested_absmax, "nested_absmax", (blocks + kNf4NestedBlockSize - 1) / kNf4NestedBlockSize, at::kFloat,
              dev);
  check_table(w.nested_quant_map, "nested_quant_map", 256, at::kFloat, dev);
}

at::Tensor nf4_block_absmax(const Nf4Weight& w) {
  nf4_check(w);
  // bnb: code[q] * nested_absmax (float32 product), then + offset (float32 sum): two roundings, never fused.
  const std::int64_t blocks = w.blocks();
  const at::Tensor code = w.nested_quant_map.index_select(0, w.absmax.reshape(-1).to(at::kLong));
  const at::Tensor scale = w.nested_absmax.repeat_interleave(kNf4NestedBlockSize).slice(0, 0, blocks);
  return code * scale + at::scalar_tensor(w.offset, code.options());
}

at::Tensor nf4_dequantize(const Nf4Weight& w) { return nf4_dequantize(w, w.dtype); }

at::Tensor nf4_dequantize(const Nf4Weight& w, at::ScalarType dtype) {
  dtype_name(dtype);
  nf4_check(w);
#ifdef RANKTUNE_HAVE_CUDA
  if (w.packed.is_cuda()) return nf4_dequantize_cuda(w, dtype);
#endif
  if (!w.packed.device().is_cpu()) return nf4_dequantize_reference(w, dtype);
  // The reference's float32 product code * block absmax, then its rounding to `dtype`, one block at a time: the 16
  // products a block can take are formed once.
  const std::int64_t n = w.numel();
  const at::Tensor packed = w.packed.reshape(-1).contiguous();
  const at::Tensor scale = nf4_block_absmax(w).contiguous();
  const at::Tensor code = w.quant_map.contiguous();
  at::Tensor out = at::empty(w.shape, at::TensorOptions().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "nf4_dequantize", [&] {
    const std::uint8_t* p = packed.const_data_ptr<std::uint8_t>();
    const float* s = scale.const_data_ptr<float>();
    const float* c = code.const_data_ptr<float>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_range(w.blocks(), /*grain=*/2048, at::get_num_threads(), [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        float value[16];
        for (int k = 0; k < 16; ++k) value[k] = c[k] * s[b];
        const std::int64_t begin = b * kNf4BlockSize, end = std::min(n, begin + kNf4BlockSize);
        for (std::int64_t i = begin; i < end; ++i)
          o[i] = static_cast<scalar_t>(value[i % 2 ? p[i / 2] & 15 : p[i / 2] >> 4]);
      }
    });
  });
  return out;
}

at::Tensor nf4_dequantize_reference(const Nf4Weight& w, at::ScalarType dtype) {
  dtype_name(dtype);
  nf4_check(w);
  const std::int64_t n = w.numel(), blocks = w.blocks();
  const at::Tensor p = w.packed.reshape(-1);
  const at::Tensor codes =
      at::stack({at::bitwise_right_shift(p, 4), at::bitwise_and(p, 15)}, 1).view(-1).slice(0, 0, n).to(at::kLong);
  at::Tensor v = w.quant_map.index_select(0, codes);
  if (blocks * kNf4BlockSize != n) v = at::constant_pad_nd(v, {0, blocks * kNf4BlockSize - n});
  const at::Tensor out = v.view({blocks, kNf4BlockSize}) * nf4_block_absmax(w).view({blocks, 1});
  return out.view(-1).slice(0, 0, n).view(w.shape).to(dtype);
}

std::string nf4_quant_state_json(const Nf4Weight& w) {
  std::ostringstream s;
  s << R"({"quant_type": "nf4", "blocksize": )" << kNf4BlockSize << R"(, "dtype": ")" << dtype_name(w.dtype)
    << R"(", "shape": [)";
  for (std::size_t i = 0; i < w.shape.size(); ++i) s << (i ? ", " : "") << w.shape[i];
  s << R"(], "nested_blocksize": )" << kNf4NestedBlockSize << R"(, "nested_dtype": "float32", "nested_offset": )"
    << python_float_repr(w.offset) << "}";
  return s.str();
}

std::vector<std::pair<std::string, at::Tensor>> nf4_state_dict(const Nf4Weight& w, const std::string& prefix) {
  const std::string json = nf4_quant_state_json(w);
  const at::Tensor bytes =
      at::from_blob(const_cast<char*>(json.data()), {static_cast<std::int64_t>(json.size())}, at::kByte).clone();
  const std::string k = prefix + "weight";
  return {{k, w.packed},
          {k + ".absmax", w.absmax},
          {k + ".quant_map", w.quant_map},
          {k + ".nested_absmax", w.nested_absmax},
          {k + ".nested_quant_map", w.nested_quant_map},
          {k + ".quant_state.bitsandbytes__nf4", bytes.to(w.packed.device())}};
}

}  // namespace ranktune
