// JinjaValue's out-of-line members and the Python semantics of values: code-point strings, str(), repr(), truth,
// ==, numeric conversions and the string escaping of json.dumps.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "jinja_internal.h"
#include "ranktune/data/unicode.h"

namespace ranktune {

JinjaValue JinjaValue::tuple(JinjaList items) {
  JinjaValue v;
  v.v_ = std::make_shared<const JinjaTuple>(JinjaTuple{std::move(items)});
  return v;
}

const JinjaList& JinjaValue::as_list() const {
  if (kind() == Kind::tuple) return std::get<std::shared_ptr<const JinjaTuple>>(v_)->items;
  return *std::get<std::shared_ptr<const JinjaList>>(v_);
}

JinjaValue JinjaValue::list(JinjaList items) {
  JinjaValue v;
  v.v_ = std::make_shared<const JinjaList>(std::move(items));
  return v;
}

JinjaValue JinjaValue::dict(JinjaDict items) {
  JinjaValue v;
  v.v_ = std::make_shared<const JinjaDict>(std::move(items));
  return v;
}

JinjaValue JinjaValue::object(std::shared_ptr<JinjaObject> o) {
  JinjaValue v;
  v.v_ = std::move(o);
  return v;
}

const void* JinjaValue::identity() const {
  switch (kind()) {
    case Kind::string: return std::get<std::shared_ptr<const std::string>>(v_).get();
    case Kind::list: return std::get<std::shared_ptr<const JinjaList>>(v_).get();
    case Kind::dict: return std::get<std::shared_ptr<const JinjaDict>>(v_).get();
    case Kind::object: return std::get<std::shared_ptr<JinjaObject>>(v_).get();
    case Kind::tuple: return std::get<std::shared_ptr<const JinjaTuple>>(v_).get();
    default: return nullptr;
  }
}

namespace jinja_detail {

// ---------------------------------------------------------------------------------------------------------------
// Python string helpers. Python strings are sequences of code points: len, indexing and slicing count code points.

// str.isspace() and the regex class \s of Python's re: Unicode White_Space plus U+001C..001F.
bool py_space(char32_t c) { return unicode_is_space(c) || (c >= 0x1C && c <= 0x1F); }

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_decode(s, i);
    out.push_back(c.cp);
    i += c.len;
  }
  return out;
}

std::string to_u8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

std::size_t py_len(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// str.strip/lstrip/rstrip: whitespace, or any of `chars` when given.
std::string py_strip(std::string_view s, bool left, bool right, const std::optional<std::u32string>& chars) {
  const std::u32string u = to_u32(s);
  auto drop = [&](char32_t c) { return chars ? chars->find(c) != std::u32string::npos : py_space(c); };
  std::size_t a = 0, b = u.size();
  if (left)
    while (a < b && drop(u[a])) ++a;
  if (right)
    while (b > a && drop(u[b - 1])) --b;
  return to_u8(std::u32string_view(u).substr(a, b - a));
}

// Python's repr() of a float: the shortest digits that round-trip, fixed notation for exponents -4..15.
std::string py_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  const bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  const std::size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -4 && exp < 16) {
    const int point = exp + 1;
    if (point <= 0) {
      out = "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
    } else if (static_cast<std::size_t>(point) >= digits.size()) {
      out = digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(point)) + "." + digits.substr(static_cast<std::size_t>(point));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return (neg ? "-" : "") + out;
}

namespace {

// What Python's str.isprintable() rejects, as far as repr() of the strings in a chat template can meet it.
bool py_unprintable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return true;
  if (c != ' ' && py_space(c)) return true;
  return (c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) || (c >= 0x2060 && c <= 0x2064) || c == 0xFEFF ||
         (c >= 0xE000 && c <= 0xF8FF) || (c >= 0xFFF9 && c <= 0xFFFB);
}

std::string py_repr_string(std::string_view s) {
  const std::u32string u = to_u32(s);
  const bool has_single = u.find(U'\'') != std::u32string::npos, has_double = u.find(U'"') != std::u32string::npos;
  const char32_t quote = has_single && !has_double ? U'"' : U'\'';
  std::string out(1, static_cast<char>(quote));
  char buf[16];
  for (char32_t c : u) {
    if (c == quote || c == U'\\') {
      out += '\\';
      utf8_append(out, c);
    } else if (c == U'\n') {
      out += "\\n";
    } else if (c == U'\r') {
      out += "\\r";
    } else if (c == U'\t') {
      out += "\\t";
    } else if (py_unprintable(c)) {
      if (c < 0x100) {
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      } else if (c < 0x10000) {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      } else {
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
      }
      out += buf;
    } else {
      utf8_append(out, c);
    }
  }
  out += static_cast<char>(quote);
  return out;
}

}  // namespace

// Letters whose case Python would change beyond ASCII: upper()/lower() of those are refused rather than guessed.
bool cased_beyond_ascii(char32_t c) {
  return (c >= 0xB5 && c <= 0x24F && c != 0xD7 && c != 0xF7) || (c >= 0x370 && c <= 0x58F) ||
         (c >= 0x10A0 && c <= 0x10FF) || (c >= 0x13A0 && c <= 0x13FF) || (c >= 0x1C80 && c <= 0x1CBF) ||
         (c >= 0x1E00 && c <= 0x1FFF) || (c >= 0x2100 && c <= 0x218F) || (c >= 0x24B6 && c <= 0x24E9) ||
         (c >= 0x2C00 && c <= 0x2D2F) || (c >= 0xA640 && c <= 0xA7FF) || (c >= 0xAB70 && c <= 0xABBF) ||
         (c >= 0xFB00 && c <= 0xFB17) || (c >= 0xFF21 && c <= 0xFF5A) || (c >= 0x10400 && c <= 0x104FF) ||
         (c >= 0x10570 && c <= 0x105BF) || (c >= 0x10C80 && c <= 0x10CFF) || (c >= 0x118A0 && c <= 0x118DF) ||
         (c >= 0x16E40 && c <= 0x16E7F) || (c >= 0x1E900 && c <= 0x1E94F) || (c >= 0x1F130 && c <= 0x1F189);
}

