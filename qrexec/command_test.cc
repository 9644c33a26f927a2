// SpawnCommand against /bin/sh -c: for a table of commands, plain ones (exec'd directly)
// and ones that must still go through the shell, the exit code, stdout and stderr must be
// the same as /bin/sh -c gives.
#include "qrexec/command.h"

#include <fcntl.h>
#include <signal.h>
#include <climits>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>


namespace odyssey::qrexec {
namespace {

struct Outcome {
  int code = -1;
  std::string out, err;
};

std::string ReadAllFd(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

// Lines sorted: dash exports its variables in its own order.
std::string SortedLines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (auto& l : lines) out += l + "\n";
  return out;
}

Outcome RunOnce(const std::string& command, const std::vector<std::string>& env, bool via_shell) {
  int out[2], err[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
  SpawnSpec spec;
  spec.env = env;
  spec.stdout_fd = out[1];
  spec.stderr_fd = err[1];
  Result<pid_t> pid = Error{"", 0};
  if (via_shell) {
    spec.argv = {"/bin/sh", "-c", command};
    pid = Spawn(spec, nullptr);
  } else {
    pid = SpawnCommand(spec, command, nullptr);
  }
  ::close(out[1]);
  ::close(err[1]);
  Outcome o;
  o.out = SortedLines(ReadAllFd(out[0]));
  o.err = ReadAllFd(err[0]);
  ::close(out[0]);
  ::close(err[0]);
  if (!pid.ok()) {
    ADD_FAILURE() << command << ": " << pid.error().message;
    return o;
  }
  int st = 0;
  EXPECT_EQ(::waitpid(*pid, &st, 0), *pid);
  o.code = ExitCodeFromStatus(st);
  return o;
}

class CommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qrexec-command-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (auto d : {"/a", "/b", "/dir"}) ::mkdir((root_ + d).c_str(), 0755);
    Write("/a/qxfoo", "#!/bin/sh\necho A \"$@\"\n", 0644);  // not executable: skipped by sh
    Write("/b/qxfoo", "#!/bin/sh\necho B \"$@\"\n", 0755);
    Write("/b/noshebang", "echo no shebang $0 \"$@\"\n", 0755);  // ENOEXEC: sh runs it
    Write("/b/badinterp", "#!/nonexistent/interp\n", 0755);
    Write("/b/printer", "#!/bin/sh\nprintf '%s|' \"$0\" \"$@\"; echo; echo err >&2; exit 3\n", 0755);
    ::mkdir((root_ + "/b/adir").c_str(), 0755);
    for (char** e = environ; *e; ++e) base_env_.push_back(*e);
  }
  void TearDown() override { (void)!std::system(("rm -rf " + root_).c_str()); }
  void Write(const std::string& rel, const std::string& text, mode_t mode) {
    std::ofstream(root_ + rel) << text;
    ::chmod((root_ + rel).c_str(), mode);
  }
  std::vector<std::string> EnvWith(const std::vector<std::string>& set,
                                   const std::vector<std::string>& drop = {}) {
    std::vector<std::string> env;
    for (auto& kv : base_env_) {
      std::string name = kv.substr(0, kv.find('='));
      bool skip = std::find(drop.begin(), drop.end(), name) != drop.end();
      for (auto& s : set) skip = skip || s.substr(0, s.find('=')) == name;
      if (!skip) env.push_back(kv);
    }
    env.insert(env.end(), set.begin(), set.end());
    return env;
  }
  // Same exit code, stdout and stderr as /bin/sh -c.
  void ExpectSameAsShell(const std::string& command, const std::vector<std::string>& env) {
    Outcome direct = RunOnce(command, env, false);
    Outcome shell = RunOnce(command, env, true);
    EXPECT_EQ(direct.code, shell.code) << command;
    EXPECT_EQ(direct.out, shell.out) << command;
    EXPECT_EQ(direct.err, shell.err) << command;
  }
  std::string root_;
  std::vector<std::string> base_env_;
};

TEST(PlainCommandWords, SplitsPlainCommands) {
  auto w = PlainCommandWords("/usr/bin/env -u X a=b c,d e+f g@h 50% x:y -- ./z");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(*w, (std::vector<std::string>{"/usr/bin/env", "-u", "X", "a=b", "c,d", "e+f", "g@h",
                                          "50%", "x:y", "--", "./z"}));
  EXPECT_TRUE(PlainCommandWords("ls").has_value());
}

TEST(PlainCommandWords, LeavesShellSyntaxToTheShell) {
  for (const char* c :
       {"", " ", "ls ", " ls", "ls  -l", "ls\t-l", "ls\n", "ls;ls", "ls | cat", "ls >x", "ls <x",
        "ls &", "ls && ls", "$HOME", "ls $X", "ls `x`", "ls 'a'", "ls \"a\"", "ls \\a", "ls *",
        "ls ?", "ls [a]", "ls ~", "ls {a,b}", "ls #c", "ls (a)", "ls !x", "A=1 ls", "=x",
        "echo hi", "true", "false", "exit 3", "cd /", "exec ls", "command ls", "test -d /",
        "[ -d / ]", ". x", ": x", "kill -0 1", "printf x", "pwd", "read x", "set -e", "type ls",
        "ulimit -n", "umask", "wait", "if", "then", "while", "for", "case", "!", "time ls",
        "source x", "let x", "local x", "export X", "eval ls", "trap x"}) {
    EXPECT_FALSE(PlainCommandWords(c).has_value()) << "'" << c << "'";
  }
}

TEST_F(CommandTest, PlanFindsWhatTheShellWouldRun) {
  auto env = EnvWith({"PATH=" + root_ + "/a:" + root_ + "/b:/usr/bin:/bin"});
  auto d = PlanDirectCommand("qxfoo x", env);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->path, root_ + "/a/qxfoo");  // regular file first; its exec fails, sh goes on
  EXPECT_EQ(d->argv, (std::vector<std::string>{"qxfoo", "x"}));
  d = PlanDirectCommand("uname -s", EnvWith({}, {"PATH"}));  // dash's default PATH
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->path == "/usr/bin/uname" || d->path == "/bin/uname") << d->path;
  EXPECT_FALSE(PlanDirectCommand("qx-no-such-command", env).has_value());
  EXPECT_FALSE(PlanDirectCommand("adir", env).has_value());  // a directory is not a command
  EXPECT_FALSE(PlanDirectCommand("uname", EnvWith({"PATH=/usr/bin%func:/bin"})).has_value());
  EXPECT_FALSE(PlanDirectCommand("uname", EnvWith({"A-B=1"})).has_value());  // dash drops it
  EXPECT_FALSE(PlanDirectCommand("uname", {"X=1", "X=2"}).has_value());
  EXPECT_FALSE(PlanDirectCommand("uname", {"NOEQUALS"}).has_value());
  EXPECT_FALSE(PlanDirectCommand("echo x", env).has_value());
}

