// policy.d parser: one line at a time into rules and directives, then files and
// directories with their include directives. Strict: the first error stops loading and
// makes the whole policy deny.
#include "qrexec/policy/parser.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "base/io.h"

namespace odyssey::qrexec::policy {
namespace {

constexpr size_t kMaxPolicyFileBytes = 16 << 20;
constexpr size_t kMaxNameBytes = 31;       // Qubes' limit on domain names
constexpr size_t kMaxWordBytes = 255;      // services, arguments, tags, types, users
constexpr int kMaxIncludeDepth = 16;

bool IsAsciiAlnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool AllCharsIn(std::string_view s, std::string_view extra) {
  for (char c : s) {
    if (!IsAsciiAlnum(c) && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

const char* ContextName(TokenContext context) {
  switch (context) {
    case TokenContext::kSource: return "source";
    case TokenContext::kTarget: return "target";
    case TokenContext::kRedirect: return "target=/default_target=";
  }
  return "?";
}

// Which kinds each column accepts (the table of the Qubes multifile policy spec).
bool Allowed(TokenKind kind, TokenContext context) {
  switch (kind) {
    case TokenKind::kName:
    case TokenKind::kAdminVm:
    case TokenKind::kDispVmTemplate:
    case TokenKind::kUuid:
      return true;
    case TokenKind::kAny:
    case TokenKind::kAnyVm:
    case TokenKind::kType:
    case TokenKind::kTag:
    case TokenKind::kDispVmTag:
      return context != TokenContext::kRedirect;
    case TokenKind::kDefault:
      return context == TokenContext::kTarget;
    case TokenKind::kDispVm:
      return context != TokenContext::kSource;
  }
  return false;
}

Result<Token> Classify(std::string_view text) {
  Token t;
  t.text = std::string(text);
  auto bad = [&](const char* what) { return Error{what, 0}; };
  if (text == "*") {
    t.kind = TokenKind::kAny;
  } else if (text == "@anyvm") {
    t.kind = TokenKind::kAnyVm;
  } else if (text == "@adminvm") {
    t.kind = TokenKind::kAdminVm;
  } else if (text == "@default") {
    t.kind = TokenKind::kDefault;
  } else if (text == "@dispvm") {
    t.kind = TokenKind::kDispVm;
  } else if (StartsWith(text, "@dispvm:@tag:")) {
    t.kind = TokenKind::kDispVmTag;
    t.value = std::string(text.substr(13));
    if (!IsValidTag(t.value)) return bad("invalid tag in @dispvm:@tag:");
  } else if (StartsWith(text, "@dispvm:")) {
    t.kind = TokenKind::kDispVmTemplate;
    t.value = std::string(text.substr(8));
    if (!IsValidDomainName(t.value)) return bad("invalid template name in @dispvm:");
  } else if (StartsWith(text, "@type:")) {
    t.kind = TokenKind::kType;
    t.value = std::string(text.substr(6));
    if (t.value.empty() || t.value.size() > kMaxWordBytes || !AllCharsIn(t.value, "_"))
      return bad("invalid type in @type:");
  } else if (StartsWith(text, "@tag:")) {
    t.kind = TokenKind::kTag;
    t.value = std::string(text.substr(5));
    if (!IsValidTag(t.value)) return bad("invalid tag in @tag:");
  } else if (StartsWith(text, "uuid:")) {
    t.kind = TokenKind::kUuid;
    t.value = Lower(text.substr(5));
    if (!IsValidUuid(t.value)) return bad("invalid uuid");
  } else if (StartsWith(text, "@")) {
    return bad("unknown keyword");
  } else {
    t.kind = TokenKind::kName;
    t.value = std::string(text);
    if (!IsValidDomainName(t.value)) return bad("invalid domain name");
  }
  return t;
}

// Fields of a line with their 1-based columns.
struct Field {
  std::string_view text;
  int column = 0;
};

std::vector<Field> SplitFields(std::string_view line) {
  std::vector<Field> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    if (i >= line.size()) break;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    fields.push_back({line.substr(start, i - start), static_cast<int>(start) + 1});
  }
  return fields;
}

class LineParser {
 public:
  LineParser(const LineContext& context, ParsedLine* out) : context_(context), out_(out) {}

  std::optional<ParseError> Parse(std::string_view line) {
    size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') {
      out_->kind = ParsedLine::Kind::kEmpty;
      return std::nullopt;
    }
    for (size_t i = 0; i < line.size(); ++i) {
      auto c = static_cast<unsigned char>(line[i]);
      if ((c < 0x20 && c != '\t' && c != '\r') || c >= 0x7f)
        return Fail(static_cast<int>(i) + 1, "invalid character", line.substr(i, 1));
    }
    fields_ = SplitFields(line);
    end_column_ = static_cast<int>(line.size()) + 1;
    if (fields_[0].text[0] == '!') return ParseDirective();
    return ParseRule();
  }

 private:
  std::optional<ParseError> Fail(int column, std::string message, std::string_view token) const {
    return ParseError{{context_.file, context_.line_no, column}, std::move(message), Printable(token)};
  }
  std::optional<ParseError> Fail(const Field& field, std::string message) const {
    return Fail(field.column, std::move(message), field.text);
  }
  std::optional<ParseError> Missing(const char* what) const {
    const Field& last = fields_.back();
    return Fail(end_column_, std::string("missing ") + what + " after", last.text);
  }

  std::optional<ParseError> ParseServiceAndArgument(const Field& service, const Field& argument,
                                                    std::string* out_service, std::string* out_argument) const {
    if (service.text != "*" && !IsValidServiceName(service.text)) return Fail(service, "invalid service name");
    if (argument.text != "*" && !IsValidArgument(argument.text))
      return Fail(argument, "invalid argument (expected '*', '+' or '+ARG')");
    if (service.text == "*" && argument.text != "*") return Fail(argument, "service '*' needs argument '*'");
    *out_service = std::string(service.text);
    *out_argument = std::string(argument.text);
    return std::nullopt;
  }

  std::optional<ParseError> ParseDirective() {
    const Field& name = fields_[0];
    bool in_service_file = context_.format == LineFormat::kService;
    if (name.text == "!include") {
      if (fields_.size() < 2) return Missing("PATH");
      if (fields_.size() > 2) return Fail(fields_[2], "unexpected field after !include PATH");
      out_->kind = ParsedLine::Kind::kInclude;
      out_->path = std::string(fields_[1].text);
      out_->path_column = fields_[1].column;
      return std::nullopt;
    }
    if (name.text == "!include-dir") {
      if (in_service_file) return Fail(name, "directive not allowed in an !include-service file");
      if (fields_.size() < 2) return Missing("DIRECTORY");
      if (fields_.size() > 2) return Fail(fields_[2], "unexpected field after !include-dir DIRECTORY");
      out_->kind = ParsedLine::Kind::kIncludeDir;
      out_->path = std::string(fields_[1].text);
      out_->path_column = fields_[1].column;
      return std::nullopt;
    }
    if (name.text == "!include-service") {
      if (in_service_file) return Fail(name, "directive not allowed in an !include-service file");
      if (fields_.size() < 2) return Missing("SERVICE");
      if (fields_.size() < 3) return Missing("ARGUMENT");
      if (fields_.size() < 4) return Missing("PATH");
      if (fields_.size() > 4) return Fail(fields_[4], "unexpected field after !include-service SERVICE ARGUMENT PATH");
      if (auto e = ParseServiceAndArgument(fields_[1], fields_[2], &out_->service, &out_->argument)) return e;
      out_->kind = ParsedLine::Kind::kIncludeService;
      out_->path = std::string(fields_[3].text);
      out_->path_column = fields_[3].column;
      return std::nullopt;
    }
    return Fail(name, "unknown directive");
  }

  std::optional<ParseError> ParseDomain(const Field& field, TokenContext context, Token* out) const {
    std::string text(field.text);
    // The old per-service syntax spells keywords with '$' ($anyvm, $tag:x, $dispvm:$tag:x).
    if (context_.format == LineFormat::kService) std::replace(text.begin(), text.end(), '$', '@');
    auto token = Classify(text);
    if (!token.ok()) {
      return Fail(field, token.error().message + " in the " + ContextName(context) + " column");
    }
    if (!Allowed(token->kind, context)) {
      return Fail(field, std::string("token not allowed in the ") + ContextName(context) + " column");
    }
    *out = std::move(token.value());
    return std::nullopt;
  }

  std::optional<ParseError> ParseRule() {
    Rule& rule = out_->rule;
    size_t i = 0;
    if (context_.format == LineFormat::kFull) {
      if (fields_.size() < 2) return Missing("ARGUMENT");
      if (auto e = ParseServiceAndArgument(fields_[0], fields_[1], &rule.service, &rule.argument)) return e;
      i = 2;
    } else {
      rule.service = context_.service;
      rule.argument = context_.argument;
    }
    if (fields_.size() < i + 1) return Missing("SOURCE");
    if (fields_.size() < i + 2) return Missing("TARGET");
    if (fields_.size() < i + 3) return Missing("ACTION");
    if (auto e = ParseDomain(fields_[i], TokenContext::kSource, &rule.source)) return e;
    if (auto e = ParseDomain(fields_[i + 1], TokenContext::kTarget, &rule.target)) return e;
    const Field& action = fields_[i + 2];
    if (action.text == "allow") {
      rule.action = Action::kAllow;
    } else if (action.text == "deny") {
      rule.action = Action::kDeny;
    } else if (action.text == "ask") {
      rule.action = Action::kAsk;
    } else {
      return Fail(action, "invalid action (expected allow, deny or ask)");
    }
    rule.where = {context_.file, context_.line_no, fields_[0].column};
    for (size_t k = i + 3; k < fields_.size(); ++k) {
      if (auto e = ParseOption(fields_[k], &rule)) return e;
    }
    out_->kind = ParsedLine::Kind::kRule;
    return std::nullopt;
  }

  std::optional<ParseError> ParseYesNo(const Field& field, std::string_view value, std::optional<bool>* out) const {
    if (value == "yes") {
      *out = true;
    } else if (value == "no") {
      *out = false;
    } else {
      return Fail(field, "invalid value (expected yes or no)");
    }
    return std::nullopt;
  }

  std::optional<ParseError> ParseOption(const Field& field, Rule* rule) {
    size_t eq = field.text.find('=');
    if (eq == std::string_view::npos) return Fail(field, "expected an option KEY=VALUE");
    std::string_view key = field.text.substr(0, eq);
    std::string_view value = field.text.substr(eq + 1);
    bool known = key == "target" || key == "default_target" || key == "user" || key == "notify" || key == "autostart";
    if (!known) return Fail(field, "unknown option");
    for (const auto& seen : seen_keys_) {
      if (seen == key) return Fail(field, "duplicate option");
    }
    seen_keys_.emplace_back(key);
    bool allowed = key == "notify" || (rule->action != Action::kDeny && (key != "default_target" || rule->action == Action::kAsk));
    if (!allowed) {
      return Fail(field, "option not valid for action '" + std::string(ActionName(rule->action)) + "'");
    }
    if (value.empty()) return Fail(field, "empty option value");
    if (key == "notify") return ParseYesNo(field, value, &rule->notify);
    if (key == "autostart") return ParseYesNo(field, value, &rule->autostart);
    if (key == "user") {
      if (value.size() > kMaxWordBytes || !AllCharsIn(value, "_.-")) return Fail(field, "invalid user name");
      rule->user = std::string(value);
      return std::nullopt;
    }
    Field value_field{value, field.column + static_cast<int>(eq) + 1};
    Token token;
    if (auto e = ParseDomain(value_field, TokenContext::kRedirect, &token)) return e;
    if (key == "target") {
      rule->redirect = std::move(token);
    } else {
      rule->default_target = std::move(token);
    }
    return std::nullopt;
  }

  const LineContext& context_;
  ParsedLine* out_;
  std::vector<Field> fields_;
  std::vector<std::string> seen_keys_;
  int end_column_ = 0;
};

// Loads files and directories, following include directives.
class Loader {
 public:
  Loader(PolicyImpl* impl, std::string base_dir) : impl_(impl), base_dir_(std::move(base_dir)) {}

  bool LoadTopDirectory(const std::string& dir) { return LoadDirectory(dir, dir, nullptr); }

  bool LoadText(std::string_view text, const std::string& file_name) {
    return LoadLines(text, LineContext{LineFormat::kFull, file_name, 0, "", ""});
  }

 private:
  bool Fail(ParseError error) {
    impl_->error_ = std::move(error);
    return false;
  }

  std::string Resolve(const std::string& path) const {
    if (!path.empty() && path[0] == '/') return path;
    return base_dir_ + "/" + path;
  }

  // Error at the directive that named a path (`written` is the path as the directive
  // spells it), or at the path itself for the top directory and the files it holds.
  ParseError ErrorAt(const Location* from, const std::string& written, std::string message) const {
    if (from) return ParseError{*from, std::move(message), Printable(written)};
    return ParseError{{written, 0, 0}, std::move(message), Printable(written)};
  }

  bool LoadDirectory(const std::string& dir, const std::string& written, const Location* from) {
    impl_->stamps_.push_back(TakeStamp(dir));
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
    if (!d) return Fail(ErrorAt(from, written, "cannot read policy directory: " + Error::Errno("opendir").message));
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d.get())) {
      std::string name = e->d_name;
      if (name.empty() || name[0] == '.') continue;
      if (name.size() < 7 || name.compare(name.size() - 7, 7, ".policy") != 0) continue;
      names.push_back(name);
    }
    d.reset();
    std::sort(names.begin(), names.end());  // byte order == C locale order
    for (const auto& name : names) {
      std::string path = dir + "/" + name;
      if (!AllCharsIn(name, "_.-") || name != Lower(name)) {
        ParseError error;
        error.where.file = path;
        error.message = "invalid policy file name (allowed characters: 0-9 a-z _ . -)";
        error.token = Printable(name);
        return Fail(std::move(error));
      }
      if (!LoadFile(path, path, LineFormat::kFull, "", "", from)) return false;
    }
    return true;
  }

