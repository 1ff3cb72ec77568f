// h5.h: every dtype round-trips bit-exact (bf16 over all 65536 bit patterns, NaN payloads included), the HDF5
// types are the ones h5py expects, Fletcher32 catches a flipped byte, attributes and names behave, locking is
// configurable and a lock failure carries the HDF5_USE_FILE_LOCKING hint.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ranktune/io/h5.h"
#include "support/scratch_dir.h"

namespace fs = std::filesystem;
using namespace ranktune;

namespace {

class H5Test : public testing::Test {
 protected:
  void SetUp() override { unsetenv("HDF5_USE_FILE_LOCKING"); }  // the knob under test must not be overridden
  std::string file(const std::string& name) const { return dir_ / name; }
  test::ScratchDir dir_{"h5_" + test::test_name()};
};

// Bitwise equality: dtype, shape and every byte.
void expect_bit_equal(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  ASSERT_EQ(0, std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<std::size_t>(x.numel() * x.element_size()))) << what;
}

at::Tensor random_of(at::ScalarType dt, at::IntArrayRef shape) {
  if (dt == at::kBool) return at::randint(0, 2, shape, at::kLong).to(at::kBool);
  if (at::isFloatingType(dt)) return (at::randn(shape, at::kDouble) * 1000).to(dt);
  if (dt == at::kByte) return at::randint(0, 256, shape, at::kLong).to(dt);
  const double lo = dt == at::kChar ? -128 : dt == at::kShort ? -32768 : -2147483648.0;
  const double hi = dt == at::kChar ? 127 : dt == at::kShort ? 32767 : 2147483647.0;
  at::Tensor t = at::randint(static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi), shape, at::kLong);
  if (dt == at::kLong) t = t * 4294967296LL + 12345;  // beyond 32 bits
  return t.to(dt);
}

}  // namespace

TEST_F(H5Test, EveryDtypeRoundTripsBitExact) {
  at::manual_seed(7);
  const at::ScalarType dtypes[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kChar,
                                   at::kShort, at::kInt,    at::kLong, at::kByte,     at::kBool};
  const std::vector<std::vector<std::int64_t>> shapes = {{}, {0}, {3, 0}, {1}, {17}, {5, 7}, {2, 3, 4}, {300, 1000}};
  std::map<std::string, at::Tensor> written;
  {
    h5::File f = h5::file_create(file("all.h5"), h5::FileLocking::best_effort);
    for (auto dt : dtypes)
      for (std::size_t s = 0; s < shapes.size(); ++s) {
        const std::string name = std::string("t.") + h5::dtype_name(dt) + ".s" + std::to_string(s);
        at::Tensor t = random_of(dt, shapes[s]);
        h5::tensor_write(f.get(), h5::path_from_dotted(name), t);
        written[name] = t;
      }
    h5::file_close(f);
  }
  h5::File f = h5::file_open(file("all.h5"), h5::FileLocking::best_effort);
  std::size_t seen = 0;
  for (const auto& p : h5::datasets_list(f.get())) {
    const std::string name = h5::dotted_from_path(p);
    ASSERT_TRUE(written.count(name)) << name;
    expect_bit_equal(written[name], h5::tensor_read(f.get(), p), name);
    const auto info = h5::tensor_info(f.get(), p);
    EXPECT_EQ(info.dtype, h5::dtype_name(written[name].scalar_type()));
    EXPECT_EQ(info.shape, std::vector<std::int64_t>(written[name].sizes().begin(), written[name].sizes().end()));
    const bool chunkable = written[name].dim() > 0 && written[name].numel() > 0;
    EXPECT_EQ(info.chunked, chunkable) << name;
    EXPECT_EQ(info.fletcher32, chunkable) << name;
    ++seen;
  }
  EXPECT_EQ(seen, written.size());
}

