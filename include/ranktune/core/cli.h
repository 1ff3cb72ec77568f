// defines: cli_parse (argv + INI file -> ConfigValues, via Boost.Program_options) and cli_usage.
// Precedence is command line > file > defaults; abbreviations are never guessed; unknown keys, repeated keys and
// malformed lines are ConfigErrors naming the file, the line and the key.
#pragma once

#include <string>
#include <vector>

#include "ranktune/core/config.h"

namespace ranktune {

struct Subcommand {
  std::string name;
  std::string summary;
  std::string args;  // positional arguments it takes, for the usage line ("inspect|verify PATH"); empty = none
};
const std::vector<Subcommand>& cli_subcommands();

struct CliRequest {
  std::string subcommand;  // empty when only --help or --version was given
  bool help = false;
  bool version = false;
  std::string config_file;        // --config, empty if none
  std::vector<std::string> args;  // positional arguments after the subcommand
  ConfigValues values;            // what the file and the command line set, with their origins
};

// Throws UsageError / ConfigError with the culprit named.
CliRequest cli_parse(int argc, const char* const* argv);

// Reads one INI file into values (used by cli_parse; exposed for tests). Origins are "FILE:LINE".
ConfigValues cli_read_ini(const std::string& path);

std::string cli_usage(const std::string& subcommand);

}  // namespace ranktune
