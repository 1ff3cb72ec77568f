// Evaluator: a tree walk over the AST with Python's semantics for the values templates use, and the filters,
// tests, globals and str/dict/list methods of the subset.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "jinja_internal.h"

namespace ranktune::jinja_detail {
namespace {

enum class Flow { normal, break_, continue_ };

struct Args {
  std::vector<JinjaValue> pos;
  JinjaDict kw;
};

const std::vector<std::string_view> kStrMethods = {
    "capitalize",   "casefold",   "center",    "count",       "encode",    "endswith",     "expandtabs",   "find",
    "format",       "format_map", "index",     "isalnum",     "isalpha",   "isascii",      "isdecimal",    "isdigit",
    "isidentifier", "islower",    "isnumeric", "isprintable", "isspace",   "istitle",      "isupper",      "join",
    "ljust",        "lower",      "lstrip",    "maketrans",   "partition", "removeprefix", "removesuffix", "replace",
    "rfind",        "rindex",     "rjust",     "rpartition",  "rsplit",    "rstrip",       "split",        "splitlines",
    "startswith",   "strip",      "swapcase",  "title",       "translate", "upper",        "zfill"};
const std::vector<std::string_view> kDictMethods = {"clear", "copy",    "fromkeys",   "get",    "items", "keys",
                                                    "pop",   "popitem", "setdefault", "update", "values"};
const std::vector<std::string_view> kListMethods = {"append", "clear", "copy",   "count",   "extend", "index",
                                                    "insert", "pop",   "remove", "reverse", "sort"};
const std::vector<std::string_view> kGlobals = {"raise_exception", "namespace", "strftime_now", "range", "dict"};

class Renderer {
 public:
  Renderer(const Source& src, std::string& out) : src_(src), out_(out) {}

