// End to end on the native backend with the real qrexec-agent as the domain's agent: a
// frozen clone is resumed and runs a shell command through the qrexec host library.
#include <sys/mman.h>
#include <unistd.h>

#include "qrexec/host/agent_connection.h"
#include "tests/native/native_test_util.h"

namespace odyssey::hal::native::testing {
namespace {

class AgentTest : public NativeTest {};

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ::lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

TEST_F(AgentTest, RunsShellCommandThroughTheRealAgent) {
  TemplateSpec t = HostTemplate();
  t.agent_path = ODYSSEY_TEST_QREXEC_AGENT;
  auto snap = hv_->PrepareSnapshot(t);
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  auto dom = hv_->CloneFromSnapshot(*snap, Spec("agent1"));
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  ASSERT_TRUE((*dom)->Resume().ok());

  qrexec::AgentConnectionOptions opts;
  opts.domid = (*dom)->vchan().domid;
  opts.domain_name = (*dom)->name();
  opts.socket_dir = (*dom)->vchan().socket_dir;
  auto conn = qrexec::AgentConnection::Connect(opts);
  ASSERT_TRUE(conn.ok()) << conn.error().message;

  int out = ::memfd_create("agent-stdout", MFD_CLOEXEC);
  int err = ::memfd_create("agent-stderr", MFD_CLOEXEC);
  ASSERT_GE(out, 0);
  ASSERT_GE(err, 0);
  qrexec::CallRequest call;
  call.cmdline = "DEFAULT:sh -c 'id; hostname; ls /home'";
  call.stdout_fd = out;
  call.stderr_fd = err;
  auto code = (*conn)->Call(call);
  ASSERT_TRUE(code.ok()) << code.error().message;
  std::string stdout_text = ReadAll(out), stderr_text = ReadAll(err);
  EXPECT_EQ(*code, 0) << stderr_text;
  EXPECT_NE(stdout_text.find("uid=1000"), std::string::npos) << stdout_text;
  EXPECT_NE(stdout_text.find("agent1\n"), std::string::npos) << stdout_text;
  EXPECT_NE(stdout_text.find("user\n"), std::string::npos) << stdout_text;
  ::close(out);
  ::close(err);
  (*conn)->Close();
  EXPECT_TRUE((*dom)->Destroy().ok());
}

}  // namespace
}  // namespace odyssey::hal::native::testing