TEST_F(H5Test, Bf16AllBitPatternsAndNanPayloadsExact) {
  const at::Tensor bits = at::arange(65536, at::kInt).to(at::kShort);  // wraps to every int16 pattern
  const at::Tensor bf = bits.view(at::kBFloat16).reshape({256, 256});
  const at::Tensor half = bits.view(at::kHalf);
  {
    h5::File f = h5::file_create(file("bf.h5"), h5::FileLocking::best_effort);
    h5::tensor_write(f.get(), "bf16", bf);
    h5::tensor_write(f.get(), "fp16", half);
    h5::file_close(f);
  }
  h5::File f = h5::file_open(file("bf.h5"), h5::FileLocking::best_effort);
  expect_bit_equal(bf, h5::tensor_read(f.get(), "bf16"), "bf16");
  expect_bit_equal(half, h5::tensor_read(f.get(), "fp16"), "fp16");
  // bf16 is the committed type /_types/bfloat16: 2 bytes, 8-bit exponent at bit 7, 7-bit mantissa, bias 127.
  ASSERT_TRUE(h5::exists(f.get(), "_types/bfloat16"));
  h5::Dataset ds(H5Dopen2(f.get(), "bf16", H5P_DEFAULT));
  h5::Type t(H5Dget_type(ds.get()));
  EXPECT_GT(H5Tcommitted(t.get()), 0);
  EXPECT_EQ(H5Tget_class(t.get()), H5T_FLOAT);
  EXPECT_EQ(H5Tget_size(t.get()), 2u);
  std::size_t spos, epos, esize, mpos, msize;
  ASSERT_GE(H5Tget_fields(t.get(), &spos, &epos, &esize, &mpos, &msize), 0);
  EXPECT_EQ(spos, 15u);
  EXPECT_EQ(epos, 7u);
  EXPECT_EQ(esize, 8u);
  EXPECT_EQ(mpos, 0u);
  EXPECT_EQ(msize, 7u);
  EXPECT_EQ(H5Tget_ebias(t.get()), 127u);
  // HDF5's own conversion to float32 (what h5py does) gives exactly the widened bits.
  std::vector<float> as_f32(65536);
  ASSERT_GE(H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, as_f32.data()), 0);
  const at::Tensor want = bf.reshape({-1}).to(at::kFloat);
  const at::Tensor got = at::from_blob(as_f32.data(), {65536}, at::kFloat);
  const at::Tensor nan = want.isnan();
  EXPECT_TRUE(got.isnan().equal(nan));
  EXPECT_TRUE(want.masked_fill(nan, 0).view(at::kInt).equal(got.masked_fill(nan, 0).view(at::kInt)));
}

TEST_F(H5Test, ChunksCarryFletcher32AndDamageIsDetected) {
  const at::Tensor t = at::arange(1 << 20, at::kFloat).reshape({1024, 1024});  // 4 MiB: several chunks
  {
    h5::File f = h5::file_create(file("c.h5"), h5::FileLocking::best_effort);
    h5::tensor_write(f.get(), "w", t, h5::TensorWriteOptions{1 << 20, true});
    h5::file_close(f);
  }
  haddr_t addr = 0;
  hsize_t size = 0, nchunks = 0;
  {
    h5::File f = h5::file_open(file("c.h5"), h5::FileLocking::best_effort);
    h5::Dataset ds(H5Dopen2(f.get(), "w", H5P_DEFAULT));
    h5::Plist dcpl(H5Dget_create_plist(ds.get()));
    hsize_t chunk[2];
    ASSERT_EQ(H5Pget_chunk(dcpl.get(), 2, chunk), 2);
    EXPECT_EQ(chunk[0] * chunk[1] * 4, 1u << 20);
    h5::Dataspace space(H5Dget_space(ds.get()));
    ASSERT_GE(H5Dget_num_chunks(ds.get(), space.get(), &nchunks), 0);
    EXPECT_EQ(nchunks, 4u);
    hsize_t offset[2];
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info(ds.get(), space.get(), 2, offset, &mask, &addr, &size), 0);
  }
  {
    std::fstream io(file("c.h5"), std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(addr + size / 2));
    char c = 0;
    io.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    io.seekp(static_cast<std::streamoff>(addr + size / 2));
    io.write(&c, 1);
  }
  h5::File f = h5::file_open(file("c.h5"), h5::FileLocking::best_effort);
  try {
    h5::tensor_read(f.get(), "w");
    FAIL() << "a flipped byte in a chunk was not detected";
  } catch (const h5::H5Error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset 'w'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Fletcher32"), std::string::npos) << e.what();
  }
}

