#include "handlers/router.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>

namespace odyssey::handlers {

std::string Decision::Explain() const {
  std::string s;
  s += (is_url ? "url:    " : "file:   ") + subject + "\n";
  if (!is_url) {
    s += "type:   " + mime + " (from content)";
    if (!extension_mime.empty() && extension_mime != mime)
      s += "; the name suggests " + extension_mime + ", the content wins";
    s += "\n";
  }
  s += "rule:   " + rule_source;
  if (!rule_text.empty()) s += ": " + rule_text;
  s += "\naction: " + action.Spelling() + "\n";
  s += "would:  " + action.Explain() + "\n";
  return s;
}

Result<std::unique_ptr<Router>> Router::Create(const RouterOptions& options) {
  auto rules = RuleSet::Load(options.dirs, options.with_defaults);
  if (!rules.ok()) return rules.error();
  auto mime = MimeDetector::Create();
  if (!mime.ok()) return mime.error();
  return std::unique_ptr<Router>(new Router(std::move(rules.value()), std::move(mime.value())));
}

void Router::Apply(const Rule* rule, Decision* d) const {
  if (rule) {
    d->action = rule->action;
    d->rule_source = rule->source.ToString();
    d->rule_text = rule->text;
  } else {
    // Only reachable without the shipped defaults: the safe choice is still a disposable.
    d->action = Action{};
    d->rule_source = "(no rule matched: built-in fallback)";
  }
}

Result<Decision> Router::RouteFile(const std::string& path) {
  Decision d;
  d.subject = path;
  d.path = path;
  auto guess = mime_->FromFile(path);
  if (!guess.ok()) return guess.error();
  d.mime = guess->content_mime;
  d.extension_mime = guess->extension_mime;
  if (guess->Mismatch())
    d.notes.push_back(path + ": name suggests " + d.extension_mime + " but content is " + d.mime +
                      "; routing by content");
  Apply(rules_.MatchMime(d.mime), &d);
  return d;
}

Result<Decision> Router::RouteUrl(const std::string& url) {
  auto parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.error();
  Decision d;
  d.is_url = true;
  d.subject = url;
  Apply(rules_.MatchUrl(parsed.value()), &d);
  return d;
}

Result<Decision> Router::Route(const std::string& file_or_url) {
  if (file_or_url.rfind("file:", 0) == 0) {
    auto path = FileUrlToPath(file_or_url);
    if (!path.ok()) return path.error();
    auto d = RouteFile(path.value());
    if (d.ok()) d->subject = file_or_url;
    return d;
  }
  struct stat st;
  if (LooksLikeUrl(file_or_url) && ::stat(file_or_url.c_str(), &st) != 0) return RouteUrl(file_or_url);
  return RouteFile(file_or_url);
}

Result<std::string> FileUrlToPath(const std::string& url) {
  if (url.rfind("file://", 0) != 0) return Error{"not a file:// URL: '" + url + "'", EINVAL};
  std::string rest = url.substr(7);
  size_t slash = rest.find('/');
  std::string host = slash == std::string::npos ? rest : rest.substr(0, slash);
  if (!host.empty() && host != "localhost")
    return Error{"file:// URL names another host: '" + host + "'", EINVAL};
  if (slash == std::string::npos) return Error{"file:// URL without a path: '" + url + "'", EINVAL};
  std::string enc = rest.substr(slash), out;
  for (size_t i = 0; i < enc.size(); ++i) {
    if (enc[i] == '%') {
      if (i + 2 >= enc.size() || !std::isxdigit(static_cast<unsigned char>(enc[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(enc[i + 2])))
        return Error{"bad percent escape in '" + url + "'", EINVAL};
      char c = static_cast<char>(std::stoi(enc.substr(i + 1, 2), nullptr, 16));
      if (c == '\0') return Error{"%00 in file URL '" + url + "'", EINVAL};
      out += c;
      i += 2;
    } else {
      out += enc[i];
    }
  }
  return out;
}

}  // namespace odyssey::handlers
