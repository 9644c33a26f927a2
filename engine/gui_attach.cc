#include "engine/gui_attach.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <spdlog/spdlog.h>
#include <string_view>
#include <vector>

#include "base/io.h"

namespace odyssey::engine {
namespace {

using json = nlohmann::json;

bool ValidDisplay(const std::string& s) {
  if (s.empty() || s.size() > 256) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view(".:_/-[]").find(c) == std::string_view::npos)
      return false;
  return true;
}

bool ValidPath(const std::string& s) {
  if (s.empty() || s[0] != '/' || s.size() > 4096) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

// Finds a qrexec service as qrexec-agent does (name+arg, then name; the Odyssey directory
// first) and runs it with the agent's variables. $1 service, $2 argument, $3 source.
constexpr const char* kRunService = R"sh(s=$1 a=$2
export QREXEC_REMOTE_DOMAIN="$3" QREXEC_SERVICE_FULL_NAME="$s+$a"
[ -n "$a" ] && export QREXEC_SERVICE_ARGUMENT="$a"
for n in "$s+$a" "$s"; do
  for d in ${ODYSSEY_RPC_DIR:-} /usr/local/etc/qubes-rpc /etc/qubes-rpc; do
    if [ -f "$d/$n" ]; then
      if [ -n "$a" ]; then exec "$d/$n" "$a"; else exec "$d/$n"; fi
    fi
  done
done
echo "qrexec-agent: service $s+$a not found" >&2
exit 127)sh";

bool Executable(const std::string& path) { return !path.empty() && ::access(path.c_str(), X_OK) == 0; }

std::string HomeOf(uid_t uid) {
  struct passwd pw, *out = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &out) != 0 || !out || !pw.pw_dir) return "/";
  return pw.pw_dir;
}

}  // namespace

Result<std::optional<GuiRequest>> ParseGuiRequest(const json& request, uint32_t uid, uint32_t gid) {
  if (!request.contains("gui") || request["gui"].is_null()) return std::optional<GuiRequest>();
  const json& g = request["gui"];
  if (!g.is_object()) return Error{"\"gui\" must be an object {\"display\", \"xauthority\"?}", EINVAL};
  GuiRequest r;
  r.uid = uid;
  r.gid = gid;
  if (!g.contains("display") || !g["display"].is_string() ||
      !ValidDisplay(r.display = g["display"].get<std::string>()))
    return Error{"gui: \"display\" must be an X display name like \":0\" (got " +
                     (g.contains("display") ? g["display"].dump() : std::string("nothing")) + ")",
                 EINVAL};
  if (g.contains("xauthority") && !g["xauthority"].is_null()) {
    if (!g["xauthority"].is_string()) return Error{"gui: \"xauthority\" must be a string", EINVAL};
    r.xauthority = g["xauthority"].get<std::string>();
    if (!r.xauthority.empty() && !ValidPath(r.xauthority))
      return Error{"gui: \"xauthority\" must be an absolute path (got " + g["xauthority"].dump() + ")",
                   EINVAL};
  }
  return std::optional<GuiRequest>(std::move(r));
}

std::string GuiAgentPath() {
  std::string p;
  if (const char* e = std::getenv("ODYSSEY_GUI_AGENT"); e && *e) p = e;
#ifdef ODYSSEY_GUI_AGENT_PATH
  else p = ODYSSEY_GUI_AGENT_PATH;
#else
  else p = "/usr/lib/odyssey/gui-agent";
#endif
  return Executable(p) ? p : "";
}

std::string GuiDaemonPath() {
  if (const char* e = std::getenv("ODYSSEY_GUI_DAEMON"); e && *e) return e;
#ifdef ODYSSEY_GUI_DAEMON_PATH
  if (Executable(ODYSSEY_GUI_DAEMON_PATH)) return ODYSSEY_GUI_DAEMON_PATH;
#endif
  return "gui-daemon";
}

void WrapCallForGui(CallSpec* spec) {
  std::vector<std::string> inner;
  if (!spec->service.empty()) {
    inner = {"/bin/sh", "-c", kRunService, "sh", spec->service, spec->service_arg, spec->source};
    spec->service.clear();
    spec->service_arg.clear();
  } else {
    inner = std::move(spec->argv);
  }
  const std::string agent = kGuiAgentInside;
  spec->argv = {"/bin/sh", "-c",
                "if [ -x " + agent + " ]; then exec " + agent + " --xvfb " + kGuestScreen +
                    " --until-closed -- \"$@\"; fi; exec \"$@\"",
                "sh"};
  spec->argv.insert(spec->argv.end(), inner.begin(), inner.end());
}

