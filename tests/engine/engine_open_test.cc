// `odyssey open`, `route`, `convert` and `call` end to end: a real odysseyd on the default
// backend (hal/native as root: namespaces, frozen clones, the real qrexec-agent), the real
// handlers routing rules (libmagic on real generated files), the real services under
// handlers/services, and the real qrexec policy library deciding every call. Skipped when
// not root (hal/native needs it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/engine/engine_test_util.h"
#include "tests/handlers/test_util.h"

namespace odyssey::engine::testing {
namespace {

namespace ht = odyssey::handlers::testing;

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void Write(const std::string& path, const std::string& text, mode_t mode = 0644) {
  { std::ofstream(path, std::ios::binary) << text; }
  ::chmod(path.c_str(), mode);
}

// Width and height from a PNG's IHDR.
std::pair<uint32_t, uint32_t> PngSize(const std::string& png) {
  if (png.size() < 24 || png.compare(1, 3, "PNG") != 0) return {0, 0};
  auto be32 = [&](size_t o) {
    return (uint32_t(uint8_t(png[o])) << 24) | (uint32_t(uint8_t(png[o + 1])) << 16) |
           (uint32_t(uint8_t(png[o + 2])) << 8) | uint32_t(uint8_t(png[o + 3]));
  };
  return {be32(16), be32(20)};
}

// Single-quoted for sh (and for GLib's g_shell_parse_argv, which follows sh quoting).
std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ShellLine(const std::vector<std::string>& argv) {
  std::string line;
  for (auto& a : argv) line += (line.empty() ? "" : " ") + Quote(a);
  return line;
}

// The value of KEY in [GROUP] of a .desktop file, with the spec's escapes (\s \n \t \r \\) undone.
std::string DesktopValue(const std::string& text, const std::string& group, const std::string& key) {
  std::istringstream in(text);
  std::string line, current;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '[') current = line.substr(1, line.find(']') - 1);
    if (current != group || line.compare(0, key.size() + 1, key + "=") != 0) continue;
    std::string raw = line.substr(key.size() + 1), v;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\' || i + 1 == raw.size()) {
        v += raw[i];
        continue;
      }
      char e = raw[++i];
      v += e == 's' ? ' ' : e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
    }
    return v;
  }
  return "";
}

// Exec= as a launcher runs it (Desktop Entry spec, "The Exec key"; KIO's DesktopExecParser):
// arguments split on spaces, double-quoted ones unescaped (\" \` \$ \\), %f the first file,
// %F every file as its own argument, %u/%U the same as file:// URLs, %% a '%'; %i %c %k dropped.
std::vector<std::string> ExpandDesktopExec(const std::string& exec, const std::vector<std::string>& files) {
  std::vector<std::string> argv;
  std::string arg;
  bool in_arg = false, quoted = false;
  auto flush = [&] {
    if (!in_arg) return;
    if (arg == "%F" || arg == "%U") {
      for (auto& f : files) argv.push_back(arg == "%U" ? "file://" + f : f);
    } else if (arg == "%f" || arg == "%u") {
      if (!files.empty()) argv.push_back(arg == "%u" ? "file://" + files[0] : files[0]);
    } else if (arg != "%i" && arg != "%c" && arg != "%k") {
      std::string out;
      for (size_t i = 0; i < arg.size(); ++i) out += arg[i] == '%' && i + 1 < arg.size() && arg[i + 1] == '%' ? arg[i++] : arg[i];
      argv.push_back(out);
    }
    arg.clear();
    in_arg = false;
  };
  for (size_t i = 0; i < exec.size(); ++i) {
    char c = exec[i];
    if (quoted) {
      if (c == '"') quoted = false;
      else if (c == '\\' && i + 1 < exec.size()) arg += exec[++i];
      else arg += c;
    } else if (c == ' ') {
      flush();
    } else if (c == '"') {
      quoted = in_arg = true;
    } else {
      arg += c;
      in_arg = true;
    }
  }
  flush();
  return argv;
}

