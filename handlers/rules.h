// Routing rules: which action opens a file (by the MIME type of its content) or a URL (by
// scheme, host glob and path prefix). Rules come from drop-in directories, files in name
// order, and the first matching rule wins. This module decides; it never opens anything.
//
// Grammar, one rule per line ('#' starts a comment, blank lines are ignored):
//   mime PATTERN ACTION [view-only]     PATTERN: * | TYPE/* | TYPE/SUBTYPE (globs allowed)
//   url  PATTERN ACTION [view-only]     PATTERN: * | SCHEME: | SCHEME://HOSTGLOB[/PATHPREFIX]
//   ACTION: dispvm | dispvm:TEMPLATE | vm:NAME | convert:pdf | convert:image | local | deny
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "handlers/disposable_runner.h"
#include "handlers/url.h"

namespace odyssey::handlers {

// What a matching rule asks for.
struct Action {
  enum class Kind { kDispVm, kVm, kConvertPdf, kConvertImage, kLocal, kDeny };
  Kind kind = Kind::kDispVm;
  std::string name;  // template for kDispVm (may be empty), domain for kVm
  bool view_only = false;

  // The rule-file spelling: "dispvm:fedora-dvm", "convert:pdf".
  std::string Spelling() const;
  // What would happen, in words: "open in a disposable of template 'x' (view only)".
  std::string Explain() const;
  // The domain that runs the service, for the actions that have one.
  std::optional<Target> ServiceTarget() const;
};

// Where a rule was written.
struct RuleSource {
  std::string file;
  int line = 0;
  std::string ToString() const { return file + ":" + std::to_string(line); }
};

struct Rule {
  enum class Kind { kMime, kUrl };
  Kind kind = Kind::kMime;
  std::string mime_pattern;  // kMime: fnmatch pattern on "type/subtype"
  std::string scheme = std::string(1, '*');     // kUrl: "*" or a scheme
  std::string host_glob = std::string(1, '*');  // kUrl: "*" when the pattern had no host part
  std::string path_prefix;   // kUrl: "" matches any path
  Action action;
  RuleSource source;
  std::string text;  // the rule as written, for explanations

  bool MatchesMime(const std::string& mime) const;
  bool MatchesUrl(const Url& url) const;
};

// An ordered list of rules.
class RuleSet {
 public:
  // Parses the text of one rule file; errors say "FILE:LINE: ... 'TOKEN'".
  static Result<RuleSet> Parse(const std::string& text, const std::string& file_name);
  // Reads each directory in order and, inside each, its *.rules files in name order; a
  // missing directory is skipped. Then appends the shipped defaults (see DefaultRulesText).
  static Result<RuleSet> Load(const std::vector<std::string>& dirs, bool with_defaults = true);

  void Append(const RuleSet& other);
  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<std::string>& files() const { return files_; }

  // First rule matching, or nullptr.
  const Rule* MatchMime(const std::string& mime) const;
  const Rule* MatchUrl(const Url& url) const;

 private:
  std::vector<Rule> rules_;
  std::vector<std::string> files_;
};

// The text of handlers/handlers.d/50-default.rules, compiled in so that the safe defaults
// hold even when nothing is installed; its rules come after every drop-in file.
const std::string& DefaultRulesText();
// The name the compiled-in defaults are reported under.
inline constexpr const char* kDefaultRulesName = "50-default.rules (built-in)";

// The drop-in directories in search order: $ODYSSEY_HANDLERS_DIRS (colon-separated) if set,
// else /etc/odyssey/handlers.d then $XDG_CONFIG_HOME (or ~/.config)/odyssey/handlers.d.
std::vector<std::string> DefaultRuleDirs();

}  // namespace odyssey::handlers
