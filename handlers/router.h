// The router: given a file or a URL, finds the first matching rule and says what would
// happen and why. Files are typed by their content (libmagic); a name that claims another
// type is reported and ignored.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "handlers/mime.h"
#include "handlers/rules.h"

namespace odyssey::handlers {

// One routing decision, with everything needed to explain it.
struct Decision {
  bool is_url = false;
  std::string subject;          // the path or URL as given
  std::string path;             // files: the path to open (file:// URLs decoded)
  Action action;
  std::string rule_source;      // "FILE:LINE", or "(no rule matched)"
  std::string rule_text;        // the matching rule as written
  std::string mime;             // files: type from content
  std::string extension_mime;   // files: type the name suggests ("" if unknown)
  std::vector<std::string> notes;  // e.g. the extension/content mismatch

  // Several lines: subject, type, rule FILE:LINE and text, what would happen.
  std::string Explain() const;
};

struct RouterOptions {
  std::vector<std::string> dirs = DefaultRuleDirs();
  bool with_defaults = true;  // append the shipped 50-default.rules
};

class Router {
 public:
  static Result<std::unique_ptr<Router>> Create(const RouterOptions& options);

  Result<Decision> RouteFile(const std::string& path);
  Result<Decision> RouteUrl(const std::string& url);
  // A file:// URL is routed as the file it names; "scheme:..." as a URL unless a file of
  // that name exists; anything else as a file.
  Result<Decision> Route(const std::string& file_or_url);

  const RuleSet& rules() const { return rules_; }

 private:
  Router(RuleSet rules, std::unique_ptr<MimeDetector> mime)
      : rules_(std::move(rules)), mime_(std::move(mime)) {}
  void Apply(const Rule* rule, Decision* d) const;

  RuleSet rules_;
  std::unique_ptr<MimeDetector> mime_;
};

// "file:///a%20b" -> "/a b"; fails for other hosts than "" and "localhost".
Result<std::string> FileUrlToPath(const std::string& url);

}  // namespace odyssey::handlers
