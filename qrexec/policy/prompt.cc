// `ask` prompts: a configured program, or zenity / xmessage when a display exists.
// Every string shown was validated by the evaluator (names, service and argument use a
// small ASCII alphabet), so none can carry markup or control characters.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/unique_fd.h"
#include "qrexec/policy/policy.h"

extern char** environ;

namespace odyssey::qrexec::policy {
namespace {

constexpr size_t kMaxAnswerBytes = 4096;

std::string FindInPath(const std::string& name, const std::string& search_path) {
  size_t start = 0;
  while (start <= search_path.size()) {
    size_t colon = search_path.find(':', start);
    std::string dir = search_path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty()) {
      std::string candidate = dir + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return "";
}

struct ProgramResult {
  int exit_code = -1;
  std::string first_line;
};

// Runs argv with stdin from /dev/null, captures the first line of stdout.
Result<ProgramResult> RunProgram(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error::Errno("pipe2", "prompt");
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Error::Errno(rc, "posix_spawnp", args[0]);
  write_end.reset();
  std::string out;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (out.size() < kMaxAnswerBytes) out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Error::Errno("waitpid", args[0]);
  }
  ProgramResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  size_t nl = out.find('\n');
  result.first_line = out.substr(0, nl);
  while (!result.first_line.empty() && (result.first_line.back() == '\r' || result.first_line.back() == ' '))
    result.first_line.pop_back();
  return result;
}

class ProgramPrompter final : public Prompter {
 public:
  explicit ProgramPrompter(ProgramPrompterOptions options) : options_(std::move(options)) {}

  Result<PromptAnswer> Ask(const PromptRequest& request) override {
    if (!options_.program.empty()) return AskProgram(request);
    if (options_.display.empty()) {
      return Error{"no prompt can be shown: DISPLAY is not set and no prompt program is configured", 0};
    }
    std::string zenity = FindInPath("zenity", options_.search_path);
    std::string xmessage = zenity.empty() ? FindInPath("xmessage", options_.search_path) : "";
    if (zenity.empty() && xmessage.empty()) {
      return Error{"no prompt can be shown: neither zenity nor xmessage is installed", 0};
    }
    std::string target = request.target == "@default" ? request.default_target : request.target;
    if (target.empty()) return Error{"no prompt can be shown: the caller named no target and the rule has no default_target", 0};
    std::string text = "Allow the qrexec call?\n\nsource: " + request.source + "\nservice: " + request.service_and_arg +
                       "\ntarget: " + target;
    std::vector<std::string> args;
    if (!zenity.empty()) {
      args = {zenity, "--question", "--no-markup", "--title=Odyssey qrexec policy", "--text=" + text};
    } else {
      args = {xmessage, "-center", "-buttons", "Allow:0,Deny:1", "-default", "Deny", text};
    }
    auto run = RunProgram(args);
    if (!run.ok()) return run.error().Wrap("showing the prompt");
    return PromptAnswer{run->exit_code == 0, target};
  }

 private:
  Result<PromptAnswer> AskProgram(const PromptRequest& request) {
    auto run = RunProgram({options_.program, request.source, request.service_and_arg, request.target,
                           request.default_target});
    if (!run.ok()) return run.error().Wrap("running prompt program");
    PromptAnswer answer;
    answer.allowed = run->exit_code == 0;
    answer.target = run->first_line;
    return answer;
  }

  ProgramPrompterOptions options_;
};

}  // namespace

std::unique_ptr<Prompter> MakeProgramPrompter(ProgramPrompterOptions options) {
  return std::make_unique<ProgramPrompter>(std::move(options));
}

ProgramPrompterOptions PrompterOptionsFromEnv(const std::string& program) {
  ProgramPrompterOptions options;
  options.program = program;
  const char* display = std::getenv("DISPLAY");
  const char* path = std::getenv("PATH");
  options.display = display ? display : "";
  options.search_path = path ? path : "/usr/local/bin:/usr/bin:/bin";
  return options;
}

}  // namespace odyssey::qrexec::policy
