// gui-agent: the guest side of the GUI. Connects to the domain's X server (or starts a
// private Xvfb with --xvfb), optionally starts a program on it, and serves the host's
// gui-daemon over vchan port 6000 until the daemon disconnects.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gui/agent/agent.h"
#include "gui/xvfb.h"

int main(int argc, char** argv) {
  CLI::App app{"gui-agent: show this domain's X windows on the host through gui-daemon"};
  odyssey::gui::AgentOptions opts;
  int own_domain = -1;
  std::string xvfb_size;
  std::vector<std::string> command;
  app.add_option("--display", opts.display, "the domain's X display (default $DISPLAY)");
  app.add_option("--xvfb", xvfb_size, "start a private Xvfb of this size (WxH) instead");
  app.add_option("--host-domain", opts.host_domain, "vchan id of the gui-daemon side (default 0)");
  app.add_option("--socket-dir", opts.vchan_socket_dir,
                 "socket vchan directory (default $VCHAN_SOCKET_DIR or /var/run/vchan)");
  app.add_option("--own-domain", own_domain, "our own vchan id (default $VCHAN_DOMAIN or 0)");
  app.add_option("command", command, "program to start on the display (after --)");
  CLI11_PARSE(app, argc, argv);
  if (own_domain >= 0) opts.own_domain = own_domain;

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
      return 1;
    }
    xvfb = std::move(s.value());
    opts.display = xvfb->display();
    std::printf("DISPLAY=%s\n", opts.display.c_str());
    std::fflush(stdout);
  }
  if (!opts.display.empty()) setenv("DISPLAY", opts.display.c_str(), 1);
  signal(SIGCHLD, SIG_IGN);  // the started program is not waited for
  if (!command.empty()) {
    pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> args;
      for (auto& a : command) args.push_back(a.data());
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  odyssey::Status st = odyssey::gui::RunAgent(opts);
  if (!st.ok()) {
    std::fprintf(stderr, "gui-agent: %s\n", st.error().message.c_str());
    return 1;
  }
  return 0;
}
