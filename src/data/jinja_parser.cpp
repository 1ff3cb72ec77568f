// Parser: Jinja's grammar (jinja2/parser.py) for the constructs of the subset, from lexed chunks to the AST.
#include <algorithm>

#include "jinja_internal.h"

namespace ranktune::jinja_detail {

const std::vector<std::string_view> kFilters = {"abs",    "capitalize", "count",   "d",       "default",
                                                "first",  "float",      "int",     "items",   "join",
                                                "last",   "length",     "list",    "lower",   "map",
                                                "reject", "rejectattr", "replace", "reverse", "safe",
                                                "select", "selectattr", "string",  "title",   "tojson",
                                                "trim",   "upper"};
const std::vector<std::string_view> kTests = {
    "boolean", "callable",  "defined",     "divisibleby", "eq",      "equalto",  "even",   "false",    "float",
    "ge",      "gt",        "greaterthan", "in",          "integer", "iterable", "le",     "lessthan", "lower",
    "lt",      "mapping",   "ne",          "none",        "number",  "odd",      "sameas", "sequence", "string",
    "true",    "undefined", "upper",       "==",          "!=",      "<",        "<=",     ">",        ">="};

bool known(const std::vector<std::string_view>& set, std::string_view name) {
  return std::find(set.begin(), set.end(), name) != set.end();
}

namespace {

class ExprParser {
 public:
  ExprParser(const Source& src, const std::vector<Token>& toks, std::size_t at) : src_(src), t_(toks), i_(at) {}

  std::size_t at() const { return i_; }
  const Token& peek() const { return t_[i_]; }
  const Token& next() { return t_[i_ == t_.size() - 1 ? i_ : i_++]; }
  bool is_op(std::string_view op) const { return peek().type == Token::op && peek().text == op; }
  bool is_name(std::string_view n) const { return peek().type == Token::name && peek().text == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    ++i_;
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) unexpected("expected '" + std::string(op) + "'");
  }
  std::string expect_name(const char* what) {
    if (peek().type != Token::name) unexpected(std::string("expected ") + what);
    return next().text;
  }
  [[noreturn]] void unexpected(const std::string& what) const {
    const Token& t = peek();
    const std::string got = t.type == Token::end                           ? "end of tag"
                            : t.type == Token::string                      ? "a string"
                            : t.type == Token::name || t.type == Token::op ? "'" + t.text + "'"
                                                                           : "a number";
    src_.syntax(t.pos, what + ", got " + got);
  }
  void expect_end() {
    if (peek().type != Token::end) unexpected("expected the end of the tag");
  }

