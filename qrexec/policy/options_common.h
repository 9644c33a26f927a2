// Flags and setup shared by qrexec-policy and qrexec-policy-daemon.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {

inline constexpr const char* kDefaultPolicyDir = "/etc/odyssey/policy.d";
inline constexpr const char* kDefaultAuditLog = "/var/lib/odyssey/policy-audit.db";

struct CommonFlags {
  std::string policy_dir = kDefaultPolicyDir;
  std::string catalog;
  std::string audit_log = kDefaultAuditLog;
  bool no_audit = false;
  std::string ask_program;

  void Add(CLI::App& app) {
    app.add_option("--policy-dir", policy_dir, "directory of *.policy files")->capture_default_str();
    app.add_option("--catalog", catalog,
                   "JSON domain catalog (names, types, tags, uuids, default disposable templates); "
                   "without it only the admin domain dom0 is known");
    app.add_option("--audit-log", audit_log, "sqlite3 audit log every decision is appended to")
        ->capture_default_str();
    app.add_flag("--no-audit", no_audit, "do not write the audit log (decisions are not recorded)");
    app.add_option("--ask-program", ask_program,
                   "prompt program for 'ask' rules, run as PROG SOURCE SERVICE+ARG TARGET DEFAULT_TARGET "
                   "(exit 0 allows; first stdout line may name the chosen target); default: zenity or "
                   "xmessage when $DISPLAY is set, otherwise 'ask' denies");
  }

  // Builds the service, or prints why not (naming the offending value) and returns null.
  std::shared_ptr<PolicyService> MakeService(const char* prog) const {
    ServiceOptions options;
    options.policy_dir = policy_dir;
    if (catalog.empty()) {
      options.catalog = AdminOnlyCatalog();
    } else {
      auto loaded = LoadJsonCatalog(catalog);
      if (!loaded.ok()) {
        std::fprintf(stderr, "%s: --catalog %s: %s\n", prog, catalog.c_str(), loaded.error().message.c_str());
        return nullptr;
      }
      options.catalog = loaded.value();
    }
    if (!no_audit) {
      auto log = AuditLog::Open(audit_log);
      if (!log.ok()) {
        std::fprintf(stderr, "%s: --audit-log %s: %s\n", prog, audit_log.c_str(), log.error().message.c_str());
        return nullptr;
      }
      options.audit = std::move(log.value());
    }
    options.prompter = MakeProgramPrompter(PrompterOptionsFromEnv(ask_program));
    return std::make_shared<PolicyService>(std::move(options));
  }
};

}  // namespace odyssey::qrexec::policy
