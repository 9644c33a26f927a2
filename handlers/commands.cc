#include "handlers/commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "handlers/exec_runner.h"
#include "handlers/open_in_vm.h"

namespace odyssey::handlers {

int CommandFail(const std::string& prog, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", prog.c_str(), message.c_str());
  return 1;
}

int RunRouteCommand(const RouteCommand& cmd, const std::string& prog) {
  RouterOptions options;
  if (!cmd.dirs.empty()) options.dirs = cmd.dirs;
  options.with_defaults = !cmd.no_defaults;
  auto router = Router::Create(options);
  if (!router.ok()) return CommandFail(prog, router.error().message), 2;
  if (cmd.list) {
    for (const auto& r : router.value()->rules().rules())
      std::printf("%s\t%s\n", r.source.ToString().c_str(), r.text.c_str());
    return 0;
  }
  if (cmd.subjects.empty()) return CommandFail(prog, "nothing to route (give a FILE or URL; see --help)"), 2;
  int rc = 0;
  for (const auto& s : cmd.subjects) {
    auto d = router.value()->Route(s);
    if (!d.ok()) {
      rc = CommandFail(prog, d.error().message);
      continue;
    }
    for (const auto& note : d->notes) std::fprintf(stderr, "%s: warning: %s\n", prog.c_str(), note.c_str());
    if (cmd.short_form) {
      std::printf("%s\t%s\n", d->action.Spelling().c_str(), d->rule_source.c_str());
    } else {
      std::printf("%s", d->Explain().c_str());
    }
  }
  std::fflush(stdout);
  return rc;
}

int RunConvertCommand(DisposableRunner& runner, const std::string& file, ConvertOptions options,
                      const std::string& prog) {
  options.on_page = [prog](uint32_t index, uint32_t total, const Page& page) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(static_cast<uint64_t>(index) * kWidth / (total ? total : 1));
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s: [%s] page %u/%u (%ux%u)", prog.c_str(), bar.c_str(), index, total,
                 page.width, page.height);
    if (index == total || !isatty(2)) std::fputc('\n', stderr);
  };
  auto r = ConvertFile(runner, file, options);
  if (!r.ok()) return CommandFail(prog, r.error().message);
  std::printf("%s\n", r->output_path.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %u page(s) -> %s\n", prog.c_str(), r->pages, r->output_path.c_str());
  if (!r->quarantined_path.empty())
    std::fprintf(stderr, "%s: original moved to %s\n", prog.c_str(), r->quarantined_path.c_str());
  return 0;
}

namespace {

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

int ActOnDecision(DisposableRunner& runner, const Decision& d, const ActOptions& options) {
  const std::string& prog = options.prog;
  std::fprintf(stderr, "%s: %s -> %s (rule %s)\n", prog.c_str(), d.subject.c_str(),
               d.action.Spelling().c_str(), d.rule_source.c_str());
  switch (d.action.kind) {
    case Action::Kind::kDeny:
      return CommandFail(prog, "refused: " + d.subject + " (rule " + d.rule_source + ": " + d.rule_text + ")");
    case Action::Kind::kLocal: {
      // Opening on the host through xdg-open would come back here while odyssey-open is the
      // default handler: ODYSSEY_LOCAL_OPENER names the real local application.
      const char* opener = std::getenv("ODYSSEY_LOCAL_OPENER");
      std::vector<std::string> argv = {opener && *opener ? opener : "xdg-open", d.is_url ? d.subject : d.path};
      if (options.dry_run) return std::printf("would run: %s\n", Joined(argv).c_str()), 0;
      ::setenv("ODYSSEY_OPEN_DEPTH", "1", 1);
      auto rc = SpawnAndWait(argv, -1, -1, -1);
      ::unsetenv("ODYSSEY_OPEN_DEPTH");
      return rc.ok() ? rc.value() : CommandFail(prog, rc.error().message);
    }
    case Action::Kind::kConvertPdf:
    case Action::Kind::kConvertImage: {
      if (d.is_url) return CommandFail(prog, "cannot convert a URL: " + d.subject);
      if (options.dry_run)
        return std::printf("would convert %s: %s\n", d.path.c_str(), d.action.Explain().c_str()), 0;
      ConvertOptions o;
      o.kind = d.action.kind == Action::Kind::kConvertPdf ? ConvertOptions::Kind::kPdf
                                                          : ConvertOptions::Kind::kImage;
      return RunConvertCommand(runner, d.path, o, prog);
    }
    case Action::Kind::kDispVm:
    case Action::Kind::kVm:
      break;
  }
  Target target = *d.action.ServiceTarget();
  if (options.dry_run)
    return std::printf("would call %s in a %s\n", d.is_url ? "qubes.OpenURL" : "qubes.OpenInVM",
                       target.Describe().c_str()), 0;
  if (d.is_url) {
    auto rc = OpenUrlInDomain(runner, d.subject, target, -1, STDOUT_FILENO);
    return rc.ok() ? rc.value() : CommandFail(prog, rc.error().message);
  }
  OpenOptions o;
  o.target = target;
  o.view_only = d.action.view_only || options.view_only;
  auto r = OpenFileInDomain(runner, d.path, o);
  if (!r.ok()) return CommandFail(prog, r.error().message);
  if (r->written_back) std::fprintf(stderr, "%s: %s was edited; saved the new version\n", prog.c_str(), d.path.c_str());
  return r->exit_code;
}

int OpenSubjects(DisposableRunner& runner, const std::vector<std::string>& subjects,
                 const std::vector<std::string>& dirs, const ActOptions& options) {
  RouterOptions ro;
  if (!dirs.empty()) ro.dirs = dirs;
  auto router = Router::Create(ro);
  if (!router.ok()) return CommandFail(options.prog, router.error().message);
  int rc = 0;
  for (const auto& s : subjects) {
    auto d = router.value()->Route(s);
    if (!d.ok()) {
      struct stat st;
      bool url = LooksLikeUrl(s) && ::stat(s.c_str(), &st) != 0;
      rc = CommandFail(options.prog, (url ? "Invalid URL " : "cannot open ") + s + ": " + d.error().message);
      continue;
    }
    for (const auto& note : d->notes) std::fprintf(stderr, "%s: warning: %s\n", options.prog.c_str(), note.c_str());
    if (options.force_action) {
      d->action = *options.force_action;
      d->rule_source = options.force_source;
      d->rule_text.clear();
    }
    int one = ActOnDecision(runner, d.value(), options);
    if (one != 0) rc = one;
  }
  return rc;
}

}  // namespace odyssey::handlers