  bool LoadFile(const std::string& path, const std::string& written, LineFormat format, const std::string& service,
                const std::string& argument, const Location* from) {
    impl_->stamps_.push_back(TakeStamp(path));
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return Fail(ErrorAt(from, written, "cannot read policy file: " + Error::Errno("stat").message));
    }
    if (!S_ISREG(st.st_mode)) return Fail(ErrorAt(from, written, "policy file is not a regular file"));
    char real[PATH_MAX];
    std::string key = ::realpath(path.c_str(), real) ? std::string(real) : path;
    if (std::find(stack_.begin(), stack_.end(), key) != stack_.end())
      return Fail(ErrorAt(from, written, "include cycle"));
    if (stack_.size() >= kMaxIncludeDepth) return Fail(ErrorAt(from, written, "includes nested too deeply"));
    auto text = ReadFileToString(path, kMaxPolicyFileBytes);
    if (!text.ok()) return Fail(ErrorAt(from, written, "cannot read policy file: " + text.error().message));
    stack_.push_back(key);
    bool ok = LoadLines(*text, LineContext{format, path, 0, service, argument});
    stack_.pop_back();
    return ok;
  }

  bool LoadLines(std::string_view text, LineContext context) {
    int line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      pos = nl == std::string_view::npos ? text.size() : nl + 1;
      context.line_no = ++line_no;
      ParsedLine parsed;
      if (auto e = ParseLine(line, context, &parsed)) return Fail(std::move(*e));
      if (!Apply(parsed, context)) return false;
    }
    return true;
  }

  bool Apply(ParsedLine& parsed, const LineContext& context) {
    Location at{context.file, context.line_no, parsed.path_column};
    switch (parsed.kind) {
      case ParsedLine::Kind::kEmpty:
        return true;
      case ParsedLine::Kind::kRule:
        impl_->rules_.push_back(std::move(parsed.rule));
        return true;
      case ParsedLine::Kind::kInclude:
        return LoadFile(Resolve(parsed.path), parsed.path, context.format, context.service, context.argument, &at);
      case ParsedLine::Kind::kIncludeDir:
        if (stack_.size() >= kMaxIncludeDepth) return Fail(ErrorAt(&at, parsed.path, "includes nested too deeply"));
        return LoadDirectory(Resolve(parsed.path), parsed.path, &at);
      case ParsedLine::Kind::kIncludeService:
        return LoadFile(Resolve(parsed.path), parsed.path, LineFormat::kService, parsed.service, parsed.argument,
                        &at);
    }
    return true;
  }

  PolicyImpl* impl_;
  std::string base_dir_;
  std::vector<std::string> stack_;
};

