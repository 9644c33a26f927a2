#include "handlers/rules.h"

#include <dirent.h>
#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "base/io.h"

namespace odyssey::handlers {
namespace {

constexpr size_t kMaxRuleFileBytes = 1 << 20;
constexpr size_t kMaxLineBytes = 4096;

Error SyntaxError(const std::string& file, int line, const std::string& what,
                  const std::string& token) {
  return Error{file + ":" + std::to_string(line) + ": " + what + ": '" + token + "'", EINVAL};
}

bool AllOf(const std::string& s, const char* extra) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr(extra, c)) return false;
  }
  return true;
}

// Domain and template names: the engine's rule (engine/policy_gate.h IsValidEngineDomainName),
// so a rule the engine would refuse at call time is refused here, at parse time: a lower-case
// letter first, then [a-z0-9_-], at most 31 characters.
bool ValidDomainName(const std::string& s) {
  if (s.empty() || s.size() > 31 || s[0] < 'a' || s[0] > 'z') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

bool ValidMimePattern(const std::string& p) {
  if (p == "*") return true;
  size_t slash = p.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == p.size()) return false;
  if (p.find('/', slash + 1) != std::string::npos) return false;
  return AllOf(p.substr(0, slash), "*.+-_") && AllOf(p.substr(slash + 1), "*?.+-_");
}

Result<Action> ParseAction(const std::string& tok, const std::string& file, int line) {
  Action a;
  std::string head = tok.substr(0, tok.find(':'));
  bool has_arg = tok.find(':') != std::string::npos;
  std::string arg = has_arg ? tok.substr(tok.find(':') + 1) : "";
  if (head == "dispvm") {
    a.kind = Action::Kind::kDispVm;
    if (has_arg && !ValidDomainName(arg))
      return SyntaxError(file, line, "invalid disposable template name", arg);
    a.name = arg;
  } else if (head == "vm") {
    a.kind = Action::Kind::kVm;
    if (!ValidDomainName(arg)) return SyntaxError(file, line, "invalid domain name in vm:NAME", tok);
    a.name = arg;
  } else if (head == "convert") {
    if (arg == "pdf") {
      a.kind = Action::Kind::kConvertPdf;
    } else if (arg == "image") {
      a.kind = Action::Kind::kConvertImage;
    } else {
      return SyntaxError(file, line, "unknown converter (expected convert:pdf or convert:image)", tok);
    }
  } else if (tok == "local") {
    a.kind = Action::Kind::kLocal;
  } else if (tok == "deny") {
    a.kind = Action::Kind::kDeny;
  } else {
    return SyntaxError(file, line,
                       "unknown action (expected dispvm[:TEMPLATE], vm:NAME, convert:pdf, "
                       "convert:image, local or deny)",
                       tok);
  }
  return a;
}

Status ParseUrlPattern(const std::string& p, Rule* rule, const std::string& file, int line) {
  // scheme and host_glob default to "*" (see Rule).
  if (p == "*") return OkStatus();
  size_t colon = p.find(':');
  if (colon == std::string::npos || colon == 0)
    return SyntaxError(file, line, "URL pattern needs a scheme (SCHEME: or SCHEME://HOST[/PATH])", p);
  std::string scheme = p.substr(0, colon);
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "*" && (!AllOf(scheme, "+.-") || !std::isalpha(static_cast<unsigned char>(scheme[0]))))
    return SyntaxError(file, line, "invalid URL scheme", scheme);
  rule->scheme = scheme;
  std::string rest = p.substr(colon + 1);
  if (rest.empty()) return OkStatus();
  if (rest.rfind("//", 0) != 0)
    return SyntaxError(file, line, "URL pattern: expected '//' after the scheme", p);
  rest.erase(0, 2);
  size_t slash = rest.find('/');
  std::string host = rest.substr(0, slash);
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!AllOf(host, "*?.-_[]"))
    return SyntaxError(file, line, "invalid host glob", host.empty() ? p : host);
  rule->host_glob = host;
  if (slash != std::string::npos) {
    std::string path = rest.substr(slash);
    if (path.find_first_of("?#*") != std::string::npos)
      return SyntaxError(file, line, "path prefix may not contain '?', '#' or '*'", path);
    if (RemoveDotSegments(path) != path)
      return SyntaxError(file, line, "path prefix may not contain '.' or '..' segments", path);
    rule->path_prefix = path == "/" ? "" : path;
  }
  return OkStatus();
}