bool ascii_letter(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char32_t ascii_upper(char32_t c) { return c >= 'a' && c <= 'z' ? c - 32 : c; }
char32_t ascii_lower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// ---------------------------------------------------------------------------------------------------------------
// Values: Python's truth, str(), repr(), ==, ordering and json.dumps for the kinds a template handles.

JinjaValue make_object(JinjaObject::Kind kind, std::string name, JinjaValue self) {
  auto o = std::make_shared<JinjaObject>();
  o->kind = kind;
  o->name = std::move(name);
  o->self = std::move(self);
  return JinjaValue::object(std::move(o));
}

bool truthy(const JinjaValue& v) {
  switch (v.kind()) {
    case K::undefined:
    case K::none: return false;
    case K::boolean: return v.as_bool();
    case K::integer: return v.as_int() != 0;
    case K::number: return v.as_number() != 0.0;
    case K::string: return !v.as_string().empty();
    case K::list:
    case K::tuple: return !v.as_list().empty();
    case K::dict: return !v.as_dict().empty();
    case K::object: return true;
  }
  return false;
}

const char* type_name(const JinjaValue& v) {
  switch (v.kind()) {
    case K::undefined: return "Undefined";
    case K::none: return "NoneType";
    case K::boolean: return "bool";
    case K::integer: return "int";
    case K::number: return "float";
    case K::string: return "str";
    case K::list: return "list";
    case K::tuple: return "tuple";
    case K::dict: return "dict";
    case K::object: return "object";
  }
  return "?";
}

std::string py_repr(const JinjaValue& v);

std::string py_str(const JinjaValue& v) {
  switch (v.kind()) {
    case K::undefined: return "";
    case K::none: return "None";
    case K::boolean: return v.as_bool() ? "True" : "False";
    case K::integer: return std::to_string(v.as_int());
    case K::number: return py_float(v.as_number());
    case K::string: return v.as_string();
    default: return py_repr(v);
  }
}

std::string py_repr(const JinjaValue& v) {
  switch (v.kind()) {
    case K::string: return py_repr_string(v.as_string());
    case K::list:
    case K::tuple: {
      const bool tuple = v.is(K::tuple);
      std::string out = tuple ? "(" : "[";
      for (std::size_t i = 0; i < v.as_list().size(); ++i) out += (i ? ", " : "") + py_repr(v.as_list()[i]);
      return out + (tuple && v.as_list().size() == 1 ? ",)" : tuple ? ")" : "]");
    }
    case K::dict: {
      std::string out = "{";
      for (std::size_t i = 0; i < v.as_dict().size(); ++i)
        out += (i ? ", " : "") + py_repr_string(v.as_dict()[i].first) + ": " + py_repr(v.as_dict()[i].second);
      return out + "}";
    }
    case K::object: {
      const JinjaObject& o = v.as_object();
      if (o.kind == JinjaObject::Kind::ns) return "<Namespace " + py_repr(JinjaValue::dict(o.attrs)) + ">";
      if (o.kind == JinjaObject::Kind::loop) return "<LoopContext>";
      return "<function " + o.name + ">";
    }
    default: return py_str(v);
  }
}

bool sequence(const JinjaValue& v) { return v.is(K::list) || v.is(K::tuple); }
bool numeric(const JinjaValue& v) { return v.is(K::boolean) || v.is(K::integer) || v.is(K::number); }
bool integral(const JinjaValue& v) { return v.is(K::boolean) || v.is(K::integer); }
std::int64_t to_int(const JinjaValue& v) { return v.is(K::boolean) ? (v.as_bool() ? 1 : 0) : v.as_int(); }
double to_double(const JinjaValue& v) { return v.is(K::number) ? v.as_number() : static_cast<double>(to_int(v)); }

bool py_eq(const JinjaValue& a, const JinjaValue& b) {
  if (numeric(a) && numeric(b)) {
    if (integral(a) && integral(b)) return to_int(a) == to_int(b);
    return to_double(a) == to_double(b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::undefined:
    case K::none: return true;
    case K::string: return a.as_string() == b.as_string();
    case K::list:
    case K::tuple: {
      const JinjaList &x = a.as_list(), &y = b.as_list();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (!py_eq(x[i], y[i])) return false;
      return true;
    }
    case K::dict: {
      const JinjaDict &x = a.as_dict(), &y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, val] : x) {
        auto it = std::find_if(y.begin(), y.end(), [&](const auto& kv) { return kv.first == k; });
        if (it == y.end() || !py_eq(val, it->second)) return false;
      }
      return true;
    }
    default: return a.identity() == b.identity();
  }
}

void json_string(std::string_view s, bool ensure_ascii, std::string& out) {
  out += '"';
  char buf[16];
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_decode(s, i);
    i += c.len;
    switch (c.cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c.cp < 0x20 || (ensure_ascii && c.cp > 0x7E)) {
      if (c.cp >= 0x10000) {
        const char32_t v = c.cp - 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c.cp));
      }
      out += buf;
    } else {
      out.append(s.substr(i - c.len, c.len));
    }
  }
  out += '"';
}

}  // namespace jinja_detail
}  // namespace ranktune
