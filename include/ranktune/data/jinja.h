// defines: JinjaTemplate, an interpreter of the subset of Jinja that Hugging Face chat templates are written in, and
// JinjaValue, what a template sees. ranktune renders a model's own chat template (tokenizer_config.json) with it, in
// the environment transformers uses (trim_blocks, lstrip_blocks, raise_exception, tojson, namespace, loop controls).
// There is no Jinja library among our dependencies; a construct outside the subset is a DataError naming it and its
// line and column, never a silently different rendering. docs/data.md lists the subset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ranktune {

class JinjaValue;
using JinjaList = std::vector<JinjaValue>;
using JinjaDict = std::vector<std::pair<std::string, JinjaValue>>;  // in insertion order, as Python dicts keep it
struct JinjaObject;  // namespace(), the loop variable, functions and bound methods: made by the interpreter only
struct JinjaTuple;   // a Python tuple: (a, b), the pairs of dict.items(); a list that prints and compares as a tuple

// A Python value as Jinja sees it. Strings are UTF-8; lists and dicts are immutable (the sandbox transformers uses
// forbids changing them) and shared on copy.
class JinjaValue {
 public:
  enum class Kind { undefined, none, boolean, integer, number, string, list, dict, object, tuple };

  JinjaValue() = default;  // undefined
  JinjaValue(std::nullptr_t) : v_(nullptr) {}
  JinjaValue(bool b) : v_(b) {}
  JinjaValue(int i) : v_(std::int64_t{i}) {}
  JinjaValue(std::int64_t i) : v_(i) {}
  JinjaValue(double d) : v_(d) {}
  JinjaValue(std::string s) : v_(std::make_shared<const std::string>(std::move(s))) {}
  JinjaValue(const char* s) : JinjaValue(std::string(s)) {}
  static JinjaValue list(JinjaList items);
  static JinjaValue dict(JinjaDict items);
  static JinjaValue object(std::shared_ptr<JinjaObject> o);
  static JinjaValue tuple(JinjaList items);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is(Kind k) const { return kind() == k; }
  bool as_bool() const { return std::get<bool>(v_); }
  std::int64_t as_int() const { return std::get<std::int64_t>(v_); }
  double as_number() const { return std::get<double>(v_); }
  const std::string& as_string() const { return *std::get<std::shared_ptr<const std::string>>(v_); }
  const JinjaList& as_list() const;  // a list's or a tuple's items
  const JinjaDict& as_dict() const { return *std::get<std::shared_ptr<const JinjaDict>>(v_); }
  JinjaObject& as_object() const { return *std::get<std::shared_ptr<JinjaObject>>(v_); }
  const void* identity() const;  // the shared payload, for `is sameas`; nullptr for scalars

 private:
  std::variant<std::monostate, std::nullptr_t, bool, std::int64_t, double, std::shared_ptr<const std::string>,
               std::shared_ptr<const JinjaList>, std::shared_ptr<const JinjaDict>, std::shared_ptr<JinjaObject>,
               std::shared_ptr<const JinjaTuple>>
      v_;
};

class JinjaTemplate {
 public:
  // Parses `source`; `origin` names it in messages ("model/tokenizer_config.json"). Throws DataError naming the first
  // construct outside the subset (a tag, filter, test or operator) with its line and column.
  JinjaTemplate(std::string_view source, std::string origin);
  ~JinjaTemplate();
  JinjaTemplate(JinjaTemplate&&) noexcept;
  JinjaTemplate& operator=(JinjaTemplate&&) noexcept;

  // Renders with `variables` (messages, add_generation_prompt, bos_token, ...) beside the globals transformers gives
  // every template (raise_exception, namespace, strftime_now, range, dict). Throws DataError: the message of the
  // template's raise_exception(...), or a runtime error (an undefined value used, mismatched types) naming where.
  std::string render(const JinjaDict& variables) const;

  const std::string& origin() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ranktune