std::vector<std::string> Tokens(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    if (tok[0] == '#') break;
    out.push_back(tok);
  }
  return out;
}

bool ValidRulesFileName(const std::string& name) {
  return name.size() > 6 && name.compare(name.size() - 6, 6, ".rules") == 0 &&
         AllOf(name, "_.-") && name[0] != '.';
}

}  // namespace

std::string Action::Spelling() const {
  switch (kind) {
    case Kind::kDispVm: return name.empty() ? "dispvm" : "dispvm:" + name;
    case Kind::kVm: return "vm:" + name;
    case Kind::kConvertPdf: return "convert:pdf";
    case Kind::kConvertImage: return "convert:image";
    case Kind::kLocal: return "local";
    case Kind::kDeny: return "deny";
  }
  return "?";
}

std::string Action::Explain() const {
  std::string ro = view_only ? " (view only: nothing is written back)" : "";
  switch (kind) {
    case Kind::kDispVm:
      return "open in a " + Target::Disposable(name).Describe() + ro;
    case Kind::kVm: return "open in the persistent " + Target::Named(name).Describe() + ro;
    case Kind::kConvertPdf:
      return "convert to a trusted PDF: render in a disposable, rebuild from pixels beside the "
             "original as NAME.trusted.pdf, move the original to quarantine";
    case Kind::kConvertImage:
      return "convert to a trusted PNG: decode in a disposable, rebuild from pixels beside the "
             "original as NAME.trusted.png, move the original to quarantine";
    case Kind::kLocal: return "open on the host with the local default application (no isolation)";
    case Kind::kDeny: return "refuse to open it";
  }
  return "?";
}

std::optional<Target> Action::ServiceTarget() const {
  switch (kind) {
    case Kind::kDispVm: return Target::Disposable(name);
    case Kind::kVm: return Target::Named(name);
    case Kind::kConvertPdf:
    case Kind::kConvertImage: return Target::Disposable();
    default: return std::nullopt;
  }
}

bool Rule::MatchesMime(const std::string& mime) const {
  return kind == Kind::kMime && ::fnmatch(mime_pattern.c_str(), mime.c_str(), FNM_CASEFOLD) == 0;
}

bool Rule::MatchesUrl(const Url& url) const {
  if (kind != Kind::kUrl) return false;
  if (scheme != "*" && scheme != url.scheme) return false;
  if (host_glob != "*" && ::fnmatch(host_glob.c_str(), url.host.c_str(), FNM_CASEFOLD) != 0)
    return false;
  if (path_prefix.empty()) return true;
  // Prefixes match whole segments: /docs matches /docs and /docs/x, never /docsevil.
  if (url.path.rfind(path_prefix, 0) != 0) return false;
  return url.path.size() == path_prefix.size() || path_prefix.back() == '/' ||
         url.path[path_prefix.size()] == '/';
}