// The <command> of the uca.xml <action> whose <unique-id> is id, XML entities decoded.
std::string ThunarCommand(const std::string& uca, const std::string& id) {
  size_t at = uca.find("<unique-id>" + id + "</unique-id>");
  if (at == std::string::npos) return "";
  size_t begin = uca.rfind("<action>", at), end = uca.find("</action>", at);
  std::string action = uca.substr(begin, end - begin);
  size_t c0 = action.find("<command>") + 9, c1 = action.find("</command>");
  std::string raw = action.substr(c0, c1 - c0), out;
  const std::pair<const char*, char> entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'},
                                                   {"&quot;", '"'}, {"&apos;", '\''}};
  for (size_t i = 0; i < raw.size();) {
    bool done = false;
    for (auto& [name, ch] : entities)
      if (raw.compare(i, std::strlen(name), name) == 0) {
        out += ch;
        i += std::strlen(name);
        done = true;
        break;
      }
    if (!done) out += raw[i++];
  }
  return out;
}

// A Thunar custom action's command line as Thunar 4.18 builds it (thunar_uca_model_parse_argv):
// %f the first path, %F every path, each g_shell_quote'd, %% a '%'; then g_shell_parse_argv.
std::string ThunarCommandLine(const std::string& command, const std::vector<std::string>& files) {
  std::string line;
  for (size_t i = 0; i < command.size(); ++i) {
    if (command[i] != '%' || i + 1 == command.size()) {
      line += command[i];
      continue;
    }
    char f = command[++i];
    if (f == 'f' && !files.empty()) line += Quote(files[0]);
    else if (f == 'F')
      for (size_t k = 0; k < files.size(); ++k) line += (k ? " " : "") + Quote(files[k]);
    else if (f == '%') line += '%';
  }
  return line;
}

class EngineOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "hal/native needs root";
    work_ = MakeTempDir("open-work");
    ::chmod(work_.c_str(), 0711);
    std::filesystem::create_directories(work_ + "/rules");
    std::filesystem::create_directories(work_ + "/policy");
    // The engine's shipped policy, plus a test service that exits with its argument.
    std::filesystem::copy_file(std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d/50-odyssey-engine.policy",
                               work_ + "/policy/50-odyssey-engine.policy");
    Write(work_ + "/policy/40-test.policy", "test.Exit * @adminvm @anyvm allow\n");
  }
  void TearDown() override {
    if (!work_.empty()) std::filesystem::remove_all(work_);
  }
  // A daemon on the default backend whose services are handlers/services, after
  // `extra_services` when given.
  std::unique_ptr<TestDaemon> Daemon(const std::string& extra_services = "") {
    std::string services = std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services";
    // Every folder is visible in the domains, the first one that has a name wins.
    if (!extra_services.empty()) services = extra_services + ":" + services;
    auto d = std::make_unique<TestDaemon>(Conf{{"backend", "auto"}, {"pool_size", "1"},
                                               {"policy_dir", work_ + "/policy"},
                                               {"service_path", services}});
    ::chmod(d->dir().c_str(), 0711);
    return d;
  }
  // The CLI against d, with rules only from work_/rules (plus the shipped defaults) and a
  // private XDG_DATA_HOME (quarantine).
  CliResult Cli(TestDaemon& d, std::vector<std::string> args, const std::string& stdin_data = "") {
    args.insert(args.begin(), {ODYSSEY_CLI_PATH, "--no-autostart", "--socket", d.socket()});
    return RunProgram(args, stdin_data,
                      {"ODYSSEY_HANDLERS_DIRS=" + work_ + "/rules", "XDG_DATA_HOME=" + work_ + "/data"});
  }
  int Running(TestDaemon& d) {
    auto ls = d.Client().Request({{"op", "ls"}});
    int n = 0;
    if (ls.ok())
      for (auto& x : (*ls)["domains"]) n += x.value("state", "") == "running";
    return n;
  }

  std::string work_;
};

