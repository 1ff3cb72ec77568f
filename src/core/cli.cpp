// Command line and INI parsing with Boost.Program_options. Every key is registered as a string; conversion and
// range checks happen in config_apply so that the messages are ours and name file:line.
#include "ranktune/core/cli.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/core/text.h"

namespace po = boost::program_options;

namespace ranktune {
namespace {

constexpr int kStyle = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

po::options_description config_options() {
  po::options_description desc("settings (INI [section] key = value  <=>  --section.key=value)");
  for (const auto& k : config_schema()) desc.add_options()(k.name.c_str(), po::value<std::string>(), k.help.c_str());
  return desc;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_key(std::string name) {
  while (!name.empty() && name.front() == '-') name.erase(0, 1);
  if (auto eq = name.find('='); eq != std::string::npos) name.resize(eq);
  std::string best;
  std::size_t best_d = 4;  // suggest only near misses
  for (const auto& k : config_schema()) {
    const std::size_t d = edit_distance(name, k.name);
    const bool same_leaf = k.name.size() > name.size() && k.name.ends_with("." + name);
    if (same_leaf) return k.name;
    if (d < best_d) best_d = d, best = k.name;
  }
  return best;
}

// Locates each key's line and rejects malformed lines with FILE:LINE before Boost sees the file, since Boost's own
// messages carry no line numbers.
std::map<std::string, int> ini_key_lines(const std::string& path, std::istream& in) {
  std::map<std::string, int> lines;
  std::string line, section;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    const std::string t = trim(line);
    if (t.empty() || t[0] == ';') continue;
    if (t.front() == '[') {
      if (t.back() != ']' || t.size() < 3)
        throw ConfigError(path + ":" + std::to_string(n) + ": malformed section header '" + t + "'",
                          "a section header looks like [train]");
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    const auto eq = t.find('=');
    if (eq == std::string::npos || trim(t.substr(0, eq)).empty())
      throw ConfigError(path + ":" + std::to_string(n) + ": malformed line '" + t + "'",
                        "each setting is `key = value` under a [section] header");
    const std::string key = (section.empty() ? "" : section + ".") + trim(t.substr(0, eq));
    if (auto [it, fresh] = lines.emplace(key, n); !fresh)
      throw ConfigError(path + ":" + std::to_string(n) + ": key '" + key + "' is set twice (first at line " +
                        std::to_string(it->second) + ")");
  }
  return lines;
}

}  // namespace

const std::vector<Subcommand>& cli_subcommands() {
  static const std::vector<Subcommand> subs = {
      {"train", "fine-tune or train a model (DDP under mpirun/srun, balanced sharding in one process)"},
      {"topology", "show every rank, its GPU and the parallel mode that would run, then exit"},
      {"plan", "print the balanced placement of the model over the GPUs (or --parallel.max_memory budgets)"},
      {"checkpoint", "summarise or verify a checkpoint (step directory or checkpoint root)", "inspect|verify PATH"},
      {"export", "write a checkpoint as a PEFT adapter (LoRA) or a Hugging Face model directory", "CHECKPOINT OUT_DIR"},
      {"generate", "continue a prompt with a checkpoint or a Hugging Face model directory (--generate.prompt)",
       "[CHECKPOINT_OR_MODEL_DIR]"},
      {"prepare", "tokenize and pack text/JSONL (--data.path) into an HDF5 token dataset (--prepare.output)"},
  };
  return subs;
}

ConfigValues cli_read_ini(const std::string& path) {
  // A directory opens as an empty stream on Linux, which would silently train on the built-in defaults.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("config file '" + path + "' is a directory", "give --config the path of an INI file");
  std::ifstream file(path);
  if (!file) throw ConfigError("config file '" + path + "' cannot be opened", "check the path given to --config");
  std::ostringstream text;
  text << file.rdbuf();
  std::string content = std::move(text).str();
  // Editors on Windows save UTF-8 with a byte order mark; neither our line check nor Boost would accept it.
  if (content.starts_with("\xEF\xBB\xBF")) content.erase(0, 3);
  std::istringstream in(std::move(content));
  const auto key_lines = ini_key_lines(path, in);
  for (const auto& [key, line] : key_lines) {
    if (!config_find_key(key)) {
      const std::string near = closest_key(key);
      throw ConfigError(path + ":" + std::to_string(line) + ": unknown key '" + key + "'",
                        near.empty() ? "`ranktune train --help` lists every key" : "did you mean '" + near + "'?");
    }
  }
  in.clear();
  in.seekg(0);
  ConfigValues values;
  try {
    const auto parsed = po::parse_config_file(in, config_options(), /*allow_unregistered=*/false);
    for (const auto& opt : parsed.options) {
      const auto it = key_lines.find(opt.string_key);
      const std::string origin = path + (it == key_lines.end() ? "" : ":" + std::to_string(it->second));
      values[opt.string_key] = ConfigValue{opt.value.empty() ? "" : opt.value.front(), ConfigSource::file, origin};
    }
  } catch (const po::error& e) {
    throw ConfigError(path + ": " + e.what());
  }
  return values;
}

CliRequest cli_parse(int argc, const char* const* argv) {
  CliRequest req;
  int first = 1;
  if (argc > 1 && argv[1][0] != '-') {
    req.subcommand = argv[1];
    const auto& subs = cli_subcommands();
    if (std::none_of(subs.begin(), subs.end(), [&](const Subcommand& s) { return s.name == req.subcommand; }))
      throw UsageError("unknown subcommand '" + req.subcommand + "'", "`ranktune --help` lists the subcommands");
    first = 2;
  }

  po::options_description general("options");
  general.add_options()("help,h", "show this help")("version", "print the version")("config,c",
                                                                                    po::value<std::string>(),
                                                                                    "INI file with settings");
  po::options_description all;
  all.add(general).add(config_options());
  all.add_options()("args", po::value<std::vector<std::string>>(), "positional arguments");
  po::positional_options_description pos;
  pos.add("args", -1);

  po::parsed_options parsed(nullptr);
  try {
    parsed =
        po::command_line_parser(argc - first + 1, argv + first - 1)  // argv[first - 1] stands in for the program name
            .options(all)
            .positional(pos)
            .style(kStyle)
            .run();
  } catch (const po::unknown_option& e) {
    const std::string near = closest_key(e.get_option_name());
    throw UsageError(std::string("unknown option '") + e.get_option_name() + "'",
                     near.empty() ? "`ranktune " + req.subcommand + " --help` lists every option"
                                  : "did you mean '--" + near + "'?");
  } catch (const po::error& e) {
    throw UsageError(std::string("command line: ") + e.what());
  }

  ConfigValues cli_values;
  for (const auto& opt : parsed.options) {
    const std::string& k = opt.string_key;
    if (k == "help") req.help = true;
    else if (k == "version") req.version = true;
    else if (k == "config") req.config_file = opt.value.front();
    else if (k == "args") req.args.insert(req.args.end(), opt.value.begin(), opt.value.end());
    else {
      if (cli_values.count(k)) throw UsageError("option '--" + k + "' is given twice on the command line");
      cli_values[k] =
          ConfigValue{opt.value.empty() ? "" : opt.value.front(), ConfigSource::command_line, "command line --" + k};
    }
  }
  if (req.help || req.version) return req;
  if (req.subcommand.empty()) throw UsageError("no subcommand given", "try `ranktune train --config configs/tiny.ini`");
  const auto sub = std::find_if(cli_subcommands().begin(), cli_subcommands().end(),
                                [&](const Subcommand& s) { return s.name == req.subcommand; });
  if (!req.args.empty() && sub->args.empty())
    throw UsageError("unexpected argument '" + req.args.front() + "' for '" + req.subcommand + "'",
                     "settings are given as --section.key=value");

  if (!req.config_file.empty()) req.values = cli_read_ini(req.config_file);
  for (auto& [k, v] : cli_values) req.values[k] = v;  // command line beats file
  return req;
}

std::string cli_usage(const std::string& subcommand) {
  std::ostringstream os;
  if (subcommand.empty()) {
    os << "usage: ranktune <subcommand> [--config FILE] [--section.key=value ...]\n\nsubcommands:\n";
    for (const auto& s : cli_subcommands())
      os << "  " << s.name << std::string(12 - s.name.size(), ' ') << s.summary << '\n';
    os << "\n  ranktune --version\n  ranktune <subcommand> --help\n\n"
          "launch: one process (balanced or single GPU), or mpirun/srun with one rank per GPU (ddp).\n"
          "exit codes: docs/exit-codes.md\n";
    return os.str();
  }
  for (const auto& s : cli_subcommands())
    if (s.name == subcommand)
      os << "usage: ranktune " << s.name << (s.args.empty() ? "" : " " + s.args)
         << " [--config FILE] [--section.key=value ...]\n"
         << s.summary << "\n\n";
  po::options_description general("options");
  general.add_options()("help,h", "show this help")("config,c", po::value<std::string>(), "INI file with settings");
  os << general << "\nsettings (INI [section] key = value  <=>  --section.key=value), with defaults:\n";
  const Config defaults;
  std::size_t width = 0;
  for (const auto& k : config_schema()) width = std::max(width, k.name.size() + k.show(defaults).size() + 4);
  for (const auto& k : config_schema()) {
    const std::string left = "--" + k.name + "=" + (k.show(defaults).empty() ? "\"\"" : k.show(defaults));
    os << "  " << left << std::string(width + 2 - std::min(width, left.size()), ' ') << k.help << '\n';
  }
  return os.str();
}

}  // namespace ranktune