TEST_F(H5Test, AttributesUtf8IntsAndKinds) {
  h5::File f = h5::file_create(file("a.h5"), h5::FileLocking::best_effort);
  const std::string text = "Grüße, ☃ — [train]\nlr = 3e-4\n";
  h5::attr_write_string(f.get(), "config", text);
  h5::attr_write_string(f.get(), "empty", "");
  h5::attr_write_int(f.get(), "step", -9000000000LL);
  h5::attr_write_ints(f.get(), "dims", {4, 5, 6});
  h5::attr_write_ints(f.get(), "none", {});
  h5::attr_write_string(f.get(), "config", text + "x");  // replaces
  EXPECT_EQ(h5::attr_read_string(f.get(), "config"), text + "x");
  EXPECT_EQ(h5::attr_read_string(f.get(), "empty"), "");
  EXPECT_EQ(h5::attr_read_int(f.get(), "step"), -9000000000LL);
  EXPECT_EQ(h5::attr_read_ints(f.get(), "dims"), (std::vector<std::int64_t>{4, 5, 6}));
  EXPECT_TRUE(h5::attr_read_ints(f.get(), "none").empty());
  EXPECT_EQ(h5::attr_kind(f.get(), "config"), h5::AttrKind::string);
  EXPECT_EQ(h5::attr_kind(f.get(), "step"), h5::AttrKind::integer);
  EXPECT_EQ(h5::attr_kind(f.get(), "dims"), h5::AttrKind::integers);
  EXPECT_EQ(h5::attr_names(f.get()), (std::vector<std::string>{"config", "dims", "empty", "none", "step"}));
  EXPECT_THROW(h5::attr_read_int(f.get(), "config"), h5::H5Error);
  EXPECT_THROW(h5::attr_read_string(f.get(), "missing"), h5::H5Error);
  EXPECT_THROW(h5::attr_write_string(f.get(), "nul", std::string("a\0b", 3)), h5::H5Error);
  // The stored string type is variable-length UTF-8 (h5py returns str).
  h5::Attribute a(H5Aopen(f.get(), "config", H5P_DEFAULT));
  h5::Type t(H5Aget_type(a.get()));
  EXPECT_GT(H5Tis_variable_str(t.get()), 0);
  EXPECT_EQ(H5Tget_cset(t.get()), H5T_CSET_UTF8);
}

