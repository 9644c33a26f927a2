// End-to-end qrexec: real agent, daemon and clients as separate processes over the socket
// vchan, each test in its own temp dir. Readiness is awaited, never timed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "qrexec/host/agent_connection.h"
#include "qrexec/transport.h"
#include "qrexec/util.h"
#include "tests/qrexec/test_env.h"

namespace odyssey::qrexec {
namespace {

using testing::Fnv1a;
using testing::ProcResult;
using testing::QrexecEnv;
using testing::ReadFile;

constexpr int kDom = 5;
const char kName[] = "work";

class QrexecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    env_.WriteService(env_.rpc_dir(kDom), "test.VMShell", "#!/bin/sh\nexec /bin/sh\n");
    env_.WriteService(env_.rpc_dir(kDom), "test.Cat", "#!/bin/sh\nexec cat\n");
    env_.WriteService(env_.rpc_dir(kDom), "test.Env",
                      "#!/bin/sh\necho \"$QREXEC_REMOTE_DOMAIN|$QREXEC_SERVICE_FULL_NAME|"
                      "$QREXEC_SERVICE_ARGUMENT|$1|$QREXEC_REQUESTED_TARGET\"\n");
    env_.WriteService(env_.rpc_dir(kDom), "test.Exit", "#!/bin/sh\nexit \"$1\"\n");
    env_.WriteFile(env_.rpc_dir(kDom) + "/test.NotExec", "#!/bin/sh\necho no\n", 0644);
  }

  void StartDomain(const std::vector<std::string>& daemon_extra = {}) {
    agent_ = env_.StartAgent(kDom);
    daemon_ = env_.StartDaemon(kDom, kName, daemon_extra);
    ASSERT_TRUE(env_.Alive(daemon_)) << ReadFile(env_.root() + "/daemon5.log");
  }

  ProcResult Client(const std::string& cmd, const std::string& input = "") {
    return env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", kName, cmd},
                    input, env_.DomainEnv(0));
  }

  AgentConnectionPtr Connect(int domid = kDom) {
    AgentConnectionOptions o;
    o.domid = domid;
    o.domain_name = kName;
    o.socket_dir = env_.vchan_dir();
    o.connect_timeout = std::nullopt;
    auto c = AgentConnection::Connect(o);
    EXPECT_TRUE(c.ok()) << c.error().message;
    return c.ok() ? std::move(c.value()) : nullptr;
  }

  QrexecEnv env_;
  pid_t agent_ = -1, daemon_ = -1;
};

// Calls through AgentConnection with input from a string; returns exit code and stdout.
struct CallOut {
  int code = -1;
  std::string out, err;
  std::string error;
};

CallOut DirectCall(AgentConnection& c, const std::string& cmd, const std::string& input) {
  CallOut r;
  int in[2], out[2], err[2];
  EXPECT_EQ(::pipe(in), 0);
  EXPECT_EQ(::pipe(out), 0);
  EXPECT_EQ(::pipe(err), 0);
  std::thread writer([&] {
    (void)WriteAll(in[1], input.data(), input.size());
    ::close(in[1]);
  });
  std::string collected_err;
  std::thread err_reader([&] {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(err[0], buf, sizeof buf)) > 0) collected_err.append(buf, static_cast<size_t>(n));
  });
  std::thread out_reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  });
  CallRequest req;
  req.cmdline = cmd;
  req.stdin_fd = in[0];
  req.stdout_fd = out[1];
  req.stderr_fd = err[1];
  auto code = c.Call(req);
  ::close(out[1]);
  ::close(err[1]);
  writer.join();
  out_reader.join();
  err_reader.join();
  ::close(in[0]);
  ::close(out[0]);
  ::close(err[0]);
  r.err = collected_err;
  if (code.ok()) r.code = *code;
  else r.error = code.error().message;
  return r;
}

TEST_F(QrexecTest, VMShellStreamsStdoutStderrAndExitCode) {
  StartDomain();
  auto r = Client("DEFAULT:QUBESRPC test.VMShell+ dom0", "echo hello; echo oops >&2; exit 3\n");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_EQ(r.err, "oops\n");
}

TEST_F(QrexecTest, ExitCodesPropagate) {
  StartDomain();
  EXPECT_EQ(Client("user:exit 0").exit_code, 0);
  EXPECT_EQ(Client("user:exit 1").exit_code, 1);
  EXPECT_EQ(Client("user:exit 42").exit_code, 42);
  EXPECT_EQ(Client("DEFAULT:QUBESRPC test.Exit+7 dom0").exit_code, 7);
  auto nf = Client("DEFAULT:QUBESRPC test.Missing+ dom0");
  EXPECT_EQ(nf.exit_code, 127);
  EXPECT_NE(nf.err.find("not found"), std::string::npos) << nf.err;
  EXPECT_EQ(Client("DEFAULT:QUBESRPC test.NotExec+ dom0").exit_code, 126);
  auto bad = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", "nosuch",
                       "user:true"}, "", env_.DomainEnv(0));
  EXPECT_EQ(bad.exit_code, 125);
  EXPECT_NE(bad.err.find("nosuch"), std::string::npos) << bad.err;
}