void Finish(PolicyImpl* impl) {
  if (impl->error_) {
    impl->error_text_ = impl->error_->ToString();
    impl->rules_.clear();
  }
}

}  // namespace

bool IsValidDomainName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'))) return false;
  return AllCharsIn(name, "_.-");
}

bool IsValidTag(std::string_view tag) {
  return !tag.empty() && tag.size() <= kMaxWordBytes && AllCharsIn(tag, "_-");
}

bool IsValidServiceName(std::string_view service) {
  return !service.empty() && service.size() <= kMaxWordBytes && AllCharsIn(service, "._-");
}

bool IsValidArgument(std::string_view argument) {
  return !argument.empty() && argument[0] == '+' && argument.size() <= kMaxWordBytes + 1 &&
         AllCharsIn(argument.substr(1), "._+-");
}

bool IsValidUuid(std::string_view uuid) {
  if (uuid.size() != 36) return false;
  for (size_t i = 0; i < uuid.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = uuid[i];
    if (dash != (c == '-')) return false;
    if (!dash && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

Result<Token> ParseToken(std::string_view text, TokenContext context) {
  auto token = Classify(text);
  if (!token.ok()) return token.error();
  if (!Allowed(token->kind, context)) {
    return Error{std::string("token not allowed in the ") + ContextName(context) + " column", 0};
  }
  return token;
}

std::string ParseError::ToString() const {
  return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " + message + " '" +
         token + "'";
}

std::optional<ParseError> ParseLine(std::string_view line, const LineContext& context, ParsedLine* out) {
  *out = ParsedLine{};
  LineParser parser(context, out);
  return parser.Parse(line);
}

Stamp TakeStamp(const std::string& path) {
  Stamp s;
  s.path = path;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = st.st_size;
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  return s;
}

bool SameStamp(const Stamp& a, const Stamp& b) {
  return a.exists == b.exists && a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns &&
         a.ctime_ns == b.ctime_ns;
}

void LoadDirectoryInto(const std::string& dir, PolicyImpl* impl) {
  Loader loader(impl, dir);
  loader.LoadTopDirectory(dir);
  Finish(impl);
}

void LoadTextInto(std::string_view text, const std::string& file_name, const std::string& base_dir,
                  PolicyImpl* impl) {
  Loader loader(impl, base_dir);
  loader.LoadText(text, file_name);
  Finish(impl);
}

}  // namespace odyssey::qrexec::policy