Result<RuleSet> RuleSet::Parse(const std::string& text, const std::string& file_name) {
  RuleSet set;
  set.files_.push_back(file_name);
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.size() > kMaxLineBytes)
      return SyntaxError(file_name, lineno, "line longer than 4096 bytes", line.substr(0, 40) + "...");
    for (unsigned char c : line) {
      if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
        return SyntaxError(file_name, lineno, "control character in rule", "\\x" + std::to_string(c));
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto toks = Tokens(line);
    if (toks.empty()) continue;
    Rule rule;
    rule.source = {file_name, lineno};
    for (const auto& t : toks) rule.text += (rule.text.empty() ? "" : " ") + t;
    if (toks[0] == "mime") {
      rule.kind = Rule::Kind::kMime;
    } else if (toks[0] == "url") {
      rule.kind = Rule::Kind::kUrl;
    } else {
      return SyntaxError(file_name, lineno, "unknown match kind (expected 'mime' or 'url')", toks[0]);
    }
    if (toks.size() < 2) return SyntaxError(file_name, lineno, "missing pattern after", toks[0]);
    if (toks.size() < 3) return SyntaxError(file_name, lineno, "missing action after pattern", toks[1]);
    if (rule.kind == Rule::Kind::kMime) {
      std::string p = toks[1];
      for (char& c : p) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!ValidMimePattern(p))
        return SyntaxError(file_name, lineno, "invalid MIME pattern (expected TYPE/SUBTYPE, TYPE/* or *)", toks[1]);
      rule.mime_pattern = p;
    } else {
      ODYSSEY_TRY(ParseUrlPattern(toks[1], &rule, file_name, lineno));
    }
    auto action = ParseAction(toks[2], file_name, lineno);
    if (!action.ok()) return action.error();
    rule.action = action.value();
    for (size_t i = 3; i < toks.size(); ++i) {
      if (toks[i] != "view-only")
        return SyntaxError(file_name, lineno, "unknown option (expected 'view-only')", toks[i]);
      if (rule.action.ServiceTarget() == std::nullopt || rule.action.kind == Action::Kind::kConvertPdf ||
          rule.action.kind == Action::Kind::kConvertImage)
        return SyntaxError(file_name, lineno, "'view-only' only applies to dispvm and vm actions",
                           toks[2]);
      if (rule.action.view_only) return SyntaxError(file_name, lineno, "option given twice", toks[i]);
      rule.action.view_only = true;
    }
    set.rules_.push_back(std::move(rule));
  }
  return set;
}

Result<RuleSet> RuleSet::Load(const std::vector<std::string>& dirs, bool with_defaults) {
  RuleSet all;
  for (const auto& dir : dirs) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return Error::Errno("opendir", dir);
    }
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.size() > 6 && name.compare(name.size() - 6, 6, ".rules") == 0) names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      std::string path = dir + "/" + name;
      if (!ValidRulesFileName(name))
        return Error{path + ": rule file names may only use [A-Za-z0-9_.-]: '" + name + "'", EINVAL};
      auto text = ReadFileToString(path, kMaxRuleFileBytes);
      if (!text.ok()) return text.error();
      auto set = Parse(text.value(), path);
      if (!set.ok()) return set.error();
      all.Append(set.value());
    }
  }
  if (with_defaults) {
    auto defaults = Parse(DefaultRulesText(), kDefaultRulesName);
    ODYSSEY_CHECK(defaults.ok());  // the shipped file is parsed by the tests
    all.Append(defaults.value());
  }
  return all;
}

void RuleSet::Append(const RuleSet& other) {
  rules_.insert(rules_.end(), other.rules_.begin(), other.rules_.end());
  files_.insert(files_.end(), other.files_.begin(), other.files_.end());
}

const Rule* RuleSet::MatchMime(const std::string& mime) const {
  for (const auto& r : rules_)
    if (r.MatchesMime(mime)) return &r;
  return nullptr;
}

const Rule* RuleSet::MatchUrl(const Url& url) const {
  for (const auto& r : rules_)
    if (r.MatchesUrl(url)) return &r;
  return nullptr;
}

std::vector<std::string> DefaultRuleDirs() {
  if (const char* env = std::getenv("ODYSSEY_HANDLERS_DIRS")) {
    std::vector<std::string> dirs;
    std::string s = env;
    size_t start = 0;
    while (start <= s.size()) {
      size_t colon = s.find(':', start);
      std::string d = s.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!d.empty()) dirs.push_back(d);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    return dirs;
  }
  std::vector<std::string> dirs = {"/etc/odyssey/handlers.d"};
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  if (xdg && *xdg == '/') {
    dirs.push_back(std::string(xdg) + "/odyssey/handlers.d");
  } else if (home && *home) {
    dirs.push_back(std::string(home) + "/.config/odyssey/handlers.d");
  }
  return dirs;
}

}  // namespace odyssey::handlers
