// gui-agent: the guest side of the GUI. Connects to the domain's X server (or starts a
// private Xvfb with --xvfb), optionally starts a program on it, and serves the host's
// gui-daemon over vchan port 6000 until the daemon disconnects.
//
// --until-closed (how the engine runs a GUI disposable's program): the program's stdin,
// stdout and stderr are the agent's own (the call's), the agent writes nothing to stdout,
// ends once the program exited and its windows are gone (or the host went away and the
// program exited), and exits with the program's status. Without a usable private X server
// it runs the program without a display instead, so the call still works headless.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gui/agent/agent.h"
#include "gui/xvfb.h"

namespace {

[[noreturn]] void Exec(std::vector<std::string>& command) {
  std::vector<char*> args;
  for (auto& a : command) args.push_back(a.data());
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::fprintf(stderr, "gui-agent: cannot run %s\n", args[0]);
  _exit(127);
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 125;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gui-agent: show this domain's X windows on the host through gui-daemon"};
  odyssey::gui::AgentOptions opts;
  int own_domain = -1;
  std::string xvfb_size;
  bool until_closed = false;
  std::vector<std::string> command;
  app.add_option("--display", opts.display, "the domain's X display (default $DISPLAY)");
  app.add_option("--xvfb", xvfb_size, "start a private Xvfb of this size (WxH) instead");
  app.add_option("--host-domain", opts.host_domain, "vchan id of the gui-daemon side (default 0)");
  app.add_option("--socket-dir", opts.vchan_socket_dir,
                 "socket vchan directory (default $VCHAN_SOCKET_DIR or /var/run/vchan)");
  app.add_option("--own-domain", own_domain, "our own vchan id (default $VCHAN_DOMAIN or 0)");
  app.add_flag("--until-closed", until_closed,
               "the command keeps our stdio; end when it exited and its windows are closed, "
               "with its exit status (runs it without a display if no X server can start)");
  app.add_option("command", command, "program to start on the display (after --)");
  CLI11_PARSE(app, argc, argv);
  if (own_domain >= 0) opts.own_domain = own_domain;
  if (until_closed && command.empty()) {
    std::fprintf(stderr, "gui-agent: --until-closed needs a command after --\n");
    return 2;
  }

  std::unique_ptr<odyssey::gui::XvfbServer> xvfb;
  if (!xvfb_size.empty()) {
    int w = 0, h = 0;
    if (std::sscanf(xvfb_size.c_str(), "%dx%d", &w, &h) != 2 || w < 64 || h < 64 ||
        w > 16384 || h > 16384) {
      std::fprintf(stderr, "gui-agent: bad --xvfb size %s\n", xvfb_size.c_str());
      return 2;
    }
    auto s = odyssey::gui::XvfbServer::Start(w, h);
    if (!s.ok()) {
      std::fprintf(stderr, "gui-agent: %s\n", s.error().message.c_str());
      if (!until_closed) return 1;
      std::fprintf(stderr, "gui-agent: running %s without a display\n", command[0].c_str());
      unsetenv("DISPLAY");
      Exec(command);
    }
    xvfb = std::move(s.value());
    opts.display = xvfb->display();
    if (!until_closed) {  // in --until-closed mode stdout belongs to the command
      std::printf("DISPLAY=%s\n", opts.display.c_str());
      std::fflush(stdout);
    }
  }
  if (!opts.display.empty()) setenv("DISPLAY", opts.display.c_str(), 1);
  // Without --until-closed the started program is not waited for.
  if (!until_closed) signal(SIGCHLD, SIG_IGN);
  pid_t child = -1;
  if (!command.empty()) {
    child = fork();
    if (child < 0) {
      std::perror("gui-agent: fork");
      return 1;
    }
    if (child == 0) Exec(command);
  }
  if (until_closed) {
    // The call's stdin/stdout end when the command's do, not when ours do.
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      close(null);
    }
    opts.command_pid = child;
  }
  odyssey::Status st = odyssey::gui::RunAgent(opts);
  if (!st.ok()) std::fprintf(stderr, "gui-agent: %s\n", st.error().message.c_str());
  if (!until_closed) return st.ok() ? 0 : 1;
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return ExitCode(status);
}
