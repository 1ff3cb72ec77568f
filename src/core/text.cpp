#include "ranktune/core/text.h"

#include <cstdio>

namespace ranktune {

std::string trim(std::string_view s, std::string_view blanks) {
  const auto b = s.find_first_not_of(blanks);
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(blanks);
  return std::string(s.substr(b, e - b + 1));
}

std::string leading_sentences(std::string_view text, int n) {
  const std::string_view line = text.substr(0, text.find('\n'));
  std::size_t end = 0;
  for (int i = 0; i < n; ++i) {
    const std::size_t stop = line.find(". ", end);
    if (stop == std::string_view::npos) return std::string(line);
    end = stop + 1;
  }
  return std::string(line.substr(0, end));
}

std::string format_bytes(std::int64_t bytes) {
  if (bytes < 0) return "?";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string format_bytes_scaled(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace ranktune