TEST_F(CommandTest, PwdAsDashExportsIt) {
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  auto pwd_of = [](const DirectCommand& d) {
    for (auto& kv : d.env)
      if (kv.rfind("PWD=", 0) == 0) return kv.substr(4);
    return std::string("<none>");
  };
  auto d = PlanDirectCommand("/bin/pwd", EnvWith({}, {"PWD"}));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(pwd_of(*d), cwd);
  d = PlanDirectCommand("/bin/pwd", EnvWith({"PWD=" + root_}));  // not the current directory
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(pwd_of(*d), cwd);
  d = PlanDirectCommand("/bin/pwd", EnvWith({std::string("PWD=") + cwd + "/."}));  // same dir: kept
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(pwd_of(*d), std::string(cwd) + "/.");
}

TEST_F(CommandTest, SameResultAsShell) {
  auto env = EnvWith({"PATH=" + root_ + "/a:" + root_ + "/b:/usr/bin:/bin"});
  const std::string b = root_ + "/b";
  const std::vector<std::string> commands = {
      // plain: exec'd directly
      "env", "printenv PWD", "/usr/bin/env", "uname -s", "id -u", "/bin/echo a b=c d,e 50%",
      "cat /nonexistent/qx", "ls -d / /nonexistent/qx", "printer 1 2", b + "/printer a",
      "sh -c exit", "qxfoo x y",
      // plain, but the direct start fails and the shell reports it
      "qx-no-such-command", "/nonexistent/qx", "/etc/passwd", b + "/adir", "adir",
      "noshebang a", b + "/noshebang", "badinterp", b + "/badinterp x",
      // shell syntax: always the shell
      "echo hi", "true", "false", "exit 42", "printer a  b", "printer 'a b'", "printer $HOME",
      "printer *", "A=1 printer", "printer >/dev/null; echo $?", "printer | cat", "cd / && pwd",
      "env | grep -c PWD", "printenv PWD; pwd"};
  for (const auto& c : commands) ExpectSameAsShell(c, env);
  // The environment the shell would pass, in corner cases of PWD and PATH.
  ExpectSameAsShell("env", EnvWith({"PWD=" + root_}));
  ExpectSameAsShell("env", EnvWith({}, {"PWD", "PATH"}));
  ExpectSameAsShell("printenv PATH", EnvWith({"PATH=" + b}));
}

TEST_F(CommandTest, PlainCommandsSkipTheShell) {
  // SpawnCommand returns once the exec succeeded: the process is the program itself at
  // once (through a shell it would be /bin/sh first), with argv as typed.
  auto exe_and_cmdline = [](pid_t pid) {
    char exe[4096] = {};
    (void)!::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), exe, sizeof exe - 1);
    // The spawner is released (vfork) before the kernel has set the new argv up: an empty
    // cmdline means "not yet".
    std::string cmdline;
    for (int tries = 0; cmdline.empty() && tries < 5000; ++tries) {
      if (tries) ::usleep(1000);
      int fd = ::open(("/proc/" + std::to_string(pid) + "/cmdline").c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      cmdline = ReadAllFd(fd);
      ::close(fd);
    }
    return std::string(exe) + " " + cmdline;
  };
  char real_sleep[4096];
  ASSERT_NE(::realpath("/bin/sleep", real_sleep), nullptr);
  SpawnSpec spec;
  spec.env = EnvWith({});
  for (const std::string command : {"sleep 30", "/bin/sleep 30"}) {
    auto pid = SpawnCommand(spec, command, nullptr);
    ASSERT_TRUE(pid.ok()) << pid.error().message;
    std::string seen = exe_and_cmdline(*pid);
    ::kill(*pid, SIGKILL);
    int st = 0;
    ASSERT_EQ(::waitpid(*pid, &st, 0), *pid);
    std::string argv0 = command.substr(0, command.find(' '));
    EXPECT_EQ(seen, std::string(real_sleep) + " " + argv0 + std::string(1, '\0') + "30" +
                        std::string(1, '\0'));
  }
  // A command with shell syntax starts the shell.
  auto pid = SpawnCommand(spec, "sleep 30 </dev/null", nullptr);
  ASSERT_TRUE(pid.ok());
  std::string seen = exe_and_cmdline(*pid);
  ::kill(*pid, SIGKILL);
  int st = 0;
  (void)::waitpid(*pid, &st, 0);
  char real_sh[4096];
  ASSERT_NE(::realpath("/bin/sh", real_sh), nullptr);
  EXPECT_EQ(seen.substr(0, seen.find(' ')), real_sh);
}

}  // namespace
}  // namespace odyssey::qrexec