  Flow exec(const Body& body, Scope& scope) {
    for (const Stmt& s : body) {
      const Flow f = exec(s, scope);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

 private:
  Flow exec(const Stmt& s, Scope& scope) {
    switch (s.t) {
      case Stmt::T::text: out_ += s.text; return Flow::normal;
      case Stmt::T::output: out_ += py_str(eval(*s.expr, scope)); return Flow::normal;
      case Stmt::T::if_:
        for (const Branch& b : s.branches) {
          if (!b.cond || truthy(eval(*b.cond, scope))) return exec(b.body, scope);  // `if` opens no scope
        }
        return Flow::normal;
      case Stmt::T::for_: return exec_for(s, scope);
      case Stmt::T::set: {
        JinjaValue v = eval(*s.expr, scope);
        if (!s.attr.empty()) {
          const JinjaValue* ns = scope.find(s.targets[0]);
          if (!ns || !ns->is(K::object) || ns->as_object().kind != JinjaObject::Kind::ns)
            src_.fail(s.pos, "cannot assign the attribute '" + s.attr + "' of '" + s.targets[0] +
                                 "', which is not a namespace()");
          if (s.attr.starts_with("_"))
            src_.fail(s.pos, "namespace attributes may not start with '_' ('" + s.attr + "')");
          set_attr(ns->as_object(), s.attr, std::move(v));
        } else {
          assign(s.targets, std::move(v), scope, s.pos);
        }
        return Flow::normal;
      }
      case Stmt::T::set_block: {
        std::string inner;
        Renderer r(src_, inner);
        Scope block{&scope, {}};
        r.exec(s.body, block);
        scope.set(s.targets[0], JinjaValue(std::move(inner)));
        return Flow::normal;
      }
      case Stmt::T::break_: return Flow::break_;
      case Stmt::T::continue_: return Flow::continue_;
    }
    return Flow::normal;
  }

  static void set_attr(JinjaObject& o, const std::string& name, JinjaValue v) {
    for (auto& kv : o.attrs) {
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    }
    o.attrs.emplace_back(name, std::move(v));
  }

  void assign(const std::vector<std::string>& names, JinjaValue v, Scope& scope, std::size_t pos) {
    if (names.size() == 1) {
      scope.set(names[0], std::move(v));
      return;
    }
    const JinjaList items = iterate(v, pos);
    if (items.size() != names.size())
      src_.fail(pos, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(names.size()) +
                         " names");
    for (std::size_t i = 0; i < names.size(); ++i) scope.set(names[i], items[i]);
  }

  // What `for` walks: a list's items, a string's characters, a dict's keys; nothing for undefined (as Jinja).
  JinjaList iterate(const JinjaValue& v, std::size_t pos) const {
    switch (v.kind()) {
      case K::undefined: return {};
      case K::list:
      case K::tuple: return v.as_list();
      case K::string: {
        JinjaList out;
        for (char32_t c : to_u32(v.as_string())) out.emplace_back(to_u8(std::u32string(1, c)));
        return out;
      }
      case K::dict: {
        JinjaList out;
        for (const auto& kv : v.as_dict()) out.emplace_back(kv.first);
        return out;
      }
      default: src_.fail(pos, std::string("'") + type_name(v) + "' object is not iterable");
    }
  }

  // Each iteration runs in a fresh scope below the loop's: a `set` inside the body is gone at the next iteration
  // and after the loop (Jinja's scoping; templates carry state across iterations in a namespace()).
  Flow exec_for(const Stmt& s, Scope& scope) {
    auto items = std::make_shared<JinjaList>(iterate(eval(*s.expr, scope), s.pos));
    if (s.filter) {
      JinjaList kept;
      for (JinjaValue& item : *items) {
        Scope f{&scope, {}};
        assign(s.targets, item, f, s.pos);
        if (truthy(eval(*s.filter, f))) kept.push_back(std::move(item));
      }
      *items = std::move(kept);
    }
    if (items->empty()) {
      Scope e{&scope, {}};
      exec(s.else_body, e);
      return Flow::normal;
    }
    const auto n = static_cast<std::int64_t>(items->size());
    for (std::int64_t i = 0; i < n; ++i) {
      Scope it{&scope, {}};
      assign(s.targets, (*items)[static_cast<std::size_t>(i)], it, s.pos);
      auto loop = std::make_shared<JinjaObject>();
      loop->kind = JinjaObject::Kind::loop;
      loop->index0 = i;
      loop->items = items;
      it.set("loop", JinjaValue::object(std::move(loop)));
      if (exec(s.body, it) == Flow::break_) break;
    }
    return Flow::normal;
  }

  // `message.tool_calls` as written, for messages about undefined values.
  static std::string text_of(const Expr& e) {
    switch (e.t) {
      case Expr::T::name: return e.name;
      case Expr::T::attr: return text_of(*e.kids[0]) + "." + e.name;
      case Expr::T::item:
        if (e.kids[1]->t == Expr::T::literal) return text_of(*e.kids[0]) + "[" + py_repr(e.kids[1]->value) + "]";
        return text_of(*e.kids[0]) + "[...]";
      case Expr::T::call: return text_of(*e.kids[0]) + "(...)";
      default: return "the value";
    }
  }

  [[noreturn]] void undefined(const Expr& e) const { src_.fail(e.pos, "'" + text_of(e) + "' is undefined"); }

  JinjaValue defined(const Expr& e, Scope& scope) {
    JinjaValue v = eval(e, scope);
    if (v.is(K::undefined)) undefined(e);
    return v;
  }

  JinjaValue eval(const Expr& e, Scope& scope) {
    switch (e.t) {
      case Expr::T::literal: return e.value;
      case Expr::T::name: {
        if (const JinjaValue* v = scope.find(e.name)) return *v;
        if (known(kGlobals, e.name)) return make_object(JinjaObject::Kind::function, e.name);
        return {};
      }
      case Expr::T::list:
      case Expr::T::tuple: {
        JinjaList items;
        for (const ExprPtr& k : e.kids) items.push_back(eval(*k, scope));
        return e.t == Expr::T::tuple ? JinjaValue::tuple(std::move(items)) : JinjaValue::list(std::move(items));
      }
      case Expr::T::dict: {
        JinjaDict items;
        for (std::size_t i = 0; i < e.kids.size(); i += 2) {
          const JinjaValue key = eval(*e.kids[i], scope);
          if (!key.is(K::string)) src_.refuse(e.kids[i]->pos, "a dict key that is not a string");
          put(items, key.as_string(), eval(*e.kids[i + 1], scope));
        }
        return JinjaValue::dict(std::move(items));
      }
      case Expr::T::attr: {
        const JinjaValue obj = eval(*e.kids[0], scope);
        if (obj.is(K::undefined)) undefined(*e.kids[0]);
        return get_attr(obj, e.name, e.pos);
      }
      case Expr::T::item: {
        const JinjaValue obj = eval(*e.kids[0], scope);
        if (obj.is(K::undefined)) undefined(*e.kids[0]);
        return get_item(obj, eval(*e.kids[1], scope), e.pos);
      }
      case Expr::T::slice: return slice(e, scope);
      case Expr::T::call: return call(e, scope);
      case Expr::T::filter: return filter(e, scope);
      case Expr::T::test: return test(e, scope);
      case Expr::T::not_: return JinjaValue(!truthy(eval(*e.kids[0], scope)));
      case Expr::T::neg:
      case Expr::T::pos: {
        const JinjaValue v = defined(*e.kids[0], scope);
        if (!numeric(v))
          src_.fail(e.pos, std::string("bad operand type for unary ") + (e.t == Expr::T::neg ? "-" : "+") + ": '" +
                               type_name(v) + "'");
        if (e.t == Expr::T::pos) return integral(v) ? JinjaValue(to_int(v)) : v;
        return integral(v) ? JinjaValue(-to_int(v)) : JinjaValue(-v.as_number());
      }
      case Expr::T::binop: return binop(e, defined(*e.kids[0], scope), defined(*e.kids[1], scope));
      case Expr::T::concat: return JinjaValue(py_str(eval(*e.kids[0], scope)) + py_str(eval(*e.kids[1], scope)));
      case Expr::T::compare: {
        JinjaValue left = eval(*e.kids[0], scope);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          JinjaValue right = eval(*e.kids[i + 1], scope);
          if (!compare(e.ops[i], left, right, e.pos)) return JinjaValue(false);
          left = std::move(right);
        }
        return JinjaValue(true);
      }
      case Expr::T::and_: {
        JinjaValue a = eval(*e.kids[0], scope);
        return truthy(a) ? eval(*e.kids[1], scope) : a;
      }
      case Expr::T::or_: {
        JinjaValue a = eval(*e.kids[0], scope);
        return truthy(a) ? a : eval(*e.kids[1], scope);
      }
      case Expr::T::cond:
        if (truthy(eval(*e.kids[1], scope))) return eval(*e.kids[0], scope);
        return e.kids[2] ? eval(*e.kids[2], scope) : JinjaValue();
    }
    return {};
  }

  static void put(JinjaDict& d, const std::string& key, JinjaValue v) {
    for (auto& kv : d) {
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    }
    d.emplace_back(key, std::move(v));
  }

  // Jinja's getattr: an attribute of the Python object first (a string's or dict's methods), then the item.
  JinjaValue get_attr(const JinjaValue& obj, const std::string& name, std::size_t pos) const {
    switch (obj.kind()) {
      case K::dict:
        if (known(kDictMethods, name)) return make_object(JinjaObject::Kind::method, name, obj);
        for (const auto& kv : obj.as_dict())
          if (kv.first == name) return kv.second;
        return {};
      case K::string:
        if (known(kStrMethods, name)) return make_object(JinjaObject::Kind::method, name, obj);
        return {};
      case K::list:
      case K::tuple:
        if (known(kListMethods, name)) return make_object(JinjaObject::Kind::method, name, obj);
        return {};
      case K::object: {
        const JinjaObject& o = obj.as_object();
        if (o.kind == JinjaObject::Kind::loop) return loop_attr(obj, name, pos);
        for (const auto& kv : o.attrs)
          if (kv.first == name) return kv.second;
        return {};
      }
      default: return {};
    }
  }

  JinjaValue loop_attr(const JinjaValue& loop, const std::string& name, std::size_t pos) const {
    const JinjaObject& o = loop.as_object();
    const std::int64_t i = o.index0, n = static_cast<std::int64_t>(o.items->size());
    if (name == "index") return JinjaValue(i + 1);
    if (name == "index0") return JinjaValue(i);
    if (name == "revindex") return JinjaValue(n - i);
    if (name == "revindex0") return JinjaValue(n - i - 1);
    if (name == "first") return JinjaValue(i == 0);
    if (name == "last") return JinjaValue(i == n - 1);
    if (name == "length") return JinjaValue(n);
    if (name == "depth") return JinjaValue(1);
    if (name == "depth0") return JinjaValue(0);
    if (name == "previtem") return i > 0 ? (*o.items)[static_cast<std::size_t>(i - 1)] : JinjaValue();
    if (name == "nextitem") return i + 1 < n ? (*o.items)[static_cast<std::size_t>(i + 1)] : JinjaValue();
    if (name == "cycle") return make_object(JinjaObject::Kind::method, name, loop);
    src_.refuse(pos, "loop." + name);
  }

  // Jinja's getitem: the item first, then (for a string key) the attribute; a missing one is undefined.
  JinjaValue get_item(const JinjaValue& obj, const JinjaValue& key, std::size_t pos) const {
    if (key.is(K::string) && !obj.is(K::dict)) return get_attr(obj, key.as_string(), pos);
    switch (obj.kind()) {
      case K::dict:
        if (key.is(K::string)) {
          for (const auto& kv : obj.as_dict())
            if (kv.first == key.as_string()) return kv.second;
        }
        return {};
      case K::list:
      case K::tuple:
      case K::string: {
        if (!integral(key)) return {};
        const bool is_list = !obj.is(K::string);
        const std::u32string u = is_list ? std::u32string() : to_u32(obj.as_string());
        const auto n = static_cast<std::int64_t>(is_list ? obj.as_list().size() : u.size());
        std::int64_t i = to_int(key);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return {};
        if (is_list) return obj.as_list()[static_cast<std::size_t>(i)];
        return JinjaValue(to_u8(std::u32string(1, u[static_cast<std::size_t>(i)])));
      }
      default: return {};
    }
  }

  JinjaValue slice(const Expr& e, Scope& scope) {
    const JinjaValue obj = eval(*e.kids[0], scope);
    if (obj.is(K::undefined)) undefined(*e.kids[0]);
    std::optional<std::int64_t> b[3];
    for (int k = 0; k < 3; ++k) {
      if (!e.kids[static_cast<std::size_t>(k) + 1]) continue;
      const JinjaValue v = eval(*e.kids[static_cast<std::size_t>(k) + 1], scope);
      if (v.is(K::none)) continue;
      if (!integral(v)) src_.fail(e.pos, "slice indices must be integers or None");
      b[k] = to_int(v);
    }
    if (!sequence(obj) && !obj.is(K::string))
      src_.fail(e.pos, std::string("'") + type_name(obj) + "' cannot be sliced");
    const std::int64_t step = b[2].value_or(1);
    if (step == 0) src_.fail(e.pos, "slice step cannot be zero");
    const bool is_list = !obj.is(K::string);
    const std::u32string u = is_list ? std::u32string() : to_u32(obj.as_string());
    const auto n = static_cast<std::int64_t>(is_list ? obj.as_list().size() : u.size());
    // PySlice_AdjustIndices
    auto adjust = [&](std::optional<std::int64_t> v, bool is_start) {
      if (!v) return is_start ? (step < 0 ? n - 1 : 0) : (step < 0 ? std::int64_t{-1} : n);
      std::int64_t x = *v;
      if (x < 0) {
        x += n;
        if (x < 0) x = step < 0 ? -1 : 0;
      } else if (x >= n) {
        x = step < 0 ? n - 1 : n;
      }
      return x;
    };
    const std::int64_t start = adjust(b[0], true), stop = adjust(b[1], false);
    JinjaList items;
    std::u32string chars;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (is_list) {
        items.push_back(obj.as_list()[static_cast<std::size_t>(i)]);
      } else {
        chars.push_back(u[static_cast<std::size_t>(i)]);
      }
    }
    if (!is_list) return JinjaValue(to_u8(chars));
    return obj.is(K::tuple) ? JinjaValue::tuple(std::move(items)) : JinjaValue::list(std::move(items));
  }

