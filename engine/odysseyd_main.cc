// odysseyd: the Odyssey engine daemon. Serves the admin socket, keeps pools of prepared
// disposables, runs calls in them. `--foreground` for service managers; otherwise it
// detaches once it is ready (so `odysseyd && odyssey run …` never races).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "base/io.h"
#include "engine/backend_factory.h"
#include "engine/config.h"
#include "engine/daemon.h"

using namespace odyssey;
using namespace odyssey::engine;

namespace {

void SetupLogging(const Config& c, bool foreground) {
  std::shared_ptr<spdlog::logger> logger;
  std::string file = c.log_file;
  if (file.empty() && !foreground) file = c.state_dir + "/odysseyd.log";
  if (!file.empty()) {
    try {
      logger = spdlog::basic_logger_mt("odysseyd", file);
    } catch (const spdlog::spdlog_ex& e) {
      std::fprintf(stderr, "odysseyd: cannot log to %s: %s\n", file.c_str(), e.what());
    }
  }
  if (!logger) logger = spdlog::stderr_color_mt("odysseyd");
  logger->set_level(spdlog::level::from_str(c.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"odysseyd: the Odyssey engine daemon. Keeps pools of prepared disposables and "
               "serves the admin socket used by the `odyssey` CLI.\nBackends built in: " +
               BuiltBackends()};
  std::string config_path, socket, state_dir, log_level, backend;
  int pool_size = -1;
  bool foreground = false;
  app.add_option("-c,--config", config_path,
                 "config file (JSON or key = value); default " + DefaultConfigPath() +
                     " if it exists, else built-in defaults");
  app.add_option("--socket", socket, "admin socket path (default " + DefaultSocketPath() + ")");
  app.add_option("--state-dir", state_dir, "state directory (default " + DefaultStateDir() + ")");
  app.add_option("--backend", backend, "process | auto | a HAL URI such as native:///");
  app.add_option("--pool-size", pool_size, "target prepared disposables per template");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off");
  app.add_flag("-f,--foreground", foreground,
               "stay in the foreground and log to stderr (for systemd and other service managers)");
  CLI11_PARSE(app, argc, argv);

  bool named = !config_path.empty();
  auto loaded = LoadConfig(named ? config_path : DefaultConfigPath(), named);
  if (!loaded.ok()) {
    std::fprintf(stderr, "odysseyd: %s\n", loaded.error().message.c_str());
    return 2;
  }
  Config config = *loaded;
  if (!socket.empty()) config.socket_path = socket;
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (!backend.empty()) config.backend = backend;
  if (pool_size >= 0) config.pool_size = static_cast<uint32_t>(pool_size);
  if (!log_level.empty()) {
    Config probe;
    auto s = ParseConfig("log_level = " + log_level, "--log-level", &probe);
    if (!s.ok()) {
      std::fprintf(stderr, "odysseyd: %s\n", s.error().message.c_str());
      return 2;
    }
    config.log_level = log_level;
  }

  // Detach before any thread exists; the parent waits for the child's readiness report.
  int report_fd = -1;
  if (!foreground) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      std::perror("odysseyd: pipe");
      return 1;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("odysseyd: fork");
      return 1;
    }
    if (pid > 0) {
      ::close(p[1]);
      char buf[4096];
      std::string msg;
      ssize_t n;
      while ((n = ::read(p[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
      if (msg.rfind("OK", 0) == 0) {
        std::printf("odysseyd ready on %s (pid %d)\n", config.socket_path.c_str(), pid);
        return 0;
      }
      std::fprintf(stderr, "odysseyd: %s\n",
                   msg.empty() ? "exited during start-up (see its log)" : msg.c_str());
      return 1;
    }
    ::close(p[0]);
    report_fd = p[1];
    ::setsid();
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::close(devnull);
    }
  }
  ::umask(077);
  SetupLogging(config, foreground);
  auto daemon = Daemon::Create(config);
  if (!daemon.ok()) {
    spdlog::error("{}", daemon.error().message);
    if (report_fd >= 0) (void)WriteAll(report_fd, daemon.error().message.data(),
                                       daemon.error().message.size());
    else std::fprintf(stderr, "odysseyd: %s\n", daemon.error().message.c_str());
    return 1;
  }
  auto s = (*daemon)->Run([&] {
    if (report_fd >= 0) {
      (void)WriteAll(report_fd, "OK", 2);
      ::close(report_fd);
      report_fd = -1;
    }
  });
  daemon->reset();
  spdlog::shutdown();
  return s.ok() ? 0 : 1;
}
