#include "qrexec/command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string_view>

namespace odyssey::qrexec {
namespace {

// dash's PATH when the environment has none (var.c, Debian 12's dash 0.5.12).
constexpr const char* kDashDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Builtins and reserved words of dash and bash (a superset costs only a shell start; a word
// missing here would run a program instead of the builtin).
bool IsShellWord(std::string_view w) {
  static const std::set<std::string_view> kWords = {
      // dash builtins
      ".", ":", "[", "alias", "bg", "break", "cd", "chdir", "command", "continue", "echo", "eval",
      "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs", "kill", "local",
      "printf", "pwd", "read", "readonly", "return", "set", "shift", "test", "times", "trap", "true",
      "type", "ulimit", "umask", "unalias", "unset", "wait",
      // bash builtins
      "bind", "builtin", "caller", "compgen", "complete", "compopt", "declare", "dirs", "disown",
      "enable", "help", "history", "let", "logout", "mapfile", "popd", "pushd", "readarray",
      "shopt", "source", "suspend", "typeset", "newgrp",
      // reserved words
      "!", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
      "select", "then", "time", "until", "while", "coproc", "{", "}", "[[", "]]"};
  return kWords.count(w) != 0;
}

bool IsPlainChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::strchr("_./:=,+@%-", c) != nullptr;
}

// A name dash imports from the environment: [A-Za-z_][A-Za-z0-9_]*.
bool IsShellName(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

std::optional<std::vector<std::string>> PlainCommandWords(const std::string& command) {
  std::vector<std::string> words;
  size_t pos = 0;
  for (;;) {
    size_t end = command.find(' ', pos);
    if (end == std::string::npos) end = command.size();
    if (end == pos) return std::nullopt;  // empty command, or a leading/double/trailing space
    std::string w = command.substr(pos, end - pos);
    if (!std::all_of(w.begin(), w.end(), IsPlainChar)) return std::nullopt;
    words.push_back(std::move(w));
    if (end == command.size()) break;
    pos = end + 1;
  }
  if (IsShellWord(words[0]) || words[0].find('=') != std::string::npos) return std::nullopt;
  return words;
}

std::optional<DirectCommand> PlanDirectCommand(const std::string& command,
                                               const std::vector<std::string>& env) {
  auto words = PlainCommandWords(command);
  if (!words) return std::nullopt;
  std::set<std::string_view> names;
  const std::string* path_var = nullptr;
  const std::string* pwd_var = nullptr;
  for (const auto& kv : env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) return std::nullopt;
    std::string_view name(kv.data(), eq);
    if (!IsShellName(name) || !names.insert(name).second) return std::nullopt;
    if (name == "PATH") path_var = &kv;
    if (name == "PWD") pwd_var = &kv;
  }
  DirectCommand d;
  const std::string& name = (*words)[0];
  if (name.find('/') != std::string::npos) {
    d.path = name;  // whatever it is: a failed exec falls back to the shell
  } else {
    std::string path = path_var ? path_var->substr(5) : kDashDefaultPath;
    if (path.find('%') != std::string::npos) return std::nullopt;
    size_t pos = 0;
    for (;;) {
      size_t colon = path.find(':', pos);
      if (colon == std::string::npos) colon = path.size();
      std::string dir = path.substr(pos, colon - pos);
      std::string candidate = dir.empty() ? name : dir + "/" + name;  // empty entry: "."
      if (IsRegularFile(candidate)) {
        d.path = std::move(candidate);
        break;
      }
      if (colon == path.size()) return std::nullopt;  // the shell says "not found"
      pos = colon + 1;
    }
  }
  // dash keeps an inherited PWD that is absolute and names the current directory, and
  // otherwise exports the physical one.
  d.env = env;
  struct stat dot, pwd;
  bool keep = pwd_var && pwd_var->size() > 4 && (*pwd_var)[4] == '/' && ::stat(".", &dot) == 0 &&
              ::stat(pwd_var->c_str() + 4, &pwd) == 0 && dot.st_dev == pwd.st_dev &&
              dot.st_ino == pwd.st_ino;
  if (!keep) {
    char buf[4096];
    if (!::getcwd(buf, sizeof buf)) return std::nullopt;
    std::erase_if(d.env, [](const std::string& kv) { return kv.rfind("PWD=", 0) == 0; });
    d.env.push_back(std::string("PWD=") + buf);
  }
  d.argv = std::move(*words);
  return d;
}

Result<pid_t> SpawnCommand(SpawnSpec spec, const std::string& command, ChildReaper* reaper) {
  if (!spec.run_as) {
    if (auto d = PlanDirectCommand(command, spec.env)) {
      SpawnSpec direct = spec;
      direct.path = std::move(d->path);
      direct.argv = std::move(d->argv);
      direct.env = std::move(d->env);
      auto pid = Spawn(direct, reaper);
      if (pid.ok()) return pid;
      // Not started (not executable, ENOEXEC script, vanished, ...): the shell reports it,
      // or runs it, as it always did.
    }
  }
  spec.path.clear();
  spec.argv = {"/bin/sh", "-c", command};
  return Spawn(spec, reaper);
}

}  // namespace odyssey::qrexec
