// The byte tokenizer written as HF files (the export of a byte-tokenizer run): read back by ranktune's own HF loader
// it gives the byte tokenizer's ids, bos/eos/pad and decodes; byte_tokenizer_file_is recognises exactly that file.
// transformers' side (AutoTokenizer on an export) is checked by tests/integration/check_export.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/byte_tokenizer_files.h"
#include "ranktune/data/hf_tokenizer.h"

namespace ranktune {
namespace {

TEST(ByteTokenizerFiles, HfLoaderGivesTheByteIds) {
  const auto hf = hf_tokenizer_parse(byte_tokenizer_json(), "byte tokenizer.json", byte_tokenizer_config_json());
  const ByteTokenizer byte;
  EXPECT_EQ(hf->vocab_size(), byte.vocab_size());
  EXPECT_EQ(hf->bos_id(), byte.bos_id());
  EXPECT_EQ(hf->eos_id(), byte.eos_id());
  EXPECT_EQ(hf->pad_id(), byte.pad_id());
  std::string every_byte_char;  // every code point of 1-4 UTF-8 bytes, some of each
  for (char32_t c : {U'\t', U'\n', U' ', U'a', U'~', U'\u00e9', U'\u0800', U'\u2603', U'\uffff', U'\U0001d11e'}) {
    if (c < 0x80) every_byte_char += static_cast<char>(c);
    else if (c < 0x800) every_byte_char += {static_cast<char>(0xc0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3f))};
    else if (c < 0x10000)
      every_byte_char += {static_cast<char>(0xe0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3f)),
                          static_cast<char>(0x80 | (c & 0x3f))};
    else
      every_byte_char += {static_cast<char>(0xf0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3f)),
                          static_cast<char>(0x80 | ((c >> 6) & 0x3f)), static_cast<char>(0x80 | (c & 0x3f))};
  }
  for (const std::string text :
       {std::string("Dara lives in a house."), std::string("  two  spaces\r\n"), std::string(), every_byte_char}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(hf->encode(text), byte.encode(text));
    EXPECT_EQ(hf->encode(text, false), byte.encode(text, false));
    EXPECT_EQ(hf->decode(byte.encode(text)), text);
  }
}

TEST(ByteTokenizerFiles, RecognisesOnlyItsOwnFile) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "ranktune_byte_tokenizer_files";
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return (dir / name).string();
  };
  EXPECT_TRUE(byte_tokenizer_file_is(write("same.json", byte_tokenizer_json())));
  std::string edited = byte_tokenizer_json();
  edited[edited.find("\"<0x41>\": 65")] = ' ';
  EXPECT_FALSE(byte_tokenizer_file_is(write("edited.json", edited)));
  EXPECT_FALSE(byte_tokenizer_file_is(write("longer.json", byte_tokenizer_json() + "\n")));
  EXPECT_FALSE(byte_tokenizer_file_is((dir / "missing.json").string()));
  std::filesystem::remove(dir / "same.json");
  std::filesystem::remove(dir / "edited.json");
  std::filesystem::remove(dir / "longer.json");
  std::filesystem::remove(dir);
}

}  // namespace
}  // namespace ranktune
