// The odyssey CLI's commands that open, route, convert, integrate or demo through handlers/
// (libmagic, the converters, the desktop integration): linked into odyssey-full only, which
// the small `odyssey` binary execs for them (engine/odyssey_main.cc), so `odyssey run` never
// loads those libraries.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "engine/cli.h"
#include "engine/cli_util.h"
#include "engine/config.h"
#include "engine/engine_runner.h"
#include "handlers/commands.h"
#include "handlers/integrate.h"
#include "handlers/mime.h"
#include "handlers/open_in_vm.h"

namespace odyssey::engine {

using namespace cli_detail;

int CmdOpen(const CliContext& ctx, const OpenArgs& args) {
  EngineRunner runner(ctx.connect);
  handlers::ActOptions options;
  options.view_only = args.view_only;
  options.dry_run = args.dry_run;
  options.prog = "odyssey open";
  if (!args.vm.empty()) {
    if (!args.template_name.empty()) return Fail("odyssey open: --vm and --dispvm exclude each other");
    options.force_action = handlers::Action{handlers::Action::Kind::kVm, args.vm, false};
    options.force_source = "--vm " + args.vm;
  } else if (!args.template_name.empty() || args.no_route) {
    options.force_action = handlers::Action{handlers::Action::Kind::kDispVm, args.template_name, false};
    options.force_source = args.no_route ? "--no-route" : "--dispvm " + args.template_name;
  }
  return handlers::OpenSubjects(runner, args.targets, args.rules_dirs, options);
}

int CmdRoute(const RouteArgs& args) {
  handlers::RouteCommand cmd;
  cmd.subjects = args.subjects;
  cmd.dirs = args.rules_dirs;
  cmd.no_defaults = args.no_defaults;
  cmd.short_form = args.short_form;
  cmd.list = args.list;
  return handlers::RunRouteCommand(cmd, "odyssey route");
}

int CmdIntegrate(const IntegrateArgs& args) {
  handlers::IntegrateOptions options = handlers::IntegrateOptions::FromEnvironment();
  options.set_defaults = !args.no_defaults;
  options.open_program = args.open_program;
  if (options.open_program.empty() && !args.remove) {
    // Installed: odyssey-open sits next to odyssey; in a build tree, handlers/ built it.
    std::vector<std::string> candidates{ExecutableDir() + "/odyssey-open"};
#ifdef ODYSSEY_BUILD_OPEN_PATH
    candidates.emplace_back(ODYSSEY_BUILD_OPEN_PATH);
#endif
    for (const auto& c : candidates)
      if (::access(c.c_str(), X_OK) == 0) {
        options.open_program = c;
        break;
      }
    if (options.open_program.empty())
      return Fail("integrate: odyssey-open is not installed next to odyssey (looked at " +
                  candidates.front() + "); give its absolute path with --open-program");
  }
  if (!options.open_program.empty() && options.open_program[0] != '/')
    return Fail("integrate: --open-program must be an absolute path, not '" + options.open_program + "'");
  return handlers::RunIntegrateCommand(options, args.remove, "odyssey integrate");
}

int CmdConvert(const CliContext& ctx, const ConvertArgs& args) {
  handlers::ConvertOptions o;
  o.kind = args.image ? handlers::ConvertOptions::Kind::kImage : handlers::ConvertOptions::Kind::kPdf;
  if (!args.image && !args.force_pdf) {
    // By content, like the routing rules: an image becomes a trusted PNG.
    auto mime = handlers::MimeDetector::Create();
    if (!mime.ok()) return Fail(mime.error().message);
    auto guess = (*mime)->FromFile(args.file);
    if (!guess.ok()) return Fail("cannot convert " + args.file + ": " + guess.error().message);
    if (guess->content_mime.rfind("image/", 0) == 0) o.kind = handlers::ConvertOptions::Kind::kImage;
  }
  o.target = handlers::Target::Disposable(args.template_name);
  o.quarantine_dir = args.quarantine_dir;
  o.keep_original = args.keep_original;
  o.dpi = args.dpi;
  EngineRunner runner(ctx.connect);
  return handlers::RunConvertCommand(runner, args.file, o, "odyssey convert");
}

// ---- demo ----

int CmdDemo(const CliContext& ctx, const std::string& sample, const std::string& url) {
  auto c = Connect(ctx);
  if (!c.ok()) return Fail(c.error().message);
  auto ping = c->Request({{"op", "ping"}});
  if (!ping.ok() || !ping->value("ok", false)) return Fail("odysseyd did not answer ping");
  std::string tmpl = Str(*ping, "default_template");
  std::printf("Odyssey demo: odysseyd %s (pid %s), backend %s, policy %s, default template %s\n\n",
              Str(*ping, "version").c_str(), Str(*ping, "pid").c_str(),
              Str(*ping, "backend").c_str(), Str(*ping, "policy").c_str(), tmpl.c_str());
  auto pool = c->Request({{"op", "pool"}, {"wait", true}});
  uint64_t target = 0;
  if (pool.ok() && pool->value("ok", false)) {
    for (auto& p : (*pool)["pools"]) {
      if (Str(p, "template") != tmpl) continue;
      target = p.value("target", 0u);
      if (target == 0) {
        auto set = c->Request({{"op", "pool"}, {"template", tmpl}, {"size", 2}, {"wait", true}});
        if (set.ok()) pool = set;
      }
    }
    for (auto& p : (*pool)["pools"])
      if (Str(p, "template") == tmpl)
        std::printf("pool '%s': %s ready paused disposables, %s of memory (PSS)\n\n", tmpl.c_str(),
                    Str(p, "ready").c_str(), Mib(p.value("memory_pss_bytes", uint64_t{0})).c_str());
  }
  struct Row {
    std::string what, name, pool, latency, result;
  };
  std::vector<Row> rows;
  auto pool_word = [](const CallOutcome& o) { return o.pool_hit ? std::string("hit") : std::string("miss (cold)"); };
  auto ms = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f ms", v);
    return std::string(b);
  };
  auto indent = [](const std::string& text) {
    std::string out, line;
    std::stringstream ss(text);
    while (std::getline(ss, line)) out += "    | " + line + "\n";
    return out;
  };
  int failures = 0;