// A plain USER:COMMAND (no shell syntax) is exec'd by the agent without /bin/sh: same
// output, exit codes and errors as through the shell. The program's parent is the agent
// itself (through sh -c, dash would vfork the program as its own child).
TEST_F(QrexecTest, PlainCommandsRunWithoutShellSameResults) {
  StartDomain();
  auto echo = Client("user:/bin/echo a b=c 50%");
  EXPECT_EQ(echo.exit_code, 0) << echo.err;
  EXPECT_EQ(echo.out, "a b=c 50%\n");
  auto parent = Client("user:cat /proc/self/stat");
  auto agent_pid = Client("user:echo $PPID");  // through the shell: the shell's parent
  ASSERT_EQ(parent.exit_code, 0) << parent.err;
  std::istringstream fields(parent.out);
  std::string pid, comm, state, ppid;
  fields >> pid >> comm >> state >> ppid;
  EXPECT_EQ(comm, "(cat)");
  EXPECT_EQ(ppid + "\n", agent_pid.out);
  auto pwd_direct = Client("user:printenv PWD");
  auto pwd_shell = Client("user:printenv PWD;");
  EXPECT_EQ(pwd_direct.out, pwd_shell.out);
  EXPECT_FALSE(pwd_direct.out.empty());
  auto missing = Client("user:qx-no-such-command-42 x");
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_EQ(missing.err, "/bin/sh: 1: qx-no-such-command-42: not found\n");
  auto not_exec = Client("user:/etc/passwd");
  EXPECT_EQ(not_exec.exit_code, 126);
  EXPECT_EQ(not_exec.err, "/bin/sh: 1: /etc/passwd: Permission denied\n");
  EXPECT_EQ(Client("user:ls -d /nonexistent/qx").exit_code, 2);
}

// qrexec-client parses its command line with getopt_long (start-up cost): the flags Qubes'
// callers use keep working, and usage errors exit 2 naming the problem.
TEST_F(QrexecTest, ClientCommandLine) {
  StartDomain();
  std::string bin = env_.Bin("qrexec-client");
  auto help = env_.Run({bin, "--help"}, "");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--connect-existing"), std::string::npos) << help.out;
  // Qubes' compatibility flags are accepted, long options with '=' or a separate value, an
  // option after the command, and QREXEC_SOCKET_DIR instead of --socket-dir.
  auto ok = env_.Run({bin, "-t", "-T", "-p", "-w", "10", "--domain=" + std::string(kName), "user:echo ok",
                      "--socket-dir", env_.socket_dir()},
                     "", env_.DomainEnv(0));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "ok\n");
  auto env = env_.DomainEnv(0);
  env["QREXEC_SOCKET_DIR"] = env_.socket_dir();
  auto via_env = env_.Run({bin, "-d", kName, "user:exit 5"}, "", env);
  EXPECT_EQ(via_env.exit_code, 5) << via_env.err;
  struct Bad {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Bad& b : std::vector<Bad>{{{"user:true"}, "-d,--domain is required"},
                                       {{"-d", kName}, "command is required"},
                                       {{"-d", kName, "user:true", "extra"}, "unexpected argument 'extra'"},
                                       {{"-d", kName, "--bogus", "user:true"}, "unknown option --bogus"},
                                       {{"-d", kName, "-x", "user:true"}, "unknown option -x"},
                                       {{"user:true", "-d"}, "option -d needs a value"}}) {
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), b.args.begin(), b.args.end());
    auto r = env_.Run(argv, "", env_.DomainEnv(0));
    EXPECT_EQ(r.exit_code, 2) << b.message;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << r.err;
  }
}

TEST_F(QrexecTest, JustExecAndLocalProgram) {
  StartDomain();
  std::string marker = env_.root() + "/just-exec-ran";
  auto r = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", kName, "-e",
                     "user:echo ignored; touch " + marker},
                    "", env_.DomainEnv(0));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");  // stdio of a just-exec'd command is /dev/null
  for (int i = 0; i < 3000 && ::access(marker.c_str(), F_OK) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(::access(marker.c_str(), F_OK), 0);
  // -l: the remote's stdout feeds a local program, whose stdout feeds the remote's stdin.
  std::string local_out = env_.root() + "/local.out";
  r = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", kName, "-l",
                "cat > " + local_out, "DEFAULT:QUBESRPC test.Env+a dom0"},
               "", env_.DomainEnv(0));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadFile(local_out), "dom0|test.Env+a|a|a|\n");
}

