#include "gui/xvfb.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "base/unique_fd.h"

namespace odyssey::gui {

bool XvfbServer::Available() {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string candidate = p.substr(start, end - start) + "/Xvfb";
    if (access(candidate.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

Result<std::unique_ptr<XvfbServer>> XvfbServer::Start(int width, int height) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return Error::Errno("pipe2", "Xvfb -displayfd");
  UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  std::string fd_arg = std::to_string(wr.get());
  std::string screen = std::to_string(width) + "x" + std::to_string(height) + "x24";
  pid_t pid = fork();
  if (pid < 0) return Error::Errno("fork", "Xvfb");
  if (pid == 0) {
    // Child: keep only the write end of the pipe across exec.
    fcntl(pipefd[1], F_SETFD, 0);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      if (!std::getenv("ODYSSEY_XVFB_VERBOSE")) dup2(devnull, 2);
    }
    setpgid(0, 0);
    execlp("Xvfb", "Xvfb", "-displayfd", fd_arg.c_str(), "-screen", "0", screen.c_str(),
           "-nolisten", "tcp", "-noreset", "+extension", "Composite", "+extension", "DAMAGE",
           "+extension", "XTEST", static_cast<char*>(nullptr));
    _exit(127);
  }
  wr.reset();
  std::unique_ptr<XvfbServer> server(new XvfbServer());
  server->pid_ = pid;
  // Xvfb writes "N\n" once it listens; EOF without it means it died.
  std::string number;
  char buf[32];
  while (number.find('\n') == std::string::npos) {
    pollfd pfd{rd.get(), POLLIN, 0};
    int r = poll(&pfd, 1, 30000);
    if (r == 0) return Error{"Xvfb did not report a display within 30 s", 0};
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("poll", "Xvfb -displayfd");
    }
    ssize_t n = read(rd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{"Xvfb exited before reporting a display", 0};
    number.append(buf, static_cast<size_t>(n));
  }
  number.resize(number.find('\n'));
  server->display_ = ":" + number;
  return server;
}

XvfbServer::~XvfbServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace odyssey::gui
