// defines: tiny_corpus_generate, the training text of the embedded default job (configs/tiny.ini): documents
// written by this code from a seed, with structure a small byte-level model learns within minutes on a CPU:
// fixed facts about a cast of people, small-number arithmetic, counting, the alphabet and question/answer pairs.
// Nothing is downloaded or copied; the same seed gives the same text on every machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ranktune {

std::vector<std::string> tiny_corpus_generate(std::uint64_t seed, std::size_t num_documents);

}  // namespace ranktune