TEST_F(QrexecTest, ServiceEnvironmentAndArgument) {
  StartDomain();
  auto r = Client("DEFAULT:QUBESRPC test.Env+arg1 dom0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "dom0|test.Env+arg1|arg1|arg1|\n");
}

TEST_F(QrexecTest, OdysseyRpcDirTakesPrecedence) {
  env_.WriteService(env_.rpc_dir(kDom), "test.Which", "#!/bin/sh\necho qubes\n");
  env_.WriteService(env_.odyssey_dir(kDom), "test.Which", "#!/bin/sh\necho odyssey\n");
  StartDomain();
  EXPECT_EQ(Client("DEFAULT:QUBESRPC test.Which+ dom0").out, "odyssey\n");
  // SERVICE+ARG in a later directory beats SERVICE in an earlier one.
  env_.WriteService(env_.rpc_dir(kDom), "test.Which+x", "#!/bin/sh\necho qubes-arg\n");
  EXPECT_EQ(Client("DEFAULT:QUBESRPC test.Which+x dom0").out, "qubes-arg\n");
}

TEST_F(QrexecTest, SocketService) {
  ::mkdir(env_.odyssey_dir(kDom).c_str(), 0755);
  std::string path = env_.odyssey_dir(kDom) + "/test.Sock";
  auto l = ListenUnix(path, 0666);
  ASSERT_TRUE(l.ok()) << l.error().message;
  std::string descriptor;
  std::thread server([&] {
    int c = ::accept(l->get(), nullptr, nullptr);
    ASSERT_GE(c, 0);
    char ch;
    while (::read(c, &ch, 1) == 1 && ch != '\0') descriptor.push_back(ch);
    std::string data;
    char buf[1024];
    ssize_t n;
    while ((n = ::read(c, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    for (auto& x : data) x = static_cast<char>(std::toupper(static_cast<unsigned char>(x)));
    (void)WriteAll(c, data.data(), data.size());
    ::close(c);
  });
  StartDomain();
  auto r = Client("DEFAULT:QUBESRPC test.Sock+arg dom0", "hello socket\n");
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "HELLO SOCKET\n");
  EXPECT_EQ(descriptor, "test.Sock+arg dom0");
}

// rpc-config exit-on-client-eof=true: the caller's EOF ends the call even though the socket
// service never closes its end (without it this call would wait forever).
TEST_F(QrexecTest, ExitOnClientEofEndsTheCall) {
  ::mkdir(env_.odyssey_dir(kDom).c_str(), 0755);
  std::string cfg = env_.root() + "/cfg" + std::to_string(kDom);
  ::mkdir(cfg.c_str(), 0755);
  env_.WriteFile(cfg + "/test.Hold", "exit-on-client-eof = true\nskip-service-descriptor=true\n");
  std::string path = env_.odyssey_dir(kDom) + "/test.Hold";
  auto l = ListenUnix(path, 0666);
  ASSERT_TRUE(l.ok()) << l.error().message;
  std::string got;
  std::thread server([&] {
    UniqueFd c(::accept(l->get(), nullptr, nullptr));
    ASSERT_TRUE(c.valid());
    (void)WriteAll(c.get(), "ready\n", 6);
    char buf[256];
    ssize_t n;
    // Reads to EOF (the agent closes the socket at the caller's EOF), never closes first.
    while ((n = ::read(c.get(), buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  });
  StartDomain();
  auto r = Client("DEFAULT:QUBESRPC test.Hold+ dom0", "client data\n");
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(got, "client data\n");
  EXPECT_EQ(r.out.substr(0, 6), r.out.empty() ? "" : "ready\n");
}

// A root agent (without QREXEC_NO_ROOT) runs USER:COMMAND as USER: setgroups/setgid/setuid of
// that account, HOME/USER/LOGNAME set; an unknown user is refused with 126 and a message.
TEST_F(QrexecTest, RootAgentSwitchesToRequestedUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: a non-root agent runs commands as itself";
  if (!LookUpUser("nobody").ok()) GTEST_SKIP() << "no user 'nobody' here";
  env_.agent_env["QREXEC_NO_ROOT"] = "";
  StartDomain();
  auto r = Client("nobody:id -u; id -g; id -G; echo $USER $LOGNAME $HOME; pwd");
  auto nobody = LookUpUser("nobody");
  std::string dir = ::access(nobody->home.c_str(), X_OK) == 0 ? nobody->home : "/";
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string want = std::to_string(nobody->uid) + "\n" + std::to_string(nobody->gid) + "\n";
  EXPECT_EQ(r.out.substr(0, want.size()), want) << r.out;
  EXPECT_NE(r.out.find("nobody nobody " + nobody->home + "\n" + dir + "\n"), std::string::npos) << r.out;
  // Supplementary groups are the user's, not root's.
  EXPECT_EQ(r.out.find("\n0\n", want.size() - 1), std::string::npos) << r.out;
  r = Client("root:id -u");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "0\n");
  r = Client("nosuchuser42:true");
  EXPECT_EQ(r.exit_code, 126);
  EXPECT_NE(r.err.find("nosuchuser42"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_TRUE(env_.Alive(daemon_));
}

TEST_F(QrexecTest, HundredMegabytesEachWay) {
  StartDomain();
  std::string data(100u << 20, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  std::string in = env_.root() + "/big.in", out = env_.root() + "/big.out";
  env_.WriteFile(in, data);
  auto r = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", kName,
                     "DEFAULT:QUBESRPC test.Cat+ dom0"},
                    "", env_.DomainEnv(0), in, out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string got = ReadFile(out);
  EXPECT_EQ(got.size(), data.size());
  EXPECT_EQ(Fnv1a(got), Fnv1a(data));
}

TEST_F(QrexecTest, SixtyFourConcurrentClients) {
  StartDomain();
  constexpr int kN = 64;
  std::vector<pid_t> pids;
  for (int i = 0; i < kN; ++i) {
    std::string base = env_.root() + "/c" + std::to_string(i);
    env_.WriteFile(base + ".in", "payload " + std::to_string(i) + "\n" + std::string(10000 + i, 'x'));
    pids.push_back(env_.Spawn({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d",
                               kName, "DEFAULT:QUBESRPC test.Cat+ dom0"},
                              env_.DomainEnv(0), base + ".in", base + ".out", base + ".err"));
  }
  for (int i = 0; i < kN; ++i) {
    std::string base = env_.root() + "/c" + std::to_string(i);
    EXPECT_EQ(env_.Wait(pids[i]), 0) << ReadFile(base + ".err");
    EXPECT_EQ(ReadFile(base + ".out"), ReadFile(base + ".in"));
  }
}

TEST_F(QrexecTest, AgentConnectionDirectCallsConcurrently) {
  agent_ = env_.StartAgent(kDom);
  auto conn = Connect();
  ASSERT_TRUE(conn);
  EXPECT_GE(conn->protocol_version(), 3u);
  auto one = DirectCall(*conn, "DEFAULT:QUBESRPC test.VMShell+ dom0", "echo hi; echo e >&2; exit 42");
  EXPECT_EQ(one.code, 42) << one.error;
  EXPECT_EQ(one.out, "hi\n");
  EXPECT_EQ(one.err, "e\n");
  constexpr int kN = 64;
  std::vector<CallOut> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i)
    threads.emplace_back([&, i] {
      results[i] = DirectCall(*conn, "DEFAULT:QUBESRPC test.Cat+ dom0", "call " + std::to_string(i));
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(results[i].code, 0) << results[i].error;
    EXPECT_EQ(results[i].out, "call " + std::to_string(i));
  }
  // More calls than data ports, sequentially: ports are freed by CONNECTION_TERMINATED.
  for (int i = 0; i < 300; ++i) {
    CallRequest req;
    req.cmdline = "user:true";
    auto code = conn->Call(req);
    ASSERT_TRUE(code.ok()) << code.error().message;
    ASSERT_EQ(*code, 0);
  }
}

TEST_F(QrexecTest, ConnectionSurvivesFrozenDomain) {
  agent_ = env_.StartAgent(kDom);
  auto conn = Connect();
  ASSERT_TRUE(conn);
  ASSERT_EQ(::kill(agent_, SIGSTOP), 0);  // the engine freezes pool members after HELLO
  std::atomic<bool> done{false};
  CallOut r;
  std::thread t([&] {
    r = DirectCall(*conn, "DEFAULT:QUBESRPC test.Cat+ dom0", "after thaw");
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(done.load());  // cannot complete while frozen (not a timing assertion on success)
  ASSERT_EQ(::kill(agent_, SIGCONT), 0);
  t.join();
  EXPECT_EQ(r.code, 0) << r.error;
  EXPECT_EQ(r.out, "after thaw");
}

TEST_F(QrexecTest, AgentKilledMidCallClientFailsDaemonSurvives) {
  StartDomain();
  // A call that waits on stdin we never close.
  int in[2];
  ASSERT_EQ(::pipe(in), 0);
  std::string fifo_in = env_.root() + "/held.in";
  ASSERT_EQ(::mkfifo(fifo_in.c_str(), 0600), 0);
  pid_t client = env_.Spawn({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", kName,
                             "DEFAULT:QUBESRPC test.Cat+ dom0"},
                            env_.DomainEnv(0), fifo_in, env_.root() + "/held.out", env_.root() + "/held.err");
  int w = ::open(fifo_in.c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  ASSERT_TRUE(WriteAll(w, "ping\n", 5).ok());
  // Wait until the call is established: cat echoed our line.
  for (int i = 0; i < 3000 && ReadFile(env_.root() + "/held.out").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(ReadFile(env_.root() + "/held.out"), "ping\n");
  env_.Kill(agent_);
  int code = env_.Wait(client);
  ::close(w);
  EXPECT_EQ(code, 125);
  EXPECT_NE(ReadFile(env_.root() + "/held.err").find("failed"), std::string::npos);
  EXPECT_TRUE(env_.Alive(daemon_));
  // A new agent (restart or restored snapshot): the daemon reconnects and serves again.
  agent_ = env_.StartAgent(kDom);
  ProcResult r;
  for (int i = 0; i < 300; ++i) {
    r = Client("user:echo back");
    if (r.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "back\n");
}

// ---- hostile agent ---------------------------------------------------------------------

// A fake agent for domain `domid`: serves one control connection with HELLO then `garbage`.
void FakeAgentOnce(const std::string& vchan_dir, int domid, const std::string& garbage) {
  vchan::Options o;
  o.socket_dir = vchan_dir;
  o.own_domain = domid;
  auto v = vchan::Vchan::Server(0, kControlPort, o);
  ASSERT_TRUE(v.ok());
  auto s = StreamFromVchan(std::move(v.value()));
  auto ver = Handshake(*s, Channel::kControlFromDaemon, kProtocolVersion, true);
  if (!ver.ok()) return;
  (void)s->Send(garbage);
  if (garbage.size() < sizeof(MsgHeader)) return;  // truncated: hang up
  // Wait for the daemon to drop us (it must), then return.
  for (;;) {
    auto m = s->Recv(Channel::kControlFromDaemon, *ver);
    if (!m.ok()) return;
  }
}

std::vector<std::string> GarbageMessages() {
  std::vector<std::string> g;
  g.push_back(EncodeHeader(0x999, 0));                                  // unknown type
  g.push_back(EncodeHeader(MSG_TRIGGER_SERVICE3, 0x7fffffff));          // oversized
  g.push_back(EncodeHeader(MSG_DATA_STDOUT, 4) + "abcd");              // data on control
  g.push_back(EncodeHello(4));                                          // second HELLO
  g.push_back(EncodeHeader(MSG_CONNECTION_TERMINATED, 9) + std::string(9, 'x'));  // bad size
  std::string t3 = EncodeMessage(MSG_TRIGGER_SERVICE3, std::string(96, 'A') + "svc");  // no NULs
  g.push_back(t3);
  g.push_back(std::string("\x01\x02\x03", 3));                          // truncated header
  return g;
}

TEST_F(QrexecTest, HostileAgentNeverCrashesDaemon) {
  constexpr int kBad = 9;
  auto garbage = GarbageMessages();
  std::thread fake([&] {
    for (const auto& g : garbage) FakeAgentOnce(env_.vchan_dir(), kBad, g);
  });
  pid_t d = env_.StartDaemon(kBad, "evil");
  fake.join();
  EXPECT_TRUE(env_.Alive(d)) << ReadFile(env_.root() + "/daemon9.log");
  // A good trigger with an unparseable ident is refused and logged, not fatal.
  std::string log = ReadFile(env_.root() + "/daemon9.log");
  EXPECT_NE(log.find("qrexec protocol"), std::string::npos) << log;
  // The same daemon still serves a real agent afterwards.
  env_.WriteService(env_.rpc_dir(kBad), "test.Cat", "#!/bin/sh\nexec cat\n");
  pid_t a = env_.StartAgent(kBad);
  ProcResult r;
  for (int i = 0; i < 300; ++i) {
    r = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", "evil",
                  "DEFAULT:QUBESRPC test.Cat+ dom0"}, "still alive", env_.DomainEnv(0));
    if (r.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(r.out, "still alive");
  env_.Kill(a);
  EXPECT_TRUE(env_.Alive(d));
}

TEST_F(QrexecTest, HostileAgentFailsAgentConnectionCleanly) {
  constexpr int kBad = 11;
  for (const auto& g : GarbageMessages()) {
    std::thread fake([&] { FakeAgentOnce(env_.vchan_dir(), kBad, g); });
    auto conn = Connect(kBad);
    if (conn) {
      conn->WaitClosed();
      EXPECT_FALSE(conn->connected());
      CallRequest req;
      req.cmdline = "user:true";
      EXPECT_FALSE(conn->Call(req).ok());
      conn.reset();
    }
    fake.join();
  }
}

TEST_F(QrexecTest, HostileDataChannelIsAnErrorNotACrash) {
  // A fake agent that answers EXEC_CMDLINE with an oversized STDOUT chunk.
  constexpr int kBad = 12;
  std::thread fake([&] {
    vchan::Options o;
    o.socket_dir = env_.vchan_dir();
    o.own_domain = kBad;
    auto v = vchan::Vchan::Server(0, kControlPort, o);
    ASSERT_TRUE(v.ok());
    auto s = StreamFromVchan(std::move(v.value()));
    auto ver = Handshake(*s, Channel::kControlFromDaemon, kProtocolVersion, true);
    ASSERT_TRUE(ver.ok());
    auto m = s->Recv(Channel::kControlFromDaemon, *ver);
    ASSERT_TRUE(m.ok());
    auto req = ParseExecRequest(m->untrusted_body);
    ASSERT_TRUE(req.ok());
    auto d = vchan::Vchan::Client(static_cast<int>(req->connect_domain), static_cast<int>(req->connect_port), o);
    ASSERT_TRUE(d.ok());
    auto ds = StreamFromVchan(std::move(d.value()));
    ASSERT_TRUE(Handshake(*ds, Channel::kDataToService, 3, true).ok());
    (void)ds->Send(EncodeHeader(MSG_DATA_STDOUT, 70000) + std::string(70000, 'x'));
    (void)ds->Recv(Channel::kDataToService, 3);
    (void)ds->Recv(Channel::kDataToService, 3);
  });
  auto conn = Connect(kBad);
  ASSERT_TRUE(conn);
  CallRequest req;
  req.cmdline = "user:true";
  auto r = conn->Call(req);
  EXPECT_FALSE(r.ok());
  if (!r.ok()) {
    EXPECT_NE(r.error().message.find("MSG_DATA_STDOUT"), std::string::npos) << r.error().message;
  }
  conn.reset();
  fake.join();
}

// ---- domain -> domain ------------------------------------------------------------------

class VmToVmTest : public QrexecTest {
 protected:
  void StartTwoDomains(const std::vector<std::string>& policy_args) {
    env_.WriteService(env_.rpc_dir(2), "test.Allowed", "#!/bin/sh\necho \"from $QREXEC_REMOTE_DOMAIN:\"; cat\n");
    env_.WriteService(env_.rpc_dir(2), "test.Denied", "#!/bin/sh\necho should-not-run\n");
    env_.StartAgent(1);
    env_.StartAgent(2);
    d1_ = env_.StartDaemon(1, "vm1", policy_args);
    d2_ = env_.StartDaemon(2, "vm2", policy_args);
  }
  ProcResult ClientVm(const std::string& target, const std::string& service, const std::string& input) {
    return env_.Run({env_.Bin("qrexec-client-vm"), "--agent-socket=" + env_.agent_socket(1), target, service},
                    input, env_.DomainEnv(1));
  }
  pid_t d1_ = -1, d2_ = -1;
};

TEST_F(VmToVmTest, PolicyProgramAllowAndDeny) {
  std::string policy = env_.root() + "/policy.sh";
  // Qubes-style argv: -- DOMID SOURCE TARGET SERVICE+ARG IDENT
  env_.WriteFile(policy,
                 "#!/bin/sh\ncase \"$5\" in test.Allowed+*) printf 'result=allow\\ntarget=%s\\n"
                 "autostart=False\\n' \"$4\";; *) echo result=deny;; esac\n",
                 0755);
  StartTwoDomains({"--policy-program=" + policy});
  auto ok = ClientVm("vm2", "test.Allowed", "data in\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err << ReadFile(env_.root() + "/daemon1.log");
  EXPECT_EQ(ok.out, "from vm1:\ndata in\n");
  auto denied = ClientVm("vm2", "test.Denied+x", "");
  EXPECT_EQ(denied.exit_code, 126) << denied.err;
  EXPECT_EQ(denied.out, "");
  EXPECT_NE(ReadFile(env_.root() + "/daemon1.log").find("denied vm1 -> vm2 test.Denied+x"), std::string::npos);
  EXPECT_TRUE(env_.Alive(d1_));
  EXPECT_TRUE(env_.Alive(d2_));
}

TEST_F(VmToVmTest, PolicySocketAllowAndDeny) {
  std::string sock = env_.root() + "/policy.sock";
  auto l = ListenUnix(sock, 0666);
  ASSERT_TRUE(l.ok());
  std::atomic<int> queries{0};
  std::string last_query;
  std::thread responder([&] {
    for (int i = 0; i < 2; ++i) {
      int c = ::accept(l->get(), nullptr, nullptr);
      if (c < 0) return;
      std::string q;
      char buf[512];
      while (q.find("\n\n") == std::string::npos) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        q.append(buf, static_cast<size_t>(n));
      }
      last_query = q;
      ++queries;
      std::string a = q.find("service_and_arg=test.Allowed+") != std::string::npos
                          ? "result=allow\ntarget=vm2\nautostart=True\nrequested_target=vm2\n"
                          : "result=deny\n";
      (void)WriteAll(c, a.data(), a.size());
      ::close(c);
    }
  });
  StartTwoDomains({"--policy-socket=" + sock});
  auto ok = ClientVm("vm2", "test.Allowed+", "x");
  EXPECT_EQ(ok.exit_code, 0) << ok.err << ReadFile(env_.root() + "/daemon1.log");
  EXPECT_EQ(ok.out, "from vm1:\nx");
  auto denied = ClientVm("@default", "test.Denied", "");
  EXPECT_EQ(denied.exit_code, 126);
  responder.join();
  EXPECT_EQ(queries.load(), 2);
  EXPECT_NE(last_query.find("source=vm1\nintended_target=@default\nservice_and_arg=test.Denied+\n"),
            std::string::npos)
      << last_query;
}

// Qubes' split: the policy program answers nothing on stdout and carries the call out
// itself with `qrexec-client -c REQUEST_ID,SOURCE,SOURCE_ID` (as qrexec-policy-exec does).
TEST_F(VmToVmTest, PolicyProgramConnectsWithClientDashC) {
  std::string policy = env_.root() + "/policy-exec.sh";
  // argv: -- DOMID SOURCE TARGET SERVICE+ARG IDENT
  env_.WriteFile(policy,
                 "#!/bin/sh\ncase \"$5\" in test.Allowed+*) exec " + env_.Bin("qrexec-client") +
                     " --socket-dir=" + env_.socket_dir() +
                     " -d \"$4\" -c \"$6,$3,$2\" \"DEFAULT:QUBESRPC $5 $3\";; *) exit 1;; esac\n",
                 0755);
  StartTwoDomains({"--policy-program=" + policy});
  auto ok = ClientVm("vm2", "test.Allowed+x", "via -c\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err << ReadFile(env_.root() + "/daemon1.log");
  EXPECT_EQ(ok.out, "from vm1:\nvia -c\n");
  EXPECT_NE(ReadFile(env_.root() + "/daemon1.log").find("policy program connected vm1 -> vm2 test.Allowed+x"),
            std::string::npos);
  auto denied = ClientVm("vm2", "test.Denied", "");
  EXPECT_EQ(denied.exit_code, 126) << denied.err;
  // Malformed -c values are refused before anything is sent.
  for (const char* bad : {"SOCKET1,vm1", "SOCKET1,vm1,x", "SOCKET1,../x,1", "a b,vm1,1"}) {
    auto r = env_.Run({env_.Bin("qrexec-client"), "--socket-dir=" + env_.socket_dir(), "-d", "vm2", "-c", bad,
                       "DEFAULT:QUBESRPC test.Allowed+ vm1"},
                      "", env_.DomainEnv(0));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
  EXPECT_TRUE(env_.Alive(d1_));
  EXPECT_TRUE(env_.Alive(d2_));
}

TEST_F(VmToVmTest, NoPolicyMeansDeny) {
  StartTwoDomains({});
  EXPECT_EQ(ClientVm("vm2", "test.Allowed", "").exit_code, 126);
}

#ifdef QREXEC_POLICY_BIN_DIR
// The real qrexec-policy-daemon deciding from policy.d files, the real daemons and agents of
// two domains, and qrexec-client-vm in the caller: allow and deny, each explained by the
// matching rule's file:line in the policy daemon's log and in the sqlite3 audit log.
TEST_F(VmToVmTest, RealPolicyDaemonDecidesFromPolicyFiles) {
  std::string policy_dir = env_.root() + "/policy.d";
  ASSERT_EQ(::mkdir(policy_dir.c_str(), 0755), 0);
  env_.WriteFile(policy_dir + "/30-test.policy",
                 "# test rules\n"
                 "test.Allowed * vm1 vm2 allow\n"
                 "test.Denied  * vm1 @anyvm deny\n");
  env_.WriteFile(env_.root() + "/catalog.json",
                 R"({"domains": {"dom0": {"type": "AdminVM"}, "vm1": {"type": "AppVM"},)"
                 R"( "vm2": {"type": "AppVM"}}})");
  std::string sock = env_.root() + "/policy.sock";
  std::string audit = env_.root() + "/audit.db";
  pid_t pd = env_.StartBackground(
      {std::string(QREXEC_POLICY_BIN_DIR) + "/qrexec-policy-daemon", "--socket-path", sock, "--policy-dir",
       policy_dir, "--catalog", env_.root() + "/catalog.json", "--audit-log", audit},
      env_.DomainEnv(0), "policyd.log");
  for (int i = 0; i < 3000 && ::access(sock.c_str(), F_OK) != 0 && env_.Alive(pd); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(::access(sock.c_str(), F_OK), 0) << ReadFile(env_.root() + "/policyd.log");
  StartTwoDomains({"--policy-socket=" + sock});

  auto ok = ClientVm("vm2", "test.Allowed+arg", "through policy\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err << ReadFile(env_.root() + "/daemon1.log");
  EXPECT_EQ(ok.out, "from vm1:\nthrough policy\n");
  auto denied = ClientVm("vm2", "test.Denied", "");
  EXPECT_EQ(denied.exit_code, 126) << denied.err;
  EXPECT_EQ(denied.out, "");
  auto unmatched = ClientVm("vm2", "test.Other", "");
  EXPECT_EQ(unmatched.exit_code, 126) << unmatched.err;

  std::string file = policy_dir + "/30-test.policy";
  std::string log = ReadFile(env_.root() + "/policyd.log");
  EXPECT_NE(log.find("allow source=vm1 target=vm2 service=test.Allowed+arg rule=" + file + ":2"),
            std::string::npos) << log;
  EXPECT_NE(log.find("deny source=vm1 target=vm2 service=test.Denied+ rule=" + file + ":3"),
            std::string::npos) << log;
  std::string dlog = ReadFile(env_.root() + "/daemon1.log");
  EXPECT_NE(dlog.find("allowed vm1 -> vm2 test.Allowed+arg"), std::string::npos) << dlog;
  EXPECT_NE(dlog.find("denied vm1 -> vm2 test.Denied+"), std::string::npos) << dlog;
  if (::access("/usr/bin/sqlite3", X_OK) == 0) {
    auto rows = env_.Run({"/usr/bin/sqlite3", audit,
                          "SELECT source, intended_target, service_and_arg, rule_file, rule_line, result "
                          "FROM decisions ORDER BY id"},
                         "", {});
    EXPECT_EQ(rows.exit_code, 0) << rows.err;
    EXPECT_NE(rows.out.find("vm1|vm2|test.Allowed+arg|" + file + "|2|allow"), std::string::npos) << rows.out;
    EXPECT_NE(rows.out.find("vm1|vm2|test.Denied+|" + file + "|3|deny"), std::string::npos) << rows.out;
  }
  EXPECT_TRUE(env_.Alive(pd));
  EXPECT_TRUE(env_.Alive(d1_));
  EXPECT_TRUE(env_.Alive(d2_));
}
#endif

// ---- pid 1 ------------------------------------------------------------------------------

TEST_F(QrexecTest, AgentAsPid1ReapsAndServes) {
  if (::geteuid() != 0 || ::access("/usr/bin/unshare", X_OK) != 0)
    GTEST_SKIP() << "needs root and unshare(1) to run the agent as pid 1 of a pid namespace";
  int probe = std::system("unshare --pid --fork --mount-proc true >/dev/null 2>&1");
  if (probe != 0) GTEST_SKIP() << "unshare --pid --fork is not permitted here";
  agent_ = env_.StartAgent(kDom, {}, {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child"});
  daemon_ = env_.StartDaemon(kDom, kName);
  ASSERT_TRUE(env_.Alive(daemon_));
  // The shell's parent is the agent: pid 1 in its namespace.
  auto r = Client("user:echo $PPID");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n");
  // Orphans are re-parented to the agent and reaped: leave a background child behind.
  r = Client("user:(sleep 0.2 &) ; exit 5");
  EXPECT_EQ(r.exit_code, 5);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  r = Client("user:cat /proc/[0-9]*/stat 2>/dev/null | awk '$3==\"Z\"' | wc -l");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "0\n") << "zombies left in the agent's pid namespace";
}

}  // namespace
}  // namespace odyssey::qrexec

// The pool the daemon, agent and transports run their per-call work on: tasks that block
// never wait for each other (64 tasks that only finish together all run), and a forked
// child (no workers there) still runs tasks.
TEST(WorkerPoolTest, BlockingTasksRunAtOnceAndForkedChildStillRuns) {
  using odyssey::qrexec::WorkerPool;
  static WorkerPool* pool = new WorkerPool(4);  // outlives its detached workers
  constexpr int kTasks = 64;
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    int started = 0;
    std::atomic<int> finished{0};
  };
  for (int round = 0; round < 2; ++round) {  // the second round reuses idle workers
    auto st = std::make_shared<Shared>();      // kept alive by every task
    for (int i = 0; i < kTasks; ++i) {
      pool->Run([st] {
        std::unique_lock<std::mutex> lock(st->mu);
        ++st->started;
        st->cv.notify_all();
        // Each task waits until all have started: this only ends if none waits for a worker.
        st->cv.wait(lock, [&] { return st->started == kTasks; });
        ++st->finished;
      });
    }
    for (int i = 0; i < 2000 && st->finished < kTasks; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(st->finished.load(), kTasks) << "round " << round;
  }
  pid_t child = ::fork();
  if (child == 0) {
    auto ran = std::make_shared<std::atomic<bool>>(false);
    pool->Run([ran] { *ran = true; });
    for (int i = 0; i < 2000 && !*ran; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::_exit(*ran ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}
