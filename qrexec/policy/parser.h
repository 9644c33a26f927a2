// Internal to the policy engine: tokens, rules and the policy.d parser (lines, files,
// include directives). Nothing here touches domains; evaluation lives in evaluate.cc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {

// The kinds of domain tokens in policy files.
enum class TokenKind {
  kName,            // literal domain name
  kAny,             // *
  kAnyVm,           // @anyvm: every domain except the admin domain
  kAdminVm,         // @adminvm
  kDefault,         // @default: the caller named no target (target column only)
  kType,            // @type:T
  kTag,             // @tag:T
  kDispVm,          // @dispvm: a new disposable from the caller's default template
  kDispVmTemplate,  // @dispvm:NAME
  kDispVmTag,       // @dispvm:@tag:T
  kUuid,            // uuid:U (value lowercase, without the prefix)
};

struct Token {
  TokenKind kind = TokenKind::kAny;
  std::string value;  // name / type / tag / template / uuid; "" for keywords
  std::string text;   // as written (normalized '$' -> '@')
};

// Where a token may appear; each accepts a different subset of TokenKind.
enum class TokenContext { kSource, kTarget, kRedirect };

// Parses one domain token for a context, or an error message (without location) such as
// "invalid source token".
Result<Token> ParseToken(std::string_view text, TokenContext context);
// Domain, tag, type, service and argument syntax checks shared with request validation.
bool IsValidDomainName(std::string_view name);
bool IsValidTag(std::string_view tag);
bool IsValidServiceName(std::string_view service);
bool IsValidArgument(std::string_view argument);  // "+…", chars [0-9A-Za-z._+-] after '+'
bool IsValidUuid(std::string_view uuid);

struct Rule {
  std::string service;   // "*" or a name
  std::string argument;  // "*" or "+…"
  Token source;
  Token target;
  Action action = Action::kDeny;
  std::optional<Token> redirect;        // target=
  std::optional<Token> default_target;  // default_target= (ask only)
  std::string user;                     // user=
  std::optional<bool> notify;           // notify=yes|no
  std::optional<bool> autostart;        // autostart=yes|no
  Location where;
};

// A parse error with its location and the offending token.
struct ParseError {
  Location where;
  std::string message;
  std::string token;
  // "file:line:column: message 'token'".
  std::string ToString() const;
};

// What one line of a policy file is.
struct ParsedLine {
  enum class Kind { kEmpty, kRule, kInclude, kIncludeDir, kIncludeService };
  Kind kind = Kind::kEmpty;
  Rule rule;             // kRule
  std::string path;      // include directives
  int path_column = 0;   // column of path
  std::string service;   // kIncludeService
  std::string argument;  // kIncludeService
};

// How a file's lines are laid out.
enum class LineFormat {
  kFull,     // SERVICE ARGUMENT SOURCE TARGET ACTION [OPTIONS] (policy.d files)
  kService,  // SOURCE TARGET ACTION [OPTIONS] ('!include-service' files; '$' means '@')
};

// Where a line comes from and, for kService lines, which service it is for.
struct LineContext {
  LineFormat format = LineFormat::kFull;
  std::string file;
  int line_no = 0;
  std::string service;   // kService only
  std::string argument;  // kService only
};

// Parses one line (without its newline) into *out, or returns the first error.
std::optional<ParseError> ParseLine(std::string_view line, const LineContext& context, ParsedLine* out);

// Identity of a file or directory read, to notice changes.
struct Stamp {
  std::string path;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
};
Stamp TakeStamp(const std::string& path);
bool SameStamp(const Stamp& a, const Stamp& b);

class PolicyImpl {
 public:
  std::vector<Rule> rules_;
  std::optional<ParseError> error_;
  std::string error_text_;
  std::vector<Stamp> stamps_;
};

// Loads a directory / a text into impl (rules, error, stamps).
void LoadDirectoryInto(const std::string& dir, PolicyImpl* impl);
void LoadTextInto(std::string_view text, const std::string& file_name, const std::string& base_dir,
                  PolicyImpl* impl);

}  // namespace odyssey::qrexec::policy