  // 1. The document: pdfinfo reads it inside a disposable (the PDF goes in as stdin).
  std::printf("1. document %s\n", sample.c_str());
  UniqueFd pdf(::open(sample.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pdf) {
    Fail("cannot open the sample " + sample + ": " + std::strerror(errno));
    ++failures;
  } else {
    CallArgs a;
    a.argv = {"sh", "-c",
              "cat > /tmp/document.pdf && echo \"disposable $(hostname), uid $(id -u)\" && "
              "(pdfinfo /tmp/document.pdf 2>&1 || file /tmp/document.pdf) | "
              "grep -E '^(Title|Pages|Producer|PDF version)|document' "};
    auto r = CallCaptured(*c, a, pdf.get());
    if (!r.ok()) return Fail(r.error().message);
    std::printf("   pdfinfo inside the disposable:\n%s%s", indent(r->out).c_str(),
                indent(r->err).c_str());
    std::printf("   disposable %s (pool %s), exit %d, %s, %s\n\n", r->outcome.name.c_str(),
                pool_word(r->outcome).c_str(), r->outcome.exit_code,
                r->outcome.destroyed ? "destroyed" : "NOT destroyed",
                ms(r->outcome.latency_ms).c_str());
    if (!r->outcome.error.empty()) std::printf("   error: %s\n", r->outcome.error.c_str());
    rows.push_back({"pdfinfo sample.pdf", r->outcome.name, pool_word(r->outcome),
                    ms(r->outcome.latency_ms), "exit " + std::to_string(r->outcome.exit_code)});
    failures += r->outcome.exit_code != 0;
  }

  // 2. The same document through qubes.OpenInVM, as `odyssey open FILE` does.
  {
    std::printf("2. odyssey open %s  (qubes.OpenInVM, view-only)\n", sample.c_str());
    auto in = Pipe::Make();
    UniqueFd file(::open(sample.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.ok() && file) {
      std::string header = handlers::OpenInVmHeader(sample, /*view_only=*/true);
      std::thread writer([w = std::move(in->write), f = std::move(file), header]() mutable {
        if (!WriteAll(w.get(), header.data(), header.size()).ok()) return;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(f.get(), buf, sizeof buf)) > 0)
          if (!WriteAll(w.get(), buf, static_cast<size_t>(n)).ok()) break;
      });
      CallArgs a;
      a.service = "qubes.OpenInVM";
      auto r = CallCaptured(*c, a, in->read.get());
      in->read.reset();
      writer.join();
      if (!r.ok()) return Fail(r.error().message);
      std::printf("%s%s", indent(r->err).c_str(), indent(r->out).c_str());
      if (!r->outcome.error.empty()) std::printf("   error: %s\n", r->outcome.error.c_str());
      std::printf("   disposable %s (pool %s), exit %d, %s, %s\n\n", r->outcome.name.c_str(),
                  pool_word(r->outcome).c_str(), r->outcome.exit_code,
                  r->outcome.destroyed ? "destroyed" : "NOT destroyed",
                  ms(r->outcome.latency_ms).c_str());
      rows.push_back({"open sample.pdf", r->outcome.name, pool_word(r->outcome),
                      ms(r->outcome.latency_ms), "exit " + std::to_string(r->outcome.exit_code)});
      failures += r->outcome.exit_code != 0;
    }
  }