Result<std::unique_ptr<GuiAttachment>> GuiAttachment::Start(Options options) {
  const GuiRequest& r = options.request;
  std::vector<std::string> args = {options.daemon_path,
                                   "--domid=" + std::to_string(options.vchan.domid),
                                   "--name=" + options.domain_name,
                                   "--socket-dir=" + options.vchan.socket_dir,
                                   "--own-domain=0",
                                   "--display=" + r.display,
                                   "--label=red",
                                   "--exit-when-closed",
                                   "--connect-timeout-ms=30000"};
  if (::geteuid() == 0) {
    if (r.uid != 0) args.push_back("--run-as=" + std::to_string(r.uid) + ":" + std::to_string(r.gid));
  } else if (r.uid != ::geteuid()) {
    return Error{"odysseyd runs as uid " + std::to_string(::geteuid()) +
                     " and cannot show windows for uid " + std::to_string(r.uid),
                 EPERM};
  }
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "DISPLAY=" + r.display,
                                  "HOME=" + HomeOf(r.uid)};
  if (!r.xauthority.empty()) env.push_back("XAUTHORITY=" + r.xauthority);
  for (const char* keep : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "LANG"})
    if (const char* v = std::getenv(keep)) env.push_back(std::string(keep) + "=" + v);

  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, 2, 1);  // notices go to odysseyd's log stream
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  int rc = options.daemon_path.find('/') == std::string::npos
               ? ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data())
               : ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error::Errno(rc, "spawn", options.daemon_path);

  std::unique_ptr<GuiAttachment> a(new GuiAttachment());
  a->pid_ = pid;
  a->pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  a->stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!a->pidfd_ || !a->stop_fd_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Error::Errno("pidfd_open/eventfd", "gui-daemon");
  }
  a->options_ = std::move(options);
  a->watcher_ = std::thread(&GuiAttachment::Watch, a.get());
  return a;
}

void GuiAttachment::Watch() {
  pollfd fds[2] = {{pidfd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
  }
  bool stopped = fds[1].revents & POLLIN;
  if (stopped && !(fds[0].revents & POLLIN)) {
    // The call ended first: the gui-daemon goes with it.
    ::kill(pid_, SIGTERM);
    if (::poll(fds, 1, 2000) == 0) ::kill(pid_, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  if (stopped) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    spdlog::info("gui of {}: the windows are closed", options_.domain_name);
  else
    spdlog::warn("gui of {}: gui-daemon ended with status {:#x} (see its message above)",
                 options_.domain_name, status);
  // Leave the call time to end on its own (a viewer's write-back), then end it.
  pollfd stop = {stop_fd_.get(), POLLIN, 0};
  int ms = static_cast<int>(options_.grace.count());
  int n;
  while ((n = ::poll(&stop, 1, ms)) < 0 && errno == EINTR) {
  }
  if (n == 0 && options_.on_end) {
    spdlog::info("gui of {}: the disposable outlived its windows by {} ms; destroying it",
                 options_.domain_name, ms);
    options_.on_end();
  }
}

GuiAttachment::~GuiAttachment() {
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  if (watcher_.joinable()) watcher_.join();
}

std::unique_ptr<GuiAttachment> AttachGui(const std::optional<GuiRequest>& request,
                                         const Member& member, CallSpec* spec,
                                         std::function<void()> on_end) {
  if (!request) return nullptr;
  VchanAddress addr = member.vchan_address();
  if (addr.domid < 0 || addr.socket_dir.empty()) {
    spdlog::info("gui: {} has no socket vchan (backend without GUI); running headless",
                 member.name());
    // The user asked for a window: say on the caller's stderr why none comes and what to do.
    if (spec->stderr_fd.valid()) {
      const std::string note =
          "odyssey: no window on " + request->display + ": " + member.name() +
          " runs on odysseyd's process backend, which has no GUI channel; it runs headless. "
          "Windows need the hal native backend: run odysseyd as root (`odyssey ping` names the "
          "backend in use).\n";
      (void)WriteAll(spec->stderr_fd.get(), note.data(), note.size());
    }
    return nullptr;
  }
  if (GuiAgentPath().empty()) {
    spdlog::warn("gui: no gui-agent (set $ODYSSEY_GUI_AGENT); {} runs headless", member.name());
    return nullptr;
  }
  GuiAttachment::Options o;
  o.domain_name = member.name();
  o.vchan = addr;
  o.request = *request;
  o.on_end = std::move(on_end);
  auto a = GuiAttachment::Start(std::move(o));
  if (!a.ok()) {
    spdlog::warn("gui: cannot show {} on {}: {}; running headless", member.name(),
                 request->display, a.error().message);
    return nullptr;
  }
  WrapCallForGui(spec);
  spdlog::info("gui: {} shown on {} for uid {} (gui-daemon pid {})", member.name(),
               request->display, request->uid, (*a)->pid());
  return std::move(*a);
}

}  // namespace odyssey::engine
