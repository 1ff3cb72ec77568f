// defines: the declarations that the Jinja interpreter's translation units share (jinja_value, jinja_lexer,
// jinja_parser, jinja_render, jinja): the source with its error reporting, tokens, the AST, the scope, and the
// Python-semantics helpers for values. Private to src/data; nothing outside the interpreter includes it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/data/data_error.h"
#include "ranktune/data/jinja.h"

namespace ranktune {

struct JinjaObject {
  enum class Kind { ns, loop, function, method };
  Kind kind = Kind::ns;
  JinjaDict attrs;   // a namespace's attributes
  std::string name;  // a function's or method's name
  JinjaValue self;   // a bound method's receiver
  // The loop variable's state; its attributes (index, first, previtem, ...) are computed when read.
  std::int64_t index0 = 0;
  std::shared_ptr<const JinjaList> items;
};

struct JinjaTuple {
  JinjaList items;
};

namespace jinja_detail {

using K = JinjaValue::Kind;

// Python string helpers (jinja_value.cpp).
bool py_space(char32_t c);
std::u32string to_u32(std::string_view s);
std::string to_u8(std::u32string_view s);
std::size_t py_len(std::string_view s);
std::string py_strip(std::string_view s, bool left, bool right, const std::optional<std::u32string>& chars = {});
std::string py_float(double d);
bool cased_beyond_ascii(char32_t c);
bool ascii_letter(char32_t c);
char32_t ascii_upper(char32_t c);
char32_t ascii_lower(char32_t c);

// ---------------------------------------------------------------------------------------------------------------
// Errors carry the template's name and the line and column of the construct.

struct Source {
  std::string text;  // after newline normalisation
  std::string origin;

  std::string where(std::size_t pos) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < pos && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
        ++col;
      }
    }
    return origin + " line " + std::to_string(line) + ", column " + std::to_string(col);
  }

  [[noreturn]] void refuse(std::size_t pos, const std::string& what) const {
    throw DataError(where(pos) + ": " + what + " is not supported by ranktune's chat template interpreter",
                    "docs/data.md lists the Jinja subset it renders; or choose a built-in chat format "
                    "(--data.chat_template=llama3|llama2|mistral|chatml|plain)");
  }
  [[noreturn]] void syntax(std::size_t pos, const std::string& what) const {
    throw DataError(where(pos) + ": template syntax error: " + what);
  }
  [[noreturn]] void fail(std::size_t pos, const std::string& what) const { throw DataError(where(pos) + ": " + what); }
};

struct Token {
  enum Type { name, string, integer, number, op, end };
  Type type = end;
  std::string text;  // a name, an operator, a decoded string literal
  std::int64_t i = 0;
  double d = 0;
  std::size_t pos = 0;
};

struct Chunk {
  enum Type { data, output, block };
  Type type = data;
  std::string text;
  std::vector<Token> tokens;  // a tag's contents, closed by an end token
  std::size_t pos = 0;
};

// Lexer (jinja_lexer.cpp).
std::string normalize_newlines(std::string_view src);
bool is_digit(char c);
std::vector<Chunk> lex(const Source& src);

// ---------------------------------------------------------------------------------------------------------------
// AST

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arg {
  std::string name;  // empty: positional
  ExprPtr value;
};

struct Expr {
  enum class T {
    literal,
    name,
    list,
    tuple,
    dict,
    attr,
    item,
    slice,
    call,
    filter,
    test,
    not_,
    neg,
    pos,
    binop,
    compare,
    and_,
    or_,
    cond,
    concat
  };
  T t = T::literal;
  std::size_t pos = 0;
  JinjaValue value;              // literal
  std::string name;              // a variable, attribute, filter, test or operator
  std::vector<ExprPtr> kids;     // operands; a dict's keys and values alternating; slice bounds (null: omitted)
  std::vector<Arg> args;         // of a call, filter or test
  std::vector<std::string> ops;  // a comparison chain's operators
  bool negated = false;          // `is not`
};

struct Branch;
struct Stmt;
using Body = std::vector<Stmt>;

struct Stmt {
  enum class T { text, output, if_, for_, set, set_block, break_, continue_ };
  T t = T::text;
  std::size_t pos = 0;
  std::string text;
  ExprPtr expr;                      // printed value, assigned value, loop sequence
  std::vector<std::string> targets;  // loop variables, assigned names
  std::string attr;                  // `set ns.attr = ...`
  ExprPtr filter;                    // `for x in xs if filter`
  std::vector<Branch> branches;      // if / elif / else (no condition)
  Body body, else_body;
};

struct Branch {
  ExprPtr cond;
  Body body;
};

// The filter and test names of the subset (jinja_parser.cpp), checked by the parser and the renderer.
extern const std::vector<std::string_view> kFilters;
extern const std::vector<std::string_view> kTests;
bool known(const std::vector<std::string_view>& set, std::string_view name);

// The template's statements from its lexed chunks (jinja_parser.cpp).
Body parse_template(const Source& src, const std::vector<Chunk>& chunks);

// Values (jinja_value.cpp).
JinjaValue make_object(JinjaObject::Kind kind, std::string name, JinjaValue self = {});
bool truthy(const JinjaValue& v);
const char* type_name(const JinjaValue& v);
std::string py_str(const JinjaValue& v);
std::string py_repr(const JinjaValue& v);
bool sequence(const JinjaValue& v);
bool numeric(const JinjaValue& v);
bool integral(const JinjaValue& v);
std::int64_t to_int(const JinjaValue& v);
double to_double(const JinjaValue& v);
bool py_eq(const JinjaValue& a, const JinjaValue& b);

struct JsonStyle {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};

void json_string(std::string_view s, bool ensure_ascii, std::string& out);

// A few names each (the loop variables, what a template sets): a vector searched in order beats a hash map here.
struct Scope {
  Scope* parent = nullptr;
  JinjaDict vars;

  const JinjaValue* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      for (const auto& kv : s->vars)
        if (kv.first == name) return &kv.second;
    }
    return nullptr;
  }
  void set(const std::string& name, JinjaValue v) {
    for (auto& kv : vars) {
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    }
    vars.emplace_back(name, std::move(v));
  }
};

// Renders `body` into `out` with `root` as the outermost scope (jinja_render.cpp).
void render_template(const Source& src, const Body& body, Scope& root, std::string& out);

}  // namespace jinja_detail
}  // namespace ranktune