TEST_F(H5Test, DottedNamesAndGroups) {
  EXPECT_EQ(h5::path_from_dotted("model.layers.0.attn.wq.weight"), "model/layers/0/attn/wq/weight");
  EXPECT_EQ(h5::dotted_from_path("model/layers/0/attn/wq/weight"), "model.layers.0.attn.wq.weight");
  EXPECT_EQ(h5::path_from_dotted("x"), "x");
  for (const char* bad : {"", ".a", "a.", "a..b", "a/b.c"}) EXPECT_THROW(h5::path_from_dotted(bad), h5::H5Error) << bad;
  h5::File f = h5::file_create(file("g.h5"), h5::FileLocking::best_effort);
  h5::tensor_write(f.get(), "model/layers/0/w", at::ones({2}));
  h5::tensor_write(f.get(), "model/layers/1/w", at::ones({2}));
  EXPECT_TRUE(h5::exists(f.get(), "model/layers/0"));
  EXPECT_TRUE(h5::exists(f.get(), "model/layers/0/w"));
  EXPECT_FALSE(h5::exists(f.get(), "model/layers/2"));
  EXPECT_FALSE(h5::exists(f.get(), "model/layers/0/w/deeper"));  // a dataset is not a group
  EXPECT_EQ(h5::datasets_list(f.get()), (std::vector<std::string>{"model/layers/0/w", "model/layers/1/w"}));
  h5::Group g = h5::group_open(f.get(), "model/layers");
  EXPECT_EQ(h5::datasets_list(g.get()), (std::vector<std::string>{"0/w", "1/w"}));
  EXPECT_THROW(h5::tensor_write(f.get(), "model/layers/0/w", at::ones({2})), h5::H5Error);  // exists already
  EXPECT_THROW(h5::tensor_read(f.get(), "model/nothing"), h5::H5Error);
  EXPECT_THROW(h5::tensor_write(f.get(), "c", at::ones({2}, at::kComplexFloat)), h5::H5Error);
}

TEST_F(H5Test, BlobsRoundTrip) {
  h5::File f = h5::file_create(file("b.h5"), h5::FileLocking::best_effort);
  std::vector<std::uint8_t> blob(5000);
  for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<std::uint8_t>(i * 31 + 7);
  h5::bytes_write(f.get(), "rng/cpu", blob.data(), blob.size());
  h5::bytes_write(f.get(), "rng/empty", nullptr, 0);
  EXPECT_EQ(h5::bytes_read(f.get(), "rng/cpu"), blob);
  EXPECT_TRUE(h5::bytes_read(f.get(), "rng/empty").empty());
  EXPECT_EQ(h5::tensor_info(f.get(), "rng/cpu").dtype, "bytes");
  h5::tensor_write(f.get(), "t", at::ones({3}, at::kByte));
  EXPECT_THROW(h5::bytes_read(f.get(), "t"), h5::H5Error);  // a uint8 tensor is not a blob
}