TEST_F(EngineOpenTest, CallStreamsAndPropagatesTheExitCode) {
  std::string svc = work_ + "/svc";
  std::filesystem::create_directories(svc);
  Write(svc + "/test.Exit", "#!/bin/sh\ncat\necho \"arg=$1\" >&2\nexit \"${1:-3}\"\n", 0755);
  ::chmod(svc.c_str(), 0755);
  auto d = Daemon(svc);
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = Cli(*d, {"call", "test.Exit+42"}, "hello through qrexec\n");
  EXPECT_EQ(r.exit_code, 42) << r.err << d->Log();
  EXPECT_EQ(r.out, "hello through qrexec\n");
  EXPECT_NE(r.err.find("arg=42"), std::string::npos) << r.err;
  r = Cli(*d, {"call", "--dispvm=host", "test.Exit+7"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  r = Cli(*d, {"call", "--dispvm", "test.Exit+0"}, "x");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "x");
  // The real qubes.OpenURL: refuses a javascript: URL with exit 1.
  r = Cli(*d, {"call", "qubes.OpenURL"}, "javascript:alert(1)\n");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  // Not in the policy: refused (126), naming the deciding rule or that none matched.
  r = Cli(*d, {"call", "qubes.Filecopy"});
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find("call denied by policy"), std::string::npos) << r.err;
  Write(work_ + "/policy/10-deny.policy", "test.Exit +9 @adminvm @anyvm deny\n");
  r = Cli(*d, {"call", "test.Exit+9"});
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find(work_ + "/policy/10-deny.policy:1"), std::string::npos) << r.err;
  r = Cli(*d, {"call", "--vm=work", "test.Exit+1"});  // a named domain that does not run
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("no domain named 'work' is running"), std::string::npos) << r.err;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, EveryServicePathFolderIsVisibleInLookupOrder) {
  // Two folders before handlers/services: test.Exit in both (the first
  // wins), test.Second only in the second; the shipped services stay reachable behind them.
  std::string first = work_ + "/first", second = work_ + "/second";
  for (auto& dir : {first, second}) {
    std::filesystem::create_directories(dir);
    ::chmod(dir.c_str(), 0755);
  }
  Write(first + "/test.Exit", "#!/bin/sh\necho first\n", 0755);
  Write(second + "/test.Exit", "#!/bin/sh\necho second\n", 0755);
  Write(second + "/test.Second", "#!/bin/sh\necho only-in-second\n", 0755);
  Write(work_ + "/policy/40-test.policy", "test.Exit * @adminvm @anyvm allow\n"
                                          "test.Second * @adminvm @anyvm allow\n"
                                          "test.Missing * @adminvm @anyvm allow\n");
  auto d = Daemon(first + ":" + second);
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = Cli(*d, {"call", "test.Exit"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, "first\n");
  r = Cli(*d, {"call", "test.Second"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "only-in-second\n");
  r = Cli(*d, {"call", "qubes.OpenURL"}, "https://example.org/third-folder\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("would open https://example.org/third-folder"), std::string::npos) << r.out;
  r = Cli(*d, {"call", "test.Missing"});  // in no folder: the agent's "not found"
  EXPECT_EQ(r.exit_code, 127) << r.err;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, NamedPersistentDomainServesVmRulesUntilStopped) {
  std::string svc = work_ + "/svc";
  std::filesystem::create_directories(svc);
  ::chmod(svc.c_str(), 0755);
  // Remembers earlier calls in the domain's own /tmp: state that only a persistent domain keeps.
  Write(svc + "/test.State", "#!/bin/sh\necho \"host=$(hostname) calls=$(cat /tmp/calls 2>/dev/null)\"\n"
                             "echo x >> /tmp/calls\n", 0755);
  Write(work_ + "/policy/40-test.policy", "test.State * @adminvm @anyvm allow\n");
  Write(work_ + "/rules/10-work.rules", "mime application/pdf vm:work\n"
                                        "url https://intranet.example vm:work\n");
  std::string pdf = work_ + "/report.pdf";
  ht::WritePdf(pdf, 1);
  auto d = Daemon(svc);
  ASSERT_TRUE(d->Start()) << d->Log();

  // Not started yet: a clear error saying how to start it; nothing is opened.
  auto r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("-> vm:work (rule " + work_ + "/rules/10-work.rules:1)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no domain named 'work' is running; start it with `odyssey vm start work"),
            std::string::npos) << r.err;
  r = Cli(*d, {"route", pdf});
  EXPECT_NE(r.out.find("action: vm:work"), std::string::npos) << r.out;

  r = Cli(*d, {"vm", "start", "work"});
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.out.find("domain work running (template host"), std::string::npos) << r.out;
  r = Cli(*d, {"vm", "start", "work"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already running"), std::string::npos) << r.err;
  for (const char* bad : {"host", "1work", "disp7", "Work"}) {
    r = Cli(*d, {"vm", "start", bad});
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  }
  r = Cli(*d, {"vm", "start", "other", "--template", "nosuch"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("template nosuch does not exist"), std::string::npos) << r.err;

  // Calls share the domain: its hostname is its name, and /tmp keeps what earlier calls left.
  r = Cli(*d, {"call", "--vm=work", "test.State"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, "host=work calls=\n");
  r = Cli(*d, {"call", "--vm=work", "test.State"});
  EXPECT_EQ(r.out, "host=work calls=x\n");
  r = Cli(*d, {"ls", "--json"});
  auto ls = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(ls.is_array()) << r.out;
  int persistent = 0;
  for (auto& x : ls)
    if (x.value("name", "") == "work" && x.value("state", "") == "persistent") ++persistent;
  EXPECT_EQ(persistent, 1) << r.out;

  // The vm:work rules now reach it: a PDF through qubes.OpenInVM, a URL through qubes.OpenURL.
  r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.err.find("qubes.OpenInVM: received report.pdf"), std::string::npos) << r.err;
  r = Cli(*d, {"open", "https://intranet.example/wiki"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("would open https://intranet.example/wiki"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("qubes.OpenURL in work"), std::string::npos) << r.out;
  r = Cli(*d, {"call", "--vm=work", "test.State"});
  EXPECT_EQ(r.out, "host=work calls=x\nx\n");  // still the same domain after the opens

  // The policy decides calls into it like any target, naming the rule.
  Write(work_ + "/policy/10-deny.policy", "qubes.OpenURL * @adminvm work deny\n");
  r = Cli(*d, {"open", "https://intranet.example/wiki"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("call denied by policy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(work_ + "/policy/10-deny.policy:1"), std::string::npos) << r.err;
  r = Cli(*d, {"call", "--vm=work", "qubes.OpenURL"}, "https://intranet.example/\n");
  EXPECT_EQ(r.exit_code, 126) << r.err;

  EXPECT_EQ(Cli(*d, {"vm", "stop", "work"}).exit_code, 0);
  r = Cli(*d, {"call", "--vm=work", "test.State"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("start it with `odyssey vm start work"), std::string::npos) << r.err;
  r = Cli(*d, {"vm", "stop", "work"});
  EXPECT_EQ(r.exit_code, 1);
  // Started again, it is a fresh domain; `odyssey kill` stops it too.
  ASSERT_EQ(Cli(*d, {"vm", "start", "work"}).exit_code, 0);
  r = Cli(*d, {"call", "--vm=work", "test.State"});
  EXPECT_EQ(r.out, "host=work calls=\n");
  EXPECT_EQ(Cli(*d, {"kill", "work"}).exit_code, 0);
  r = Cli(*d, {"ls", "--json"});
  EXPECT_EQ(r.out.find("\"work\""), std::string::npos) << r.out;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, TemplateNamesAreTheNamesThePolicyCanWrite) {
  Write(work_ + "/policy/40-test.policy", "qubes.OpenURL * @adminvm @anyvm allow\n");
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  const std::string longest = "t" + std::string(30, 'x');  // 31 bytes: the policy's limit
  auto r = Cli(*d, {"template", "add", longest, "--pool-size", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& bad : {longest + "x", std::string("9lives"), std::string("dot.ted")}) {
    r = Cli(*d, {"template", "add", bad});
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("invalid template name '" + bad + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("starting with a letter"), std::string::npos) << r.err;
  }
  // The longest template is reachable as @dispvm:NAME, by a rule naming it exactly.
  Write(work_ + "/policy/10-exact.policy", "qubes.OpenURL +exact @adminvm @dispvm:" + longest + " deny\n");
  r = Cli(*d, {"policy", "check", "qubes.OpenURL", "--target", "@dispvm:" + longest, "--arg", "exact"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("10-exact.policy:1"), std::string::npos) << r.out;
  r = Cli(*d, {"open", "--dispvm", longest, "https://example.org/longest"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.out.find("would open https://example.org/longest"), std::string::npos) << r.out;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, FileManagerRightClickActionsReachDisposables) {
  // `odyssey integrate --user` in a throw-away HOME, then each installed action run the way
  // its file manager runs it, against a real odysseyd: Nautilus runs the script with the
  // selected names as arguments from the folder (and the NAUTILUS_SCRIPT_* variables), Dolphin
  // expands the service menu's Exec= (%F), Thunar substitutes uca.xml's <command> (%F) and
  // parses the line like sh. No display: the disposable's headless viewer reports.
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  const std::string home = work_ + "/home", folder = work_ + "/Downloads";
  std::filesystem::create_directories(home);
  std::filesystem::create_directories(folder);
  std::string env = "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=" + Quote(home) +
                    " ODYSSEY_CLI=" + Quote(ODYSSEY_CLI_PATH) + " ODYSSEY_SOCKET=" + Quote(d->socket()) +
                    " ODYSSEY_NO_AUTOSTART=1 ODYSSEY_HANDLERS_DIRS=" + Quote(work_ + "/rules") + " ";
  for (const char* v : {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"})
    if (const char* val = std::getenv(v)) env += std::string(v) + "=" + Quote(val) + " ";
  std::string out;
  // Through the CLI, as the user runs it (`odyssey integrate --user`).
  ASSERT_EQ(ht::RunShell(env + Quote(ODYSSEY_CLI_PATH) + " integrate --user", &out, true), 0) << out;
  EXPECT_NE(out.find("added Thunar custom actions"), std::string::npos) << out;
  const std::string nautilus = home + "/.local/share/nautilus/scripts/";
  const std::string dolphin = Slurp(home + "/.local/share/kio/servicemenus/odyssey-open.desktop");
  const std::string uca = Slurp(home + "/.config/Thunar/uca.xml");
  ASSERT_FALSE(dolphin.empty());
  ASSERT_FALSE(uca.empty());
  // Runs argv from the folder (every launcher here starts actions in the selection's folder).
  auto run = [&](const std::string& extra_env, const std::string& line) {
    std::string text;
    int rc = ht::RunShell("cd " + Quote(folder) + " && " + env + extra_env + " " + line, &text, true);
    return std::make_pair(rc, text);
  };
  auto opened = [&](const std::string& name, const std::pair<int, std::string>& r) {
    EXPECT_EQ(r.first, 0) << r.second << d->Log();
    EXPECT_NE(r.second.find("-> dispvm (rule --dispvm)"), std::string::npos) << r.second;
    EXPECT_NE(r.second.find("qubes.OpenInVM: received " + name + " ("), std::string::npos) << r.second;
    EXPECT_NE(r.second.find("Pages:"), std::string::npos) << r.second;  // pdfinfo in the disposable
  };

  // Open in Disposable VM, a name with a space and a quote.
  const std::string name = "my 'report'.pdf", path = folder + "/" + name;
  ht::WritePdf(path, 2);
  const std::string original = Slurp(path);
  const std::string sent = "my__report_.pdf";  // the name goes in sanitized (OpenInVmHeader)
  opened(sent, run("NAUTILUS_SCRIPT_SELECTED_FILE_PATHS=" + Quote(path + "\n") +
                       " NAUTILUS_SCRIPT_SELECTED_URIS=" + Quote("file://" + folder + "/my%20%27report%27.pdf\n") +
                       " NAUTILUS_SCRIPT_CURRENT_URI=" + Quote("file://" + folder),
                   ShellLine({nautilus + "Open in Disposable VM", name})));
  // A folder Nautilus cannot name as paths on the command line: only the variable.
  opened(sent, run("NAUTILUS_SCRIPT_SELECTED_FILE_PATHS=" + Quote(path + "\n"),
                   ShellLine({nautilus + "Open in Disposable VM"})));
  auto argv = ExpandDesktopExec(DesktopValue(dolphin, "Desktop Action OpenInDisposableVM", "Exec"), {path});
  ASSERT_EQ(argv.size(), 4u) << DesktopValue(dolphin, "Desktop Action OpenInDisposableVM", "Exec");
  opened(sent, run("", ShellLine(argv)));
  opened(sent, run("", ThunarCommandLine(ThunarCommand(uca, "odyssey-open-in-disposable-vm"), {path})));
  EXPECT_EQ(Slurp(path), original);  // viewed, not changed: nothing written back

  // Convert to Trusted PDF/PNG: rendered in a disposable, rebuilt beside the original.
  auto converted = [&](const std::string& file, const std::string& trusted, const std::pair<int, std::string>& r) {
    EXPECT_EQ(r.first, 0) << r.second << d->Log();
    EXPECT_TRUE(std::filesystem::exists(folder + "/" + trusted)) << r.second;
    EXPECT_FALSE(std::filesystem::exists(folder + "/" + file)) << r.second;
    EXPECT_TRUE(std::filesystem::exists(home + "/.local/share/odyssey/quarantine/" + file)) << r.second;
  };
  ht::WritePdf(folder + "/scan.pdf", 1);
  converted("scan.pdf", "scan.trusted.pdf",
            run("", ShellLine({nautilus + "Convert to Trusted PDF or PNG", "scan.pdf"})));
  ht::WritePdf(folder + "/letter.pdf", 1);
  converted("letter.pdf", "letter.trusted.pdf",
            run("", ShellLine(ExpandDesktopExec(DesktopValue(dolphin, "Desktop Action ConvertToTrusted", "Exec"),
                                                {folder + "/letter.pdf"}))));
  ht::WritePng(folder + "/photo.png", 32, 24);
  converted("photo.png", "photo.trusted.png",
            run("", ThunarCommandLine(ThunarCommand(uca, "odyssey-convert-to-trusted"), {folder + "/photo.png"})));

  // Every one of them went through odysseyd into a disposable, and each was destroyed.
  auto calls = d->Client().Request({{"op", "calls"}, {"limit", 50}});
  ASSERT_TRUE(calls.ok());
  int open_calls = 0, render_calls = 0;
  for (auto& c : (*calls)["calls"]) {
    std::string what = c.value("what", ""), domain = c.value("domain", "");
    EXPECT_EQ(domain.rfind("disp", 0), 0u) << domain;
    open_calls += what.rfind("qubes.OpenInVM", 0) == 0;
    render_calls += what.rfind("odyssey.Render", 0) == 0;
  }
  EXPECT_EQ(open_calls, 4);
  EXPECT_EQ(render_calls, 3);
  EXPECT_EQ(Running(*d), 0);

  // `odyssey integrate --user --remove` takes every action away again.
  ASSERT_EQ(ht::RunShell(env + Quote(ODYSSEY_CLI_PATH) + " integrate --user --remove", &out, true), 0) << out;
  EXPECT_FALSE(std::filesystem::exists(home + "/.local/share/kio/servicemenus/odyssey-open.desktop"));
  EXPECT_FALSE(std::filesystem::exists(nautilus + "Open in Disposable VM"));
}

TEST_F(EngineOpenTest, OpenRoutesPdfAndUrlIntoDisposables) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  // A real PDF whose name lies about its type: the content decides.
  std::string pdf = work_ + "/paper.txt";
  ht::WritePdf(pdf, 2);
  std::string before = Slurp(pdf);
  auto r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.err.find("-> dispvm (rule 50-default.rules (built-in):"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("content is application/pdf"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("qubes.OpenInVM: received paper.txt (" + std::to_string(before.size()) + " bytes)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Pages:"), std::string::npos) << r.err;  // pdfinfo ran in the disposable
  EXPECT_EQ(Slurp(pdf), before);
  r = Cli(*d, {"open", "--view-only", pdf});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("received paper.txt"), std::string::npos) << r.err;

  r = Cli(*d, {"open", "https://example.org/from-odyssey-open"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("https://example.org/from-odyssey-open -> dispvm (rule 50-default.rules"),
            std::string::npos) << r.err;
  EXPECT_NE(r.out.find("qubes.OpenURL in disp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("would open https://example.org/from-odyssey-open"), std::string::npos) << r.out;
  r = Cli(*d, {"open", "javascript://alert(1)"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  r = Cli(*d, {"open", work_ + "/missing.pdf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open " + work_ + "/missing.pdf"), std::string::npos) << r.err;
  // --dispvm skips the rules; a template that does not exist is the daemon's error.
  r = Cli(*d, {"open", "--dispvm", "nosuch", pdf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, DenyRuleAndRouteNameTheRuleFileLine) {
  std::string rules = work_ + "/rules/10-local.rules";
  Write(rules, "# test rules\nmime application/pdf deny\nurl https://*.evil.example deny\n"
               "url https://docs.example.org/private dispvm:host view-only\n"
               "mime image/png convert:image\n");
  std::string pdf = work_ + "/report.pdf";
  ht::WritePdf(pdf, 1);
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("refused: " + pdf + " (rule " + rules + ":2: mime application/pdf deny)"),
            std::string::npos) << r.err;
  r = Cli(*d, {"open", "https://www.evil.example/x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("(rule " + rules + ":3"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(pdf));

  r = Cli(*d, {"route", pdf, "https://docs.example.org/private/a", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("type:   application/pdf (from content)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   " + rules + ":2: mime application/pdf deny"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   " + rules + ":4: url https://docs.example.org/private dispvm:host view-only"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("action: dispvm:host"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   50-default.rules (built-in):"), std::string::npos) << r.out;
  r = Cli(*d, {"route", "--short", pdf});
  EXPECT_EQ(r.out, "deny\t" + rules + ":2\n");
  r = Cli(*d, {"route", "--list"});
  EXPECT_EQ(r.out.rfind(rules + ":2\tmime application/pdf deny\n", 0), 0u) << r.out;
  // A syntax error names file:line and the token; nothing is opened.
  Write(work_ + "/rules/20-bad.rules", "mime text/plain sideways\n");
  r = Cli(*d, {"route", pdf});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("20-bad.rules:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sideways"), std::string::npos) << r.err;
  r = Cli(*d, {"open", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("20-bad.rules:1"), std::string::npos) << r.err;
}

TEST_F(EngineOpenTest, ConvertPdfAndPngThroughEngineDisposables) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  std::string pdf = work_ + "/doc.pdf";
  ht::WritePdf(pdf, 3, 300, 200);
  std::string original = Slurp(pdf);
  auto r = Cli(*d, {"convert", pdf});
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, work_ + "/doc.trusted.pdf\n");
  EXPECT_NE(r.err.find("page 3/3 (417x278)"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(pdf));
  EXPECT_EQ(Slurp(work_ + "/data/odyssey/quarantine/doc.pdf"), original);
  std::string info;
  ASSERT_EQ(ht::RunShell("pdfinfo '" + work_ + "/doc.trusted.pdf'", &info), 0);
  std::string pages_line = info.substr(info.find("Pages:"), info.find('\n', info.find("Pages:")) - info.find("Pages:"));
  EXPECT_EQ(pages_line.substr(pages_line.find_last_of(' ') + 1), "3") << info;

  std::string png = work_ + "/picture.png";
  ht::WritePng(png, 64, 48);
  r = Cli(*d, {"convert", png});  // an image by content: a trusted PNG
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, work_ + "/picture.trusted.png\n");
  EXPECT_EQ(PngSize(Slurp(work_ + "/picture.trusted.png")), (std::pair<uint32_t, uint32_t>{64, 48}));
  EXPECT_TRUE(std::filesystem::exists(work_ + "/data/odyssey/quarantine/picture.png"));

  // A convert:pdf rule makes `odyssey open` convert.
  Write(work_ + "/rules/10.rules", "mime application/pdf convert:pdf\n");
  ht::WritePdf(work_ + "/second.pdf", 1);
  r = Cli(*d, {"open", work_ + "/second.pdf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(work_ + "/second.trusted.pdf"));
  EXPECT_TRUE(std::filesystem::exists(work_ + "/data/odyssey/quarantine/second.pdf"));

  // handlers' ExecRunner (odyssey-convert's default) through the real `odyssey call`.
  ht::WritePdf(work_ + "/third.pdf", 2);
  std::string runner = std::string(ODYSSEY_CLI_PATH) + " --no-autostart --socket " + d->socket() + " call";
  auto c = RunProgram({ODYSSEY_CONVERT_PATH, "--runner", runner, "--quarantine", work_ + "/q",
                       work_ + "/third.pdf"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, work_ + "/third.trusted.pdf\n");
  EXPECT_TRUE(std::filesystem::exists(work_ + "/q/third.pdf"));
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, HostileRendererIsAClearErrorAndChangesNothing) {
  std::string svc = work_ + "/hostile";
  std::filesystem::create_directories(svc);
  ::chmod(svc.c_str(), 0755);
  // Claims one 4x4 page but sends the pixels of a 4x2 one, then stops: lying dimensions.
  Write(svc + "/odyssey.RenderPDF",
        "#!/bin/sh\ncat >/dev/null\nprintf '1\\n4 4\\n'\nhead -c 24 /dev/zero\n", 0755);
  // Claims a page far beyond the caps, then streams forever: the host must hang up and the
  // engine must abandon the call rather than drain the stream for ever.
  Write(svc + "/odyssey.RenderImage",
        "#!/bin/sh\ncat >/dev/null\nprintf '1\\n4000000000 4000000000\\n'\nexec cat /dev/zero\n", 0755);
  auto d = Daemon(svc);
  ASSERT_TRUE(d->Start()) << d->Log();
  std::string pdf = work_ + "/doc.pdf";
  ht::WritePdf(pdf, 1);
  std::string original = Slurp(pdf);
  auto r = Cli(*d, {"convert", pdf});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("odyssey convert: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("page 1"), std::string::npos) << r.err;
  EXPECT_EQ(Slurp(pdf), original);
  EXPECT_FALSE(std::filesystem::exists(work_ + "/doc.trusted.pdf"));
  EXPECT_FALSE(std::filesystem::exists(work_ + "/data/odyssey/quarantine"));

  std::string png = work_ + "/img.png";
  ht::WritePng(png, 8, 8);
  r = Cli(*d, {"convert", png});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("4000000000"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(png));
  EXPECT_FALSE(std::filesystem::exists(work_ + "/img.trusted.png"));
  // The daemon is unaffected and every disposable is gone.
  EXPECT_EQ(Cli(*d, {"ping"}).exit_code, 0);
  EXPECT_EQ(Running(*d), 0);
}

}  // namespace
}  // namespace odyssey::engine::testing
