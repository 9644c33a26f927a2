#include "engine/policy_gate.h"

#include <dirent.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include "base/io.h"

namespace odyssey::engine {

#ifdef ODYSSEY_HAVE_QREXEC_POLICY
// policy_gate_qrexec.cc: the qrexec policy module behind the PolicyGate interface; null if
// it cannot be used.
std::unique_ptr<PolicyGate> MakeQrexecPolicyGate(const std::string& policy_dir);
#endif
namespace {

// Minimal policy.d reader used until (or instead of) the qrexec policy module: matches
// SERVICE ARGUMENT SOURCE TARGET ACTION lines; options are ignored; ask is treated as deny
// (the engine has no one to ask).
class BuiltinPolicyGate : public PolicyGate {
 public:
  explicit BuiltinPolicyGate(std::string dir) : dir_(std::move(dir)) {}
  std::string engine_name() const override { return "builtin"; }

  Result<PolicyDecision> Decide(const PolicyQuery& q) override {
    std::vector<std::string> files;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 7 && n.compare(n.size() - 7, 7, ".policy") == 0) files.push_back(n);
      }
      ::closedir(d);
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::string path = dir_ + "/" + f;
      auto text = ReadFileToString(path, 1 << 20);
      if (!text.ok()) return text.error().Wrap("reading policy");
      std::stringstream ss(*text);
      std::string line;
      int lineno = 0;
      while (std::getline(ss, line)) {
        ++lineno;
        std::stringstream ls(line);
        std::string svc, arg, src, tgt, action;
        if (!(ls >> svc) || svc[0] == '#' || svc[0] == '!') continue;
        if (!(ls >> arg >> src >> tgt >> action))
          return Error{path + ":" + std::to_string(lineno) + ": incomplete rule", EINVAL};
        if (!Match(svc, q.service) || !MatchArg(arg, q.argument) || !MatchSource(src, q.source) ||
            !MatchTarget(tgt, q.target))
          continue;
        return PolicyDecision{action == "allow", path + ":" + std::to_string(lineno), action};
      }
    }
    return PolicyDecision{false, "(no rule matched in " + dir_ + ")", "deny"};
  }

 private:
  static bool Match(const std::string& pat, const std::string& v) { return pat == "*" || pat == v; }
  static bool MatchArg(const std::string& pat, const std::string& v) {
    return pat == "*" || pat == "+" + v;
  }
  static bool MatchSource(const std::string& pat, const std::string& v) {
    if (pat == "*" || pat == v) return true;
    bool admin = v == "@adminvm" || v == "dom0";
    if (pat == "@adminvm") return admin;
    if (pat == "@anyvm") return !admin;
    return false;
  }
  static bool MatchTarget(const std::string& pat, const std::string& v) {
    if (pat == "*" || pat == v) return true;
    if (pat == "@anyvm") return v != "@adminvm" && v != "dom0";
    if (pat == "@dispvm") return v == "@dispvm";
    return false;
  }
  std::string dir_;
};

}  // namespace

std::unique_ptr<PolicyGate> MakePolicyGate(const std::string& policy_dir) {
#ifdef ODYSSEY_HAVE_QREXEC_POLICY
  if (auto gate = MakeQrexecPolicyGate(policy_dir)) return gate;
#endif
  return std::make_unique<BuiltinPolicyGate>(policy_dir);
}

}  // namespace odyssey::engine
