// Each document is 3-7 sentences drawn from a few templates. Facts (where someone lives, their pet and colour) are
// fixed per person, so they are learnable across documents; arithmetic answers are always correct.
#include "ranktune/data/tiny_corpus.h"

#include <array>

#include "ranktune/data/rng.h"

namespace ranktune {
namespace {

struct Person {
  const char* name;
  const char* city;
  const char* pet;
  const char* color;
};

constexpr std::array<Person, 12> kPeople{{
    {"Ada", "Lisbon", "cat", "green"},
    {"Bruno", "Oslo", "dog", "red"},
    {"Chen", "Kyoto", "parrot", "blue"},
    {"Dara", "Nairobi", "turtle", "yellow"},
    {"Emil", "Quito", "rabbit", "purple"},
    {"Farah", "Tunis", "horse", "orange"},
    {"Gus", "Perth", "goat", "white"},
    {"Hana", "Seoul", "fish", "black"},
    {"Ivo", "Zagreb", "owl", "pink"},
    {"Juno", "Lima", "frog", "brown"},
    {"Kai", "Dublin", "hamster", "gray"},
    {"Lena", "Vienna", "snake", "gold"},
}};

constexpr std::array<const char*, 21> kNumberWords{"zero",    "one",     "two",       "three",    "four",
                                                   "five",    "six",     "seven",     "eight",    "nine",
                                                   "ten",     "eleven",  "twelve",    "thirteen", "fourteen",
                                                   "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                                                   "twenty"};

std::string sentence(SplitMix64& rng) {
  const Person& p = kPeople[rng.below(kPeople.size())];
  const std::string name = p.name;
  switch (rng.below(9)) {
    case 0: return name + " lives in " + p.city + ".";
    case 1: return name + " has a " + p.color + " " + p.pet + ".";
    case 2: return "The " + std::string(p.pet) + " of " + name + " is " + p.color + ".";
    case 3: return "Q: Where does " + name + " live? A: " + name + " lives in " + p.city + ".";
    case 4: return "Q: What pet does " + name + " have? A: a " + p.pet + ".";
    case 5: {
      const auto a = rng.below(10), b = rng.below(10);
      return std::to_string(a) + " + " + std::to_string(b) + " = " + std::to_string(a + b) + ".";
    }
    case 6: {
      const auto a = 2 + rng.below(8), b = 2 + rng.below(8);
      return std::to_string(a) + " times " + std::to_string(b) + " is " + std::to_string(a * b) + ".";
    }
    case 7: {
      const auto start = rng.below(15), len = 3 + rng.below(4);
      std::string s = "Counting:";
      for (auto k = start; k < start + len && k < kNumberWords.size(); ++k) s += std::string(" ") + kNumberWords[k];
      return s + ".";
    }
    default: {
      const auto start = rng.below(20), len = 4 + rng.below(5);
      std::string s = "Letters:";
      for (auto k = start; k < start + len && k < 26; ++k) s += std::string(" ") + static_cast<char>('a' + k);
      return s + ".";
    }
  }
}

}  // namespace

std::vector<std::string> tiny_corpus_generate(std::uint64_t seed, std::size_t num_documents) {
  SplitMix64 rng(seed);
  std::vector<std::string> docs;
  docs.reserve(num_documents);
  for (std::size_t d = 0; d < num_documents; ++d) {
    std::string doc;
    const auto n = 3 + rng.below(5);
    for (std::uint64_t k = 0; k < n; ++k) doc += (k ? " " : "") + sentence(rng);
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace ranktune