  // 3. A URL through qubes.OpenURL (no network in a disposable: the service reports it).
  {
    std::printf("3. odyssey open %s  (qubes.OpenURL)\n", url.c_str());
    auto in = Pipe::Make();
    if (in.ok()) {
      std::string line = url + "\n";
      (void)WriteAll(in->write.get(), line.data(), line.size());
      in->write.reset();
      CallArgs a;
      a.service = "qubes.OpenURL";
      auto r = CallCaptured(*c, a, in->read.get());
      if (!r.ok()) return Fail(r.error().message);
      std::printf("%s%s", indent(r->out).c_str(), indent(r->err).c_str());
      if (!r->outcome.error.empty()) std::printf("   error: %s\n", r->outcome.error.c_str());
      std::printf("   disposable %s (pool %s), exit %d, %s, %s\n\n", r->outcome.name.c_str(),
                  pool_word(r->outcome).c_str(), r->outcome.exit_code,
                  r->outcome.destroyed ? "destroyed" : "NOT destroyed",
                  ms(r->outcome.latency_ms).c_str());
      rows.push_back({"open " + url, r->outcome.name, pool_word(r->outcome),
                      ms(r->outcome.latency_ms), "exit " + std::to_string(r->outcome.exit_code)});
      failures += r->outcome.exit_code != 0;
    }
  }

  // 4. Pool hit vs cold: `true` from the pool, then with the pool emptied.
  {
    std::printf("4. `true` from the pool, then cold (pool emptied for one call)\n");
    (void)c->Request({{"op", "pool"}, {"wait", true}});
    CallArgs a;
    a.argv = {"true"};
    UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    auto hot = CallCaptured(*c, a, devnull.get());
    uint64_t restore = target ? target : 2;
    (void)c->Request({{"op", "pool"}, {"template", tmpl}, {"size", 0}, {"wait", true}});
    auto cold = CallCaptured(*c, a, devnull.get());
    (void)c->Request({{"op", "pool"}, {"template", tmpl}, {"size", restore}});
    for (auto* r : {&hot, &cold}) {
      if (!r->ok()) continue;
      auto& o = (*r)->outcome;
      rows.push_back({"true", o.name, pool_word(o), ms(o.latency_ms),
                      "exit " + std::to_string(o.exit_code)});
      failures += o.exit_code != 0;
    }
    std::printf("\n");
  }

  std::printf("Summary (latency = request sent to exit code received, through odysseyd):\n");
  std::vector<std::vector<std::string>> table = {{"ACTION", "DISPOSABLE", "POOL", "LATENCY", "RESULT"}};
  for (auto& r : rows) table.push_back({r.what, r.name, r.pool, r.latency, r.result});
  PrintTable(table);
  auto ls = c->Request({{"op", "ls"}});
  int running = 0;
  if (ls.ok())
    for (auto& d : (*ls)["domains"]) running += Str(d, "state") == "running";
  std::printf("\nrunning disposables left after the demo: %d (every call's disposable was "
              "destroyed; the pool keeps paused spares)\n", running);
  return failures == 0 && running == 0 ? 0 : 1;
}

}  // namespace odyssey::engine