  JinjaValue binop(const Expr& e, const JinjaValue& a, const JinjaValue& b) const {
    const std::string& op = e.name;
    auto type_error = [&]() -> JinjaValue {
      src_.fail(e.pos, "unsupported operand types for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
    };
    if (op == "+") {
      if (a.is(K::string) && b.is(K::string)) return JinjaValue(a.as_string() + b.as_string());
      if (sequence(a) && a.kind() == b.kind()) {
        JinjaList items = a.as_list();
        items.insert(items.end(), b.as_list().begin(), b.as_list().end());
        return a.is(K::tuple) ? JinjaValue::tuple(std::move(items)) : JinjaValue::list(std::move(items));
      }
    }
    if (op == "*") {
      const bool sa = a.is(K::string) || sequence(a);
      if ((sa && integral(b)) || ((b.is(K::string) || sequence(b)) && integral(a))) {
        const JinjaValue& seq = sa ? a : b;
        const std::int64_t times = std::max<std::int64_t>(0, to_int(sa ? b : a));
        if (times > 100000) src_.refuse(e.pos, "repeating a sequence more than 100000 times");
        if (seq.is(K::string)) {
          std::string out;
          for (std::int64_t i = 0; i < times; ++i) out += seq.as_string();
          return JinjaValue(std::move(out));
        }
        JinjaList items;
        for (std::int64_t i = 0; i < times; ++i) items.insert(items.end(), seq.as_list().begin(), seq.as_list().end());
        return seq.is(K::tuple) ? JinjaValue::tuple(std::move(items)) : JinjaValue::list(std::move(items));
      }
    }
    if (op == "%" && a.is(K::string)) src_.refuse(e.pos, "printf-style string formatting ('...' % x)");
    if (!numeric(a) || !numeric(b)) return type_error();
    const bool ints = integral(a) && integral(b);
    if (op == "/") {
      if (to_double(b) == 0.0) src_.fail(e.pos, "division by zero");
      return JinjaValue(to_double(a) / to_double(b));
    }
    if (ints) {
      const std::int64_t x = to_int(a), y = to_int(b);
      if (op == "+") return JinjaValue(x + y);
      if (op == "-") return JinjaValue(x - y);
      if (op == "*") return JinjaValue(x * y);
      if (op == "//" || op == "%") {
        if (y == 0) src_.fail(e.pos, "integer division or modulo by zero");
        std::int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {  // Python floors toward negative infinity
          --q;
          r += y;
        }
        return JinjaValue(op == "//" ? q : r);
      }
      if (op == "**" && y >= 0) {
        std::int64_t r = 1;
        for (std::int64_t i = 0; i < y; ++i) r *= x;
        return JinjaValue(r);
      }
    }
    const double x = to_double(a), y = to_double(b);
    if (op == "+") return JinjaValue(x + y);
    if (op == "-") return JinjaValue(x - y);
    if (op == "*") return JinjaValue(x * y);
    if (op == "**") return JinjaValue(std::pow(x, y));
    if (y == 0.0) src_.fail(e.pos, "float division or modulo by zero");
    if (op == "//") return JinjaValue(std::floor(x / y));
    if (op == "%") {
      double r = std::fmod(x, y);
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      return JinjaValue(r);
    }
    return type_error();
  }

  bool contains(const JinjaValue& seq, const JinjaValue& item, std::size_t pos) const {
    switch (seq.kind()) {
      case K::undefined: return false;
      case K::string:
        if (!item.is(K::string)) src_.fail(pos, "'in <string>' requires a string on the left");
        return seq.as_string().find(item.as_string()) != std::string::npos;
      case K::list:
      case K::tuple:
        return std::any_of(seq.as_list().begin(), seq.as_list().end(),
                           [&](const JinjaValue& x) { return py_eq(x, item); });
      case K::dict:
        return item.is(K::string) && std::any_of(seq.as_dict().begin(), seq.as_dict().end(),
                                                 [&](const auto& kv) { return kv.first == item.as_string(); });
      default: src_.fail(pos, std::string("argument of type '") + type_name(seq) + "' is not iterable");
    }
  }

  // Python's <, <=, >, >= for numbers, strings (code point order, which UTF-8 byte order keeps) and lists.
  int order(const JinjaValue& a, const JinjaValue& b, const std::string& op, std::size_t pos) const {
    if (numeric(a) && numeric(b)) {
      if (integral(a) && integral(b)) return to_int(a) < to_int(b) ? -1 : to_int(a) > to_int(b) ? 1 : 0;
      return to_double(a) < to_double(b) ? -1 : to_double(a) > to_double(b) ? 1 : 0;
    }
    if (a.is(K::string) && b.is(K::string))
      return a.as_string().compare(b.as_string()) < 0 ? -1 : a.as_string() == b.as_string() ? 0 : 1;
    if (sequence(a) && a.kind() == b.kind()) {
      const JinjaList &x = a.as_list(), &y = b.as_list();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (!py_eq(x[i], y[i])) return order(x[i], y[i], op, pos);
      }
      return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
    }
    if (a.is(K::undefined) || b.is(K::undefined)) src_.fail(pos, "an undefined value in a comparison with " + op);
    src_.fail(pos, "'" + op + "' is not supported between '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  bool compare(const std::string& op, const JinjaValue& a, const JinjaValue& b, std::size_t pos) const {
    if (op == "==") return py_eq(a, b);
    if (op == "!=") return !py_eq(a, b);
    if (op == "in") return contains(b, a, pos);
    if (op == "not in") return !contains(b, a, pos);
    const int c = order(a, b, op, pos);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  Args eval_args(const std::vector<Arg>& args, Scope& scope) {
    Args out;
    for (const Arg& a : args) {
      if (a.name.empty()) {
        out.pos.push_back(eval(*a.value, scope));
      } else {
        put(out.kw, a.name, eval(*a.value, scope));
      }
    }
    return out;
  }

  // Parameter `i` (named `name`) of a call; `dflt` when not given. Unknown keywords or extra arguments are errors.
  struct Params {
    const Renderer& r;
    const Args& args;
    std::size_t pos;
    std::string what;
    std::vector<std::string_view> names;

    Params(const Renderer& rr, const Args& a, std::size_t p, std::string w, std::vector<std::string_view> n)
        : r(rr), args(a), pos(p), what(std::move(w)), names(std::move(n)) {
      if (args.pos.size() > names.size())
        r.src_.fail(pos, what + " takes at most " + std::to_string(names.size()) + " argument(s)");
      for (const auto& kv : args.kw)
        if (std::find(names.begin(), names.end(), kv.first) == names.end())
          r.src_.fail(pos, what + " got an unexpected argument '" + kv.first + "'");
    }
    JinjaValue get(std::size_t i, JinjaValue dflt = {}) const {
      if (i < args.pos.size()) return args.pos[i];
      for (const auto& kv : args.kw)
        if (kv.first == names[i]) return kv.second;
      return dflt;
    }
    bool given(std::size_t i) const {
      if (i < args.pos.size()) return true;
      return std::any_of(args.kw.begin(), args.kw.end(), [&](const auto& kv) { return kv.first == names[i]; });
    }
    std::string str(std::size_t i, const char* dflt = nullptr) const {
      const JinjaValue v = get(i);
      if (v.is(K::undefined) && dflt) return dflt;
      if (!v.is(K::string)) r.src_.fail(pos, what + ": '" + std::string(names[i]) + "' must be a string");
      return v.as_string();
    }
  };

  JinjaValue call(const Expr& e, Scope& scope) {
    const JinjaValue callee = eval(*e.kids[0], scope);
    if (callee.is(K::undefined)) undefined(*e.kids[0]);
    if (!callee.is(K::object) || (callee.as_object().kind != JinjaObject::Kind::function &&
                                  callee.as_object().kind != JinjaObject::Kind::method))
      src_.fail(e.pos, "'" + text_of(*e.kids[0]) + "' is not callable");
    const Args args = eval_args(e.args, scope);
    const JinjaObject& f = callee.as_object();
    if (f.kind == JinjaObject::Kind::method) return method(f.self, f.name, args, e.pos);
    if (f.name == "raise_exception") {
      const Params p(*this, args, e.pos, "raise_exception()", {"message"});
      throw DataError(src_.origin + ": the chat template refused the conversation: " + py_str(p.get(0)),
                      "the template's own check (raise_exception at " + src_.where(e.pos) + ")");
    }
    if (f.name == "namespace") {
      auto ns = std::make_shared<JinjaObject>();
      ns->kind = JinjaObject::Kind::ns;
      if (args.pos.size() > 1) src_.fail(e.pos, "namespace() takes at most one positional argument");
      if (!args.pos.empty()) {
        if (!args.pos[0].is(K::dict)) src_.fail(e.pos, "namespace() takes a dict or keyword arguments");
        for (const auto& kv : args.pos[0].as_dict()) set_attr(*ns, kv.first, kv.second);
      }
      for (const auto& kv : args.kw) {
        if (kv.first.starts_with("_")) src_.fail(e.pos, "namespace attributes may not start with '_'");
        set_attr(*ns, kv.first, kv.second);
      }
      return JinjaValue::object(std::move(ns));
    }
    if (f.name == "dict") {
      if (!args.pos.empty()) src_.refuse(e.pos, "dict() with positional arguments");
      return JinjaValue::dict(args.kw);
    }
    if (f.name == "range") {
      if (!args.kw.empty() || args.pos.empty() || args.pos.size() > 3)
        src_.fail(e.pos, "range() takes 1 to 3 integers");
      for (const JinjaValue& v : args.pos)
        if (!integral(v)) src_.fail(e.pos, "range() takes integers");
      std::int64_t start = 0, stop = 0, step = 1;
      if (args.pos.size() == 1) {
        stop = to_int(args.pos[0]);
      } else {
        start = to_int(args.pos[0]);
        stop = to_int(args.pos[1]);
        if (args.pos.size() == 3) step = to_int(args.pos[2]);
      }
      if (step == 0) src_.fail(e.pos, "range() step must not be zero");
      JinjaList items;
      for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (items.size() >= 100000) src_.refuse(e.pos, "a range of more than 100000 items");
        items.emplace_back(i);
      }
      return JinjaValue::list(std::move(items));
    }
    // strftime_now: the local time, as transformers formats it (templates stamp "Today Date" with it)
    const Params p(*this, args, e.pos, "strftime_now()", {"format"});
    const std::string fmt = p.str(0);
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const std::size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
    if (n == 0 && !fmt.empty()) src_.fail(e.pos, "strftime_now(): the format gives an empty or too long result");
    return JinjaValue(std::string(buf, n));
  }

  std::string case_map(const std::string& s, const std::string& how, std::size_t pos) const {
    std::u32string u = to_u32(s);
    for (char32_t c : u)
      if (cased_beyond_ascii(c)) src_.refuse(pos, how + " of text with non-ASCII letters");
    if (how == "upper") {
      for (char32_t& c : u) c = ascii_upper(c);
    } else if (how == "lower") {
      for (char32_t& c : u) c = ascii_lower(c);
    } else if (how == "capitalize") {
      for (std::size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? ascii_upper(u[i]) : ascii_lower(u[i]);
    } else if (how == "title") {  // str.title(): a letter after a cased letter is lowered, any other raised
      bool prev = false;
      for (char32_t& c : u) {
        const bool letter = ascii_letter(c);
        c = letter ? (prev ? ascii_lower(c) : ascii_upper(c)) : c;
        prev = letter;
      }
    }
    return to_u8(u);
  }

  // Python's str.split(): runs of whitespace when sep is None (empty pieces dropped), else every sep.
  JinjaList split(const std::string& s, const JinjaValue& sep, std::int64_t maxsplit, std::size_t pos) const {
    JinjaList out;
    if (sep.is(K::none) || sep.is(K::undefined)) {
      const std::u32string u = to_u32(s);
      std::size_t i = 0;
      while (true) {
        while (i < u.size() && py_space(u[i])) ++i;
        if (i >= u.size()) break;
        if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
          std::size_t end = u.size();
          while (end > i && py_space(u[end - 1])) --end;
          out.emplace_back(to_u8(std::u32string_view(u).substr(i, end - i)));
          break;
        }
        std::size_t j = i;
        while (j < u.size() && !py_space(u[j])) ++j;
        out.emplace_back(to_u8(std::u32string_view(u).substr(i, j - i)));
        i = j;
      }
      return out;
    }
    if (!sep.is(K::string)) src_.fail(pos, "split(): the separator must be a string or None");
    const std::string& d = sep.as_string();
    if (d.empty()) src_.fail(pos, "split(): empty separator");
    std::size_t i = 0;
    while (true) {
      const std::size_t j = s.find(d, i);
      if (j == std::string::npos || (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit)) {
        out.emplace_back(s.substr(i));
        return out;
      }
      out.emplace_back(s.substr(i, j - i));
      i = j + d.size();
    }
  }

  std::optional<std::u32string> strip_chars(const JinjaValue& v, std::size_t pos) const {
    if (v.is(K::undefined) || v.is(K::none)) return std::nullopt;
    if (!v.is(K::string)) src_.fail(pos, "strip(): the characters must be a string or None");
    return to_u32(v.as_string());
  }

  JinjaValue method(const JinjaValue& self, const std::string& name, const Args& args, std::size_t pos) const {
    if (self.is(K::string)) {
      const std::string& s = self.as_string();
      const std::string what = "str." + name + "()";
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const Params p(*this, args, pos, what, {"chars"});
        return JinjaValue(py_strip(s, name != "rstrip", name != "lstrip", strip_chars(p.get(0), pos)));
      }
      if (name == "split" || name == "rsplit") {
        const Params p(*this, args, pos, what, {"sep", "maxsplit"});
        const JinjaValue m = p.get(1, JinjaValue(-1));
        if (!integral(m)) src_.fail(pos, what + ": maxsplit must be an integer");
        if (name == "rsplit" && to_int(m) >= 0) src_.refuse(pos, "str.rsplit() with maxsplit");
        return JinjaValue::list(split(s, p.get(0, nullptr), to_int(m), pos));
      }
      if (name == "startswith" || name == "endswith") {
        const Params p(*this, args, pos, what, {"prefix"});
        const JinjaValue arg = p.get(0);
        JinjaList options = sequence(arg) ? arg.as_list() : JinjaList{arg};
        for (const JinjaValue& o : options) {
          if (!o.is(K::string)) src_.fail(pos, what + " takes a string or a tuple of strings");
          const std::string& x = o.as_string();
          if (name == "startswith" ? s.starts_with(x) : s.ends_with(x)) return JinjaValue(true);
        }
        return JinjaValue(false);
      }
      if (name == "removeprefix" || name == "removesuffix") {
        const Params p(*this, args, pos, what, {"affix"});
        const std::string x = p.str(0);
        if (name == "removeprefix") return JinjaValue(s.starts_with(x) ? s.substr(x.size()) : s);
        return JinjaValue(s.ends_with(x) ? s.substr(0, s.size() - x.size()) : s);
      }
      if (name == "replace") {
        const Params p(*this, args, pos, what, {"old", "new", "count"});
        return JinjaValue(replace(s, p.str(0), p.str(1), p.get(2, JinjaValue(-1)), pos));
      }
      if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        const Params p(*this, args, pos, what, {});
        return JinjaValue(case_map(s, name, pos));
      }
      if (name == "join") {
        const Params p(*this, args, pos, what, {"iterable"});
        std::string out;
        const JinjaList items = iterate(p.get(0), pos);
        for (std::size_t i = 0; i < items.size(); ++i) {
          if (!items[i].is(K::string)) src_.fail(pos, what + ": item " + std::to_string(i) + " is not a string");
          out += (i ? s : "") + items[i].as_string();
        }
        return JinjaValue(std::move(out));
      }
      if (name == "find" || name == "count") {
        const Params p(*this, args, pos, what, {"sub"});
        const std::string x = p.str(0);
        if (name == "find") {
          const std::size_t at = s.find(x);
          return JinjaValue(at == std::string::npos ? std::int64_t{-1}
                                                    : static_cast<std::int64_t>(py_len(s.substr(0, at))));
        }
        if (x.empty()) return JinjaValue(static_cast<std::int64_t>(py_len(s) + 1));
        std::int64_t n = 0;
        for (std::size_t at = s.find(x); at != std::string::npos; at = s.find(x, at + x.size())) ++n;
        return JinjaValue(n);
      }
      src_.refuse(pos, "the string method " + name + "()");
    }
    if (self.is(K::dict)) {
      const std::string what = "dict." + name + "()";
      if (name == "get") {
        const Params p(*this, args, pos, what, {"key", "default"});
        const JinjaValue key = p.get(0);
        if (key.is(K::string))
          for (const auto& kv : self.as_dict())
            if (kv.first == key.as_string()) return kv.second;
        return p.get(1, nullptr);
      }
      if (name != "items" && name != "keys" && name != "values")
        src_.refuse(pos, "the dict method " + name + "() (a template cannot change its inputs)");
      const Params p(*this, args, pos, what, {});
      JinjaList out;
      if (name == "items") {
        for (const auto& kv : self.as_dict()) out.push_back(JinjaValue::tuple({JinjaValue(kv.first), kv.second}));
      } else if (name == "keys") {
        for (const auto& kv : self.as_dict()) out.emplace_back(kv.first);
      } else {
        for (const auto& kv : self.as_dict()) out.push_back(kv.second);
      }
      return JinjaValue::list(std::move(out));
    }
    if (self.is(K::object) && name == "cycle") {
      if (args.pos.empty()) src_.fail(pos, "loop.cycle() needs at least one value");
      const std::int64_t i = self.as_object().index0;
      return args.pos[static_cast<std::size_t>(i % static_cast<std::int64_t>(args.pos.size()))];
    }
    src_.refuse(pos,
                std::string("the ") + type_name(self) + " method " + name + "() (a template cannot change its inputs)");
  }