TEST_F(H5Test, IdenticalContentGivesIdenticalBytes) {
  for (const char* name : {"d1.h5", "d2.h5"}) {
    h5::File f = h5::file_create(file(name), h5::FileLocking::best_effort);
    h5::attr_write_string(f.get(), "s", "x");
    h5::tensor_write(f.get(), "a/b", at::arange(100, at::kFloat).to(at::kBFloat16));
    h5::file_close(f);
    sleep(1);  // object timestamps, were they on, would differ
  }
  std::ifstream a(file("d1.h5"), std::ios::binary), b(file("d2.h5"), std::ios::binary);
  const std::string x((std::istreambuf_iterator<char>(a)), {}), y((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(x, y);
}

TEST_F(H5Test, LockingKnobAndHint) {
  {
    h5::File f = h5::file_create(file("l.h5"), h5::FileLocking::best_effort);
    h5::file_close(f);
  }
  // Another open file description holds an exclusive flock, as a writer on another node would.
  const int fd = ::open(file("l.h5").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  for (auto mode : {h5::FileLocking::on, h5::FileLocking::best_effort}) {
    try {
      h5::file_open(file("l.h5"), mode);
      ADD_FAILURE() << "opened a locked file with locking " << h5::file_locking_name(mode);
    } catch (const h5::H5Error& e) {
      EXPECT_NE(std::string(e.what()).find(file("l.h5")), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("HDF5_USE_FILE_LOCKING"), std::string::npos) << e.hint();
    }
  }
  EXPECT_NO_THROW(h5::file_open(file("l.h5"), h5::FileLocking::off));
  ::close(fd);
  EXPECT_EQ(h5::file_locking_parse("best-effort"), h5::FileLocking::best_effort);
  EXPECT_EQ(h5::file_locking_parse("true"), h5::FileLocking::on);
  EXPECT_EQ(h5::file_locking_parse("false"), h5::FileLocking::off);
  EXPECT_THROW(h5::file_locking_parse("maybe"), ConfigError);
}

TEST_F(H5Test, MissingFileNamesThePath) {
  try {
    h5::file_open(file("nope.h5"), h5::FileLocking::best_effort);
    FAIL();
  } catch (const h5::H5Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.h5"), std::string::npos) << e.what();
    EXPECT_TRUE(e.hint().empty()) << e.hint();
  }
}

// Every stored chunk of dataset `name` in the two files: the same logical offsets, filter masks and raw bytes (the
// data, its zero padding at the edge, the checksum), read with H5Dread_chunk past the filter pipeline.
void expect_same_chunks(hid_t fa, hid_t fb, const std::string& name) {
  h5::Dataset a(H5Dopen2(fa, name.c_str(), H5P_DEFAULT)), b(H5Dopen2(fb, name.c_str(), H5P_DEFAULT));
  h5::Dataspace sa(H5Dget_space(a.get())), sb(H5Dget_space(b.get()));
  const int rank = H5Sget_simple_extent_ndims(sa.get());
  hsize_t na = 0, nb = 0;
  ASSERT_GE(H5Dget_num_chunks(a.get(), sa.get(), &na), 0);
  ASSERT_GE(H5Dget_num_chunks(b.get(), sb.get(), &nb), 0);
  ASSERT_EQ(na, nb) << name;
  for (hsize_t i = 0; i < na; ++i) {
    std::vector<hsize_t> oa(static_cast<std::size_t>(rank)), ob(oa.size());
    unsigned ma = 0, mb = 0;
    haddr_t aa = 0, ab = 0;
    hsize_t za = 0, zb = 0;
    ASSERT_GE(H5Dget_chunk_info(a.get(), sa.get(), i, oa.data(), &ma, &aa, &za), 0);
    ASSERT_GE(H5Dget_chunk_info(b.get(), sb.get(), i, ob.data(), &mb, &ab, &zb), 0);
    ASSERT_EQ(oa, ob) << name << " chunk " << i;
    ASSERT_EQ(ma, mb) << name << " chunk " << i;
    ASSERT_EQ(za, zb) << name << " chunk " << i;
    std::vector<std::uint8_t> ra(za), rb(zb);
    std::uint32_t fma = 0, fmb = 0;
    ASSERT_GE(H5Dread_chunk(a.get(), H5P_DEFAULT, oa.data(), &fma, ra.data()), 0);
    ASSERT_GE(H5Dread_chunk(b.get(), H5P_DEFAULT, ob.data(), &fmb, rb.data()), 0);
    ASSERT_TRUE(ra == rb) << name << " chunk " << i << ": stored bytes differ";
  }
}

// The direct chunk writer (TensorWriteOptions::direct_chunks) stores what the Fletcher32 filter pipeline stores:
// every chunk's bytes the same (data, zero padding of the edge chunk, checksum), on one thread and on several, for
// edge chunks, odd chunk sizes (the checksum's odd last byte), slices of several chunks, every dtype, zeros and
// all-ones words, and shapes whose chunks cut the trailing dimensions (which take the pipeline). The hook sees the
// same slices. The files differ only in where HDF5 placed its chunk index (the direct calls allocate it after the
// first chunk); written twice, the direct path's file is the same byte for byte.
TEST_F(H5Test, DirectChunksStoreWhatTheFilterPipelineStores) {
  struct Case {
    at::Tensor t;
    std::size_t chunk_bytes, slice_bytes;
  };
  const std::vector<Case> cases = {
      {random_of(at::kFloat, {1000, 37}), 4096, 3 * 4096},  // 27 rows a chunk, 3 chunks a slice, an edge chunk
      {random_of(at::kBFloat16, {513, 64}), 1 << 20, 0},    // one chunk, one write
      {random_of(at::kByte, {100003}), 4095, 5 * 4095},     // odd chunk bytes, an odd edge
      {random_of(at::kLong, {7, 9, 11}), 800, 1600},        // 3-D, whole rows of 9x11
      {random_of(at::kBool, {12345}), 1000, 0},             // bool stored as uint8
      {random_of(at::kHalf, {3, 5000}), 4096, 4096},        // a row above the chunk: the pipeline
      {at::zeros({4096}, at::kFloat), 1024, 2048},          // zeros: the checksum of nothing but zero words
      {at::full({70000}, -1, at::kShort), 4096, 1 << 20},   // 0xFFFF words: the sums' folding at its limits
  };
  const auto write = [&](const std::string& name, bool direct, std::vector<int>& hooks) {
    h5::File f = h5::file_create(file(name), h5::FileLocking::best_effort);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      h5::TensorWriteOptions o;
      o.chunk_bytes = cases[i].chunk_bytes;
      o.slice_bytes = cases[i].slice_bytes;
      o.direct_chunks = direct;
      o.after_write = [&hooks, i] { hooks.push_back(static_cast<int>(i)); };
      h5::tensor_write(f.get(), "t" + std::to_string(i), cases[i].t, o);
    }
    h5::file_close(f);
  };
  const auto bytes = [&](const std::string& name) {
    std::ifstream in(file(name), std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const int threads_before = at::get_num_threads();
  for (const int threads : {1, 3}) {
    SCOPED_TRACE(std::to_string(threads) + " thread(s)");
    at::set_num_threads(threads);
    std::vector<int> pipeline_hooks, direct_hooks, again_hooks;
    write("pipeline.h5", false, pipeline_hooks);
    write("direct.h5", true, direct_hooks);
    write("again.h5", true, again_hooks);
    EXPECT_EQ(pipeline_hooks, direct_hooks);
    EXPECT_GT(pipeline_hooks.size(), cases.size());  // some datasets were written in several slices
    EXPECT_TRUE(bytes("direct.h5") == bytes("again.h5"));
    h5::File fa = h5::file_open(file("pipeline.h5"), h5::FileLocking::best_effort);
    h5::File fb = h5::file_open(file("direct.h5"), h5::FileLocking::best_effort);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const std::string name = "t" + std::to_string(i);
      expect_same_chunks(fa.get(), fb.get(), name);
      expect_bit_equal(h5::tensor_read(fb.get(), name), cases[i].t, name);
    }
  }
  at::set_num_threads(threads_before);
}

// Fletcher's checksum as HDF5 defines it, on vectors worked by hand: words are big-endian, an odd last byte is the
// high byte of a word, and a sum that is a multiple of 65535 stays 0xFFFF unless it is zero.
TEST(H5Fletcher32, HandWorkedVectors) {
  const std::uint8_t abcde[] = {'a', 'b', 'c', 'd', 'e'};
  // words 0x6162, 0x6364, then 0x6500: the sums a = 0x6162 + 0x6364 + 0x6500 and b = the sum of a's running values,
  // each reduced mod 65535 into 1..65535.
  const auto mod = [](std::uint32_t x) { return x == 0 ? 0u : (x - 1) % 65535 + 1; };
  const std::uint32_t a = 0x6162 + 0x6364 + 0x6500, b = 0x6162 + (0x6162 + 0x6364) + a;
  EXPECT_EQ(h5::fletcher32(abcde, 5), (mod(b) << 16) | mod(a));
  EXPECT_EQ(h5::fletcher32(abcde, 4), (mod(0x6162 + 0x6162 + 0x6364) << 16) | mod(0x6162 + 0x6364));
  EXPECT_EQ(h5::fletcher32(abcde, 0), 0u);
  const std::vector<std::uint8_t> ones(4000, 0xFF);  // every word 0xFFFF = 65535: both sums multiples of 65535
  EXPECT_EQ(h5::fletcher32(ones.data(), ones.size()), 0xFFFFFFFFu);
}
