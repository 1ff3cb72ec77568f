// manifest.json: written with nlohmann::ordered_json so that the field order (and so the self-checksum's input) is
// the same for the writer and every reader.
#include "ranktune/io/manifest.h"

#include <nlohmann/json.hpp>

#include <cinttypes>
#include <cstdio>

#include "ranktune/core/error.h"
#include "ranktune/io/crc32c.h"

namespace ranktune {
namespace {

using Json = nlohmann::ordered_json;
constexpr const char* kSelfCrcKey = "manifest_crc32c";
constexpr const char* kFormatName = "ranktune-checkpoint";

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08" PRIx32, v);
  return buf;
}

std::string hex64(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

std::uint64_t parse_hex(const std::string& s, std::size_t digits, const char* what) {
  std::string body = s;
  if (digits == 16) {
    if (body.rfind("0x", 0) != 0) throw CheckpointError(std::string(what) + " must start with 0x");
    body = body.substr(2);
  }
  if (body.size() != digits || body.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw CheckpointError(std::string(what) + " '" + s + "' is not " + std::to_string(digits) + " hex digits");
  return std::stoull(body, nullptr, 16);
}

}  // namespace

std::string step_dir_name(long step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08ld", step);
  return buf;
}

std::optional<long> step_from_dir_name(std::string_view name) {
  constexpr std::string_view prefix = "step_";
  if (name.substr(0, prefix.size()) != prefix || name.size() == prefix.size() || name.size() > prefix.size() + 18)
    return std::nullopt;
  long v = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.h5", rank);
  return buf;
}

std::string manifest_to_json(const Manifest& m) {
  Json j;
  j["format"] = kFormatName;
  j["format_version"] = m.format_version;
  j["ranktune_version"] = m.ranktune_version;
  j["created_utc"] = m.created_utc;
  j["step"] = m.step;
  j["world_size"] = m.world_size;
  j["mode"] = m.mode;
  j["topology"] = m.topology;
  j["replicated"] = m.replicated;
  j["config_hash"] = hex64(m.config_hash);
  j["checksum"] = "crc32c";
  Json files = Json::array();
  for (const auto& f : m.files)
    files.push_back(Json{{"name", f.name}, {"rank", f.rank}, {"size", f.size}, {"crc32c", hex32(f.crc32c)}});
  j["files"] = std::move(files);
  const std::string body = j.dump(2);
  j[kSelfCrcKey] = hex32(crc32c(body.data(), body.size()));
  return j.dump(2) + "\n";
}

Manifest manifest_from_json(std::string_view text, const std::string& origin) {
  try {
    Json j = Json::parse(text);
    if (!j.is_object() || !j.contains(kSelfCrcKey)) throw CheckpointError("not a ranktune manifest");
    const auto stored = static_cast<std::uint32_t>(parse_hex(j.at(kSelfCrcKey).get<std::string>(), 8, kSelfCrcKey));
    j.erase(kSelfCrcKey);
    const std::string body = j.dump(2);
    if (crc32c(body.data(), body.size()) != stored)
      throw CheckpointError("its content does not match its own checksum (edited or damaged)");
    if (j.at("format").get<std::string>() != kFormatName) throw CheckpointError("not a ranktune manifest");
    Manifest m;
    m.format_version = j.at("format_version").get<int>();
    if (m.format_version < 1 || m.format_version > kCheckpointFormatVersion)
      throw CheckpointError("format version " + std::to_string(m.format_version) +
                            " is not readable by this build (reads 1.." + std::to_string(kCheckpointFormatVersion) +
                            ")");
    m.ranktune_version = j.at("ranktune_version").get<std::string>();
    m.created_utc = j.at("created_utc").get<std::string>();
    m.step = j.at("step").get<long>();
    m.world_size = j.at("world_size").get<int>();
    m.mode = j.at("mode").get<std::string>();
    m.topology = j.at("topology").get<std::string>();
    m.replicated = j.at("replicated").get<bool>();
    m.config_hash = parse_hex(j.at("config_hash").get<std::string>(), 16, "config_hash");
    if (j.at("checksum").get<std::string>() != "crc32c") throw CheckpointError("unknown checksum kind");
    if (m.step < 0 || m.world_size < 1) throw CheckpointError("step or world_size out of range");
    for (const auto& f : j.at("files")) {
      ManifestFile mf;
      mf.name = f.at("name").get<std::string>();
      mf.rank = f.at("rank").get<int>();
      mf.size = f.at("size").get<std::uint64_t>();
      mf.crc32c = static_cast<std::uint32_t>(parse_hex(f.at("crc32c").get<std::string>(), 8, "crc32c"));
      m.files.push_back(std::move(mf));
    }
    if (m.files.size() != static_cast<std::size_t>(m.world_size))
      throw CheckpointError("lists " + std::to_string(m.files.size()) + " files for world size " +
                            std::to_string(m.world_size));
    for (std::size_t r = 0; r < m.files.size(); ++r)
      if (m.files[r].rank != static_cast<int>(r) || m.files[r].name != rank_file_name(static_cast<int>(r)))
        throw CheckpointError("file entry " + std::to_string(r) + " is '" + m.files[r].name + "' (rank " +
                              std::to_string(m.files[r].rank) + "), expected " + rank_file_name(static_cast<int>(r)));
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(origin + ": " + e.what());
  } catch (const CheckpointError& e) {
    throw CheckpointError(origin + ": " + e.what(), e.hint());
  } catch (const std::exception& e) {  // std::stoull range errors
    throw CheckpointError(origin + ": " + e.what());
  }
}

}  // namespace ranktune