  std::string replace(const std::string& s, const std::string& from, const std::string& to, const JinjaValue& count,
                      std::size_t pos) const {
    if (from.empty()) src_.refuse(pos, "replace() of the empty string");
    if (!integral(count) && !count.is(K::none)) src_.fail(pos, "replace(): count must be an integer");
    std::int64_t left = integral(count) ? to_int(count) : -1;
    std::string out;
    std::size_t i = 0;
    for (std::size_t j = s.find(from); j != std::string::npos && left != 0; j = s.find(from, i), --left) {
      out.append(s, i, j - i).append(to);
      i = j + from.size();
    }
    return out + s.substr(i);
  }

  std::string tojson(const JinjaValue& v, const Args& args, std::size_t pos) const {
    const Params p(*this, args, pos, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonStyle st;
    st.ensure_ascii = truthy(p.get(0, false));
    const JinjaValue indent = p.get(1, nullptr);
    if (integral(indent)) {
      st.indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, to_int(indent))), ' ');
    } else if (indent.is(K::string)) {
      st.indent = indent.as_string();
    } else if (!indent.is(K::none)) {
      src_.fail(pos, "tojson: indent must be an integer, a string or none");
    }
    if (st.indent) st.item_sep = ",";
    const JinjaValue seps = p.get(2, nullptr);
    if (sequence(seps)) {
      if (seps.as_list().size() != 2 || !seps.as_list()[0].is(K::string) || !seps.as_list()[1].is(K::string))
        src_.fail(pos, "tojson: separators must be two strings");
      st.item_sep = seps.as_list()[0].as_string();
      st.key_sep = seps.as_list()[1].as_string();
    } else if (!seps.is(K::none)) {
      src_.fail(pos, "tojson: separators must be two strings");
    }
    st.sort_keys = truthy(p.get(3, false));
    std::string out;
    json_dump(v, st, 0, out, pos);
    return out;
  }

  // Python's json.dumps.
  void json_dump(const JinjaValue& v, const JsonStyle& st, int level, std::string& out, std::size_t pos) const {
    auto newline = [&](int lvl) {
      out += '\n';
      for (int i = 0; i < lvl; ++i) out += *st.indent;
    };
    switch (v.kind()) {
      case K::none: out += "null"; return;
      case K::boolean: out += v.as_bool() ? "true" : "false"; return;
      case K::integer: out += std::to_string(v.as_int()); return;
      case K::number: {
        const double d = v.as_number();
        out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : py_float(d);
        return;
      }
      case K::string: json_string(v.as_string(), st.ensure_ascii, out); return;
      case K::list:
      case K::tuple: {
        const JinjaList& items = v.as_list();
        if (items.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (std::size_t i = 0; i < items.size(); ++i) {
          if (i) out += st.item_sep;
          if (st.indent) newline(level + 1);
          json_dump(items[i], st, level + 1, out, pos);
        }
        if (st.indent) newline(level);
        out += ']';
        return;
      }
      case K::dict: {
        JinjaDict items = v.as_dict();
        if (items.empty()) {
          out += "{}";
          return;
        }
        if (st.sort_keys)
          std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        out += '{';
        for (std::size_t i = 0; i < items.size(); ++i) {
          if (i) out += st.item_sep;
          if (st.indent) newline(level + 1);
          json_string(items[i].first, st.ensure_ascii, out);
          out += st.key_sep;
          json_dump(items[i].second, st, level + 1, out, pos);
        }
        if (st.indent) newline(level);
        out += '}';
        return;
      }
      default: src_.fail(pos, std::string("tojson: an object of type ") + type_name(v) + " is not JSON serializable");
    }
  }

  bool run_test(const std::string& name, const JinjaValue& v, const Args& args, std::size_t pos) const {
    auto arg = [&]() -> const JinjaValue& {
      if (args.pos.size() != 1 || !args.kw.empty()) src_.fail(pos, "the test '" + name + "' takes one argument");
      return args.pos[0];
    };
    if (name == "defined") return !v.is(K::undefined);
    if (name == "undefined") return v.is(K::undefined);
    if (name == "none") return v.is(K::none);
    if (name == "string") return v.is(K::string);
    if (name == "number") return numeric(v);
    if (name == "integer") return v.is(K::integer);
    if (name == "float") return v.is(K::number);
    if (name == "boolean") return v.is(K::boolean);
    if (name == "true") return v.is(K::boolean) && v.as_bool();
    if (name == "false") return v.is(K::boolean) && !v.as_bool();
    if (name == "mapping") return v.is(K::dict);
    if (name == "iterable") return v.is(K::undefined) || v.is(K::string) || sequence(v) || v.is(K::dict);
    if (name == "sequence") return v.is(K::string) || sequence(v) || v.is(K::dict);
    if (name == "callable")
      return v.is(K::object) &&
             (v.as_object().kind == JinjaObject::Kind::function || v.as_object().kind == JinjaObject::Kind::method);
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!integral(v)) src_.fail(pos, "the test '" + name + "' needs an integer");
      const std::int64_t x = to_int(v);
      if (name == "divisibleby") {
        const JinjaValue& d = arg();
        if (!integral(d) || to_int(d) == 0) src_.fail(pos, "divisibleby needs a non-zero integer");
        return x % to_int(d) == 0;
      }
      return (x % 2 != 0) == (name == "odd");
    }
    if (name == "eq" || name == "equalto" || name == "==") return py_eq(v, arg());
    if (name == "ne" || name == "!=") return !py_eq(v, arg());
    if (name == "lt" || name == "lessthan" || name == "<") return order(v, arg(), "<", pos) < 0;
    if (name == "le" || name == "<=") return order(v, arg(), "<=", pos) <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return order(v, arg(), ">", pos) > 0;
    if (name == "ge" || name == ">=") return order(v, arg(), ">=", pos) >= 0;
    if (name == "in") return contains(arg(), v, pos);
    if (name == "lower" || name == "upper") {
      if (!v.is(K::string)) return false;
      const std::u32string u = to_u32(v.as_string());
      bool cased = false;
      for (char32_t c : u) {
        if (cased_beyond_ascii(c)) src_.refuse(pos, "the test '" + name + "' on non-ASCII letters");
        if (ascii_letter(c)) {
          cased = true;
          if ((name == "lower") != (c >= 'a' && c <= 'z')) return false;
        }
      }
      return cased;
    }
    if (name == "sameas") {
      const JinjaValue& o = arg();
      if (v.kind() != o.kind()) return false;
      if (v.identity()) return v.identity() == o.identity();
      return py_eq(v, o);
    }
    src_.refuse(pos, "the test '" + name + "'");
  }

  JinjaValue test(const Expr& e, Scope& scope) {
    const JinjaValue v = eval(*e.kids[0], scope);
    const Args args = eval_args(e.args, scope);
    return JinjaValue(run_test(e.name, v, args, e.pos) != e.negated);
  }

  JinjaValue attribute_path(const JinjaValue& v, const std::string& path, std::size_t pos) const {
    JinjaValue cur = v;
    std::size_t i = 0;
    while (true) {
      const std::size_t dot = path.find('.', i);
      const std::string part = path.substr(i, dot == std::string::npos ? std::string::npos : dot - i);
      if (cur.is(K::undefined)) return cur;
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return is_digit(c); });
      cur = digits ? get_item(cur, JinjaValue(static_cast<std::int64_t>(std::stoll(part))), pos)
                   : get_item(cur, JinjaValue(part), pos);
      if (dot == std::string::npos) return cur;
      i = dot + 1;
    }
  }

  JinjaValue apply_filter(const std::string& name, const JinjaValue& v, const Args& args, std::size_t pos) {
    const std::string what = "the filter '" + name + "'";
    if (name == "trim") {
      const Params p(*this, args, pos, what, {"chars"});
      return JinjaValue(py_strip(py_str(v), true, true, strip_chars(p.get(0), pos)));
    }
    if (name == "length" || name == "count") {
      const Params p(*this, args, pos, what, {});
      switch (v.kind()) {
        case K::undefined: return JinjaValue(0);
        case K::string: return JinjaValue(static_cast<std::int64_t>(py_len(v.as_string())));
        case K::list:
        case K::tuple: return JinjaValue(static_cast<std::int64_t>(v.as_list().size()));
        case K::dict: return JinjaValue(static_cast<std::int64_t>(v.as_dict().size()));
        default: src_.fail(pos, std::string("object of type '") + type_name(v) + "' has no len()");
      }
    }
    if (name == "upper" || name == "lower" || name == "capitalize") {
      const Params p(*this, args, pos, what, {});
      return JinjaValue(case_map(py_str(v), name, pos));
    }
    if (name == "title") {  // Jinja's title: words split at whitespace and -({[<, each first letter raised
      const Params p(*this, args, pos, what, {});
      std::u32string u = to_u32(py_str(v));
      for (char32_t c : u)
        if (cased_beyond_ascii(c)) src_.refuse(pos, "title of text with non-ASCII letters");
      bool word_start = true;
      for (char32_t& c : u) {
        const bool sep = py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        c = sep ? c : word_start ? ascii_upper(c) : ascii_lower(c);
        word_start = sep;
      }
      return JinjaValue(to_u8(u));
    }
    if (name == "default" || name == "d") {
      const Params p(*this, args, pos, what, {"default_value", "boolean"});
      const bool boolean = truthy(p.get(1, false));
      if (v.is(K::undefined) || (boolean && !truthy(v))) return p.get(0, JinjaValue(std::string()));
      return v;
    }
    if (name == "tojson") {
      if (v.is(K::undefined)) src_.fail(pos, "tojson of an undefined value");
      return JinjaValue(tojson(v, args, pos));
    }
    if (name == "items") {
      const Params p(*this, args, pos, what, {});
      if (v.is(K::undefined)) return JinjaValue::list({});
      if (!v.is(K::dict)) src_.fail(pos, "the filter 'items' needs a mapping");
      JinjaList out;
      for (const auto& kv : v.as_dict()) out.push_back(JinjaValue::tuple({JinjaValue(kv.first), kv.second}));
      return JinjaValue::list(std::move(out));
    }
    if (name == "join") {
      const Params p(*this, args, pos, what, {"d", "attribute"});
      const std::string sep = py_str(p.get(0, JinjaValue(std::string())));
      const JinjaValue attr = p.get(1, nullptr);
      std::string out;
      const JinjaList items = iterate(v, pos);
      for (std::size_t i = 0; i < items.size(); ++i) {
        const JinjaValue x = attr.is(K::none) ? items[i] : attribute_path(items[i], py_str(attr), pos);
        out += (i ? sep : "") + py_str(x);
      }
      return JinjaValue(std::move(out));
    }
    if (name == "first" || name == "last") {
      const Params p(*this, args, pos, what, {});
      const JinjaList items = iterate(v, pos);
      if (items.empty()) return {};
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") {
      const Params p(*this, args, pos, what, {});
      return JinjaValue::list(iterate(v, pos));
    }
    if (name == "string" || name == "safe") {
      const Params p(*this, args, pos, what, {});
      return name == "safe" ? v : JinjaValue(py_str(v));
    }
    if (name == "int" || name == "float") {
      const Params p(*this, args, pos, what, {"default"});
      const JinjaValue dflt = p.get(0, name == "int" ? JinjaValue(0) : JinjaValue(0.0));
      double d = 0;
      if (numeric(v)) {
        if (name == "int") return JinjaValue(v.is(K::number) ? static_cast<std::int64_t>(v.as_number()) : to_int(v));
        d = to_double(v);
      } else if (v.is(K::string)) {
        const std::string t = py_strip(v.as_string(), true, true);
        std::int64_t i = 0;
        const auto r = std::from_chars(t.data(), t.data() + t.size(), i);
        if (name == "int" && r.ec == std::errc() && r.ptr == t.data() + t.size()) return JinjaValue(i);
        char* end = nullptr;
        d = std::strtod(t.c_str(), &end);
        if (t.empty() || end != t.c_str() + t.size()) return dflt;
      } else {
        return dflt;
      }
      return name == "int" ? JinjaValue(static_cast<std::int64_t>(d)) : JinjaValue(d);
    }
    if (name == "replace") {
      const Params p(*this, args, pos, what, {"old", "new", "count"});
      return JinjaValue(replace(py_str(v), p.str(0), p.str(1), p.get(2, nullptr), pos));
    }
    if (name == "reverse") {
      const Params p(*this, args, pos, what, {});
      if (v.is(K::string)) {
        std::u32string u = to_u32(v.as_string());
        std::reverse(u.begin(), u.end());
        return JinjaValue(to_u8(u));
      }
      JinjaList items = iterate(v, pos);
      std::reverse(items.begin(), items.end());
      return JinjaValue::list(std::move(items));
    }
    if (name == "abs") {
      const Params p(*this, args, pos, what, {});
      if (!numeric(v)) src_.fail(pos, std::string("bad operand type for abs(): '") + type_name(v) + "'");
      return v.is(K::number) ? JinjaValue(std::fabs(v.as_number()))
                             : JinjaValue(static_cast<std::int64_t>(std::llabs(to_int(v))));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool attr = name.ends_with("attr"), keep_true = name.starts_with("select");
      if (!args.kw.empty()) src_.refuse(pos, what + " with keyword arguments");
      std::size_t k = 0;
      std::string path;
      if (attr) {
        if (args.pos.empty() || !args.pos[0].is(K::string)) src_.fail(pos, what + " needs an attribute name");
        path = args.pos[k++].as_string();
      }
      std::string test_name;
      if (k < args.pos.size()) {
        if (!args.pos[k].is(K::string)) src_.fail(pos, what + " needs a test name");
        test_name = args.pos[k++].as_string();
        if (!known(kTests, test_name)) src_.refuse(pos, "the test '" + test_name + "'");
      }
      Args test_args;
      test_args.pos.assign(args.pos.begin() + static_cast<std::ptrdiff_t>(k), args.pos.end());
      JinjaList out;
      for (const JinjaValue& item : iterate(v, pos)) {
        const JinjaValue x = attr ? attribute_path(item, path, pos) : item;
        const bool ok = test_name.empty() ? truthy(x) : run_test(test_name, x, test_args, pos);
        if (ok == keep_true) out.push_back(item);
      }
      return JinjaValue::list(std::move(out));
    }
    if (name == "map") {
      JinjaList out;
      const JinjaList items = iterate(v, pos);
      if (args.pos.empty()) {
        const Params p(*this, args, pos, what, {"attribute", "default"});
        if (!p.given(0)) src_.fail(pos, "map needs a filter name or attribute=");
        const std::string path = py_str(p.get(0));
        for (const JinjaValue& item : items) {
          JinjaValue x = attribute_path(item, path, pos);
          out.push_back(x.is(K::undefined) && p.given(1) ? p.get(1) : x);
        }
        return JinjaValue::list(std::move(out));
      }
      if (!args.pos[0].is(K::string)) src_.fail(pos, "map needs a filter name");
      const std::string f = args.pos[0].as_string();
      if (!known(kFilters, f)) src_.refuse(pos, "the filter '" + f + "'");
      Args rest;
      rest.pos.assign(args.pos.begin() + 1, args.pos.end());
      rest.kw = args.kw;
      for (const JinjaValue& item : items) out.push_back(apply_filter(f, item, rest, pos));
      return JinjaValue::list(std::move(out));
    }
    src_.refuse(pos, what);
  }

  JinjaValue filter(const Expr& e, Scope& scope) {
    const JinjaValue v = eval(*e.kids[0], scope);
    const Args args = eval_args(e.args, scope);
    return apply_filter(e.name, v, args, e.pos);
  }

  const Source& src_;
  std::string& out_;
};

}  // namespace

void render_template(const Source& src, const Body& body, Scope& root, std::string& out) {
  Renderer(src, out).exec(body, root);
}

}  // namespace ranktune::jinja_detail