  ExprPtr expression(bool with_cond = true) {
    ExprPtr e = or_expr();
    while (with_cond && is_name("if")) {
      const std::size_t pos = next().pos;
      auto c = node(Expr::T::cond, pos);
      ExprPtr cond = or_expr();
      ExprPtr other = skip_name("else") ? expression() : nullptr;
      c->kids.push_back(std::move(e));
      c->kids.push_back(std::move(cond));
      c->kids.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  // `a, b` (a list) or one expression: what `set` assigns and what `(...)` holds.
  ExprPtr tuple_or_expression(bool with_cond = true) {
    const std::size_t pos = peek().pos;
    ExprPtr first = expression(with_cond);
    if (!is_op(",")) return first;
    auto list = node(Expr::T::tuple, pos);
    list->kids.push_back(std::move(first));
    while (skip_op(",")) {
      if (peek().type == Token::end || is_op(")")) break;
      list->kids.push_back(expression(with_cond));
    }
    return list;
  }

 private:
  static ExprPtr node(Expr::T t, std::size_t pos) {
    auto e = std::make_unique<Expr>();
    e->t = t;
    e->pos = pos;
    return e;
  }
  ExprPtr binary(Expr::T t, std::size_t pos, ExprPtr a, ExprPtr b, std::string name = {}) {
    auto e = node(t, pos);
    e->name = std::move(name);
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }

  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    while (is_name("or")) {
      const std::size_t pos = next().pos;
      e = binary(Expr::T::or_, pos, std::move(e), and_expr());
    }
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    while (is_name("and")) {
      const std::size_t pos = next().pos;
      e = binary(Expr::T::and_, pos, std::move(e), not_expr());
    }
    return e;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      auto e = node(Expr::T::not_, next().pos);
      e->kids.push_back(not_expr());
      return e;
    }
    return compare();
  }
  ExprPtr compare() {
    const std::size_t pos = peek().pos;
    ExprPtr first = math1();
    std::unique_ptr<Expr> chain;
    while (true) {
      std::string op;
      if (peek().type == Token::op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                       peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && i_ + 1 < t_.size() && t_[i_ + 1].type == Token::name && t_[i_ + 1].text == "in") {
        i_ += 2;
        op = "not in";
      } else {
        break;
      }
      if (!chain) {
        chain = node(Expr::T::compare, pos);
        chain->kids.push_back(std::move(first));
      }
      chain->ops.push_back(op);
      chain->kids.push_back(math1());
    }
    return chain ? std::move(chain) : std::move(first);
  }
  ExprPtr math1() {
    ExprPtr e = concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      e = binary(Expr::T::binop, t.pos, std::move(e), concat(), t.text);
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = math2();
    while (is_op("~")) {
      const std::size_t pos = next().pos;
      e = binary(Expr::T::concat, pos, std::move(e), math2());
    }
    return e;
  }
  ExprPtr math2() {
    ExprPtr e = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      e = binary(Expr::T::binop, t.pos, std::move(e), power(), t.text);
    }
    return e;
  }
  ExprPtr power() {
    ExprPtr e = unary(true);
    while (is_op("**")) {
      const std::size_t pos = next().pos;
      e = binary(Expr::T::binop, pos, std::move(e), unary(true), "**");
    }
    return e;
  }
  ExprPtr unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      e = node(t.text == "-" ? Expr::T::neg : Expr::T::pos, t.pos);
      e->kids.push_back(unary(false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    return with_filter ? filters(std::move(e)) : std::move(e);
  }

  ExprPtr primary() {
    const Token& t = peek();
    if (t.type == Token::name) {
      next();
      if (t.text == "true" || t.text == "True") return literal(true, t.pos);
      if (t.text == "false" || t.text == "False") return literal(false, t.pos);
      if (t.text == "none" || t.text == "None") return literal(nullptr, t.pos);
      auto e = node(Expr::T::name, t.pos);
      e->name = t.text;
      return e;
    }
    if (t.type == Token::string) {
      std::string s = next().text;
      while (peek().type == Token::string) s += next().text;  // adjacent literals join, as in Python
      return literal(JinjaValue(std::move(s)), t.pos);
    }
    if (t.type == Token::integer) return literal(next().i, t.pos);
    if (t.type == Token::number) return literal(next().d, t.pos);
    if (is_op("(")) {
      next();
      if (skip_op(")")) return node(Expr::T::tuple, t.pos);
      ExprPtr e = tuple_or_expression();
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      auto e = node(Expr::T::list, next().pos);
      while (!skip_op("]")) {
        if (!e->kids.empty()) expect_op(",");
        if (skip_op("]")) break;
        e->kids.push_back(expression());
      }
      return e;
    }
    if (is_op("{")) {
      auto e = node(Expr::T::dict, next().pos);
      while (!skip_op("}")) {
        if (!e->kids.empty()) expect_op(",");
        if (skip_op("}")) break;
        e->kids.push_back(expression());
        expect_op(":");
        e->kids.push_back(expression());
      }
      return e;
    }
    unexpected("expected a value");
  }

  static ExprPtr literal(JinjaValue v, std::size_t pos) {
    auto e = node(Expr::T::literal, pos);
    e->value = std::move(v);
    return e;
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const std::size_t pos = next().pos;
        if (peek().type == Token::integer) {  // `x.0` is x[0]
          auto item = node(Expr::T::item, pos);
          item->kids.push_back(std::move(e));
          item->kids.push_back(literal(next().i, pos));
          e = std::move(item);
          continue;
        }
        auto a = node(Expr::T::attr, pos);
        a->name = expect_name("an attribute name after '.'");
        a->kids.push_back(std::move(e));
        e = std::move(a);
      } else if (is_op("[")) {
        e = subscript(std::move(e));
      } else if (is_op("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr subscript(ExprPtr obj) {
    const std::size_t pos = next().pos;
    ExprPtr bound[3];
    int colons = 0;
    auto at_stop = [&] { return is_op(":") || is_op("]"); };
    if (!at_stop()) bound[0] = expression();
    while (colons < 2 && skip_op(":")) {
      ++colons;
      if (!at_stop()) bound[colons] = expression();
    }
    if (is_op(",")) src_.refuse(peek().pos, "a subscript with several indices");
    expect_op("]");
    if (colons == 0) {
      auto e = node(Expr::T::item, pos);
      e->kids.push_back(std::move(obj));
      e->kids.push_back(std::move(bound[0]));
      return e;
    }
    auto e = node(Expr::T::slice, pos);
    e->kids.push_back(std::move(obj));
    for (auto& b : bound) e->kids.push_back(std::move(b));
    return e;
  }

  std::vector<Arg> call_args() {
    std::vector<Arg> args;
    expect_op("(");
    while (!skip_op(")")) {
      if (!args.empty()) expect_op(",");
      if (skip_op(")")) break;
      if (is_op("*") || is_op("**")) src_.refuse(peek().pos, "*args and **kwargs in a call");
      Arg a;
      if (peek().type == Token::name && i_ + 1 < t_.size() && t_[i_ + 1].type == Token::op && t_[i_ + 1].text == "=") {
        a.name = next().text;
        next();
      } else if (!args.empty() && !args.back().name.empty()) {
        src_.syntax(peek().pos, "a positional argument follows a keyword argument");
      }
      a.value = expression();
      args.push_back(std::move(a));
    }
    return args;
  }

  ExprPtr call(ExprPtr callee) {
    auto e = node(Expr::T::call, peek().pos);
    e->args = call_args();
    e->kids.push_back(std::move(callee));
    return e;
  }

  ExprPtr filters(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        next();
        const std::size_t pos = peek().pos;
        std::string name = expect_name("a filter name after '|'");
        if (is_op(".")) src_.refuse(pos, "a dotted filter name");
        if (!known(kFilters, name)) src_.refuse(pos, "the filter '" + name + "'");
        auto f = node(Expr::T::filter, pos);
        f->name = std::move(name);
        if (is_op("(")) f->args = call_args();
        f->kids.push_back(std::move(e));
        e = std::move(f);
      } else if (is_name("is")) {
        const std::size_t pos = next().pos;
        auto test = node(Expr::T::test, pos);
        test->negated = skip_name("not");
        const Token& nt = peek();
        test->name = expect_name("a test name after 'is'");
        if (!known(kTests, test->name)) src_.refuse(nt.pos, "the test '" + test->name + "'");
        if (is_op("(")) {
          test->args = call_args();
        } else if ((peek().type == Token::name || peek().type == Token::string || peek().type == Token::integer ||
                    peek().type == Token::number || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) src_.syntax(peek().pos, "tests cannot be chained with 'is'");
          Arg a;
          a.value = postfix(primary());
          test->args.push_back(std::move(a));
        }
        test->kids.push_back(std::move(e));
        e = std::move(test);
      } else if (is_op("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }

  const Source& src_;
  const std::vector<Token>& t_;
  std::size_t i_;
};

class Parser {
 public:
  Parser(const Source& src, const std::vector<Chunk>& chunks) : src_(src), c_(chunks) {}

  Body parse() {
    std::string stop;
    Body body = parse_body({}, stop);
    return body;
  }

 private:
  // Statements up to a block tag named in `stops` (left in `stop`, the chunk index past it).
  Body parse_body(std::initializer_list<std::string_view> stops, std::string& stop) {
    Body body;
    while (i_ < c_.size()) {
      const Chunk& c = c_[i_++];
      if (c.type == Chunk::data) {
        Stmt s;
        s.t = Stmt::T::text;
        s.pos = c.pos;
        s.text = c.text;
        body.push_back(std::move(s));
        continue;
      }
      ExprParser p(src_, c.tokens, 0);
      if (c.type == Chunk::output) {
        Stmt s;
        s.t = Stmt::T::output;
        s.pos = c.pos;
        s.expr = p.tuple_or_expression();
        p.expect_end();
        body.push_back(std::move(s));
        continue;
      }
      if (p.peek().type != Token::name) p.unexpected("expected a tag name");
      const std::string kw = p.next().text;
      for (std::string_view s : stops) {
        if (kw == s) {
          stop = kw;
          cur_parser_.emplace(src_, c.tokens, p.at());
          return body;
        }
      }
      if (kw == "if") {
        body.push_back(parse_if(c, p));
      } else if (kw == "for") {
        body.push_back(parse_for(c, p));
      } else if (kw == "set") {
        body.push_back(parse_set(c, p));
      } else if (kw == "break" || kw == "continue") {
        if (loops_ == 0) src_.syntax(c.pos, "'" + kw + "' outside a for loop");
        p.expect_end();
        Stmt s;
        s.t = kw == "break" ? Stmt::T::break_ : Stmt::T::continue_;
        s.pos = c.pos;
        body.push_back(std::move(s));
      } else if (kw == "generation") {
        // transformers' marker of assistant text (for return_assistant_tokens_mask): renders its body unchanged.
        p.expect_end();
        std::string end;
        Body inner = parse_body({"endgeneration"}, end);
        if (end.empty()) src_.syntax(c.pos, "'generation' without 'endgeneration'");
        cur_parser_->expect_end();
        for (Stmt& s : inner) body.push_back(std::move(s));
      } else if (kw == "macro" || kw == "call" || kw == "filter" || kw == "include" || kw == "import" || kw == "from" ||
                 kw == "extends" || kw == "block" || kw == "with" || kw == "autoescape" || kw == "do" ||
                 kw == "trans" || kw == "raw") {
        src_.refuse(c.pos, "{% " + kw + " %}");
      } else if (kw.starts_with("end") || kw == "else" || kw == "elif") {
        src_.syntax(c.pos, "unexpected '" + kw + "'");
      } else {
        src_.refuse(c.pos, "the tag '" + kw + "'");
      }
    }
    if (stops.size() != 0) {
      std::string want;
      for (std::string_view s : stops) want += (want.empty() ? "'" : " or '") + std::string(s) + "'";
      src_.syntax(src_.text.size(), "the template ends before " + want);
    }
    return body;
  }

  Stmt parse_if(const Chunk& c, ExprParser& p) {
    Stmt s;
    s.t = Stmt::T::if_;
    s.pos = c.pos;
    ExprPtr cond = p.tuple_or_expression();
    p.expect_end();
    while (true) {
      std::string stop;
      Body body = parse_body({"elif", "else", "endif"}, stop);
      s.branches.push_back({std::move(cond), std::move(body)});
      if (stop == "elif") {
        cond = cur_parser_->tuple_or_expression();
        cur_parser_->expect_end();
        continue;
      }
      cur_parser_->expect_end();
      if (stop == "else") {
        std::string end;
        Body other = parse_body({"endif"}, end);
        cur_parser_->expect_end();
        s.branches.push_back({nullptr, std::move(other)});
      }
      return s;
    }
  }

  std::vector<std::string> targets(ExprParser& p) {
    std::vector<std::string> names;
    const bool paren = p.skip_op("(");
    do {
      names.push_back(p.expect_name("a variable name"));
    } while (p.skip_op(","));
    if (paren) p.expect_op(")");
    return names;
  }

  Stmt parse_for(const Chunk& c, ExprParser& p) {
    Stmt s;
    s.t = Stmt::T::for_;
    s.pos = c.pos;
    s.targets = targets(p);
    if (!p.skip_name("in")) p.unexpected("expected 'in'");
    s.expr = p.tuple_or_expression(false);
    if (p.skip_name("if")) s.filter = p.expression();
    if (p.is_name("recursive")) src_.refuse(p.peek().pos, "a recursive for loop");
    p.expect_end();
    ++loops_;
    std::string stop;
    s.body = parse_body({"else", "endfor"}, stop);
    --loops_;
    cur_parser_->expect_end();
    if (stop == "else") {
      std::string end;
      s.else_body = parse_body({"endfor"}, end);
      cur_parser_->expect_end();
    }
    return s;
  }

  Stmt parse_set(const Chunk& c, ExprParser& p) {
    Stmt s;
    s.t = Stmt::T::set;
    s.pos = c.pos;
    s.targets.push_back(p.expect_name("a variable name"));
    if (p.skip_op(".")) {
      s.attr = p.expect_name("an attribute name");
    } else {
      while (p.skip_op(",")) s.targets.push_back(p.expect_name("a variable name"));
    }
    if (p.skip_op("=")) {
      s.expr = p.tuple_or_expression();
      p.expect_end();
      return s;
    }
    if (p.is_op("|")) src_.refuse(p.peek().pos, "a filtered {% set %} block");
    p.expect_end();
    if (s.targets.size() != 1 || !s.attr.empty()) src_.syntax(c.pos, "a {% set %} block assigns one name");
    s.t = Stmt::T::set_block;
    std::string end;
    s.body = parse_body({"endset"}, end);
    cur_parser_->expect_end();
    return s;
  }

  const Source& src_;
  const std::vector<Chunk>& c_;
  std::size_t i_ = 0;
  int loops_ = 0;
  std::optional<ExprParser> cur_parser_;  // positioned after its keyword
};

}  // namespace

Body parse_template(const Source& src, const std::vector<Chunk>& chunks) { return Parser(src, chunks).parse(); }

}  // namespace ranktune::jinja_detail
