#include "engine/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <sstream>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "engine/engine_runner.h"
#include "handlers/commands.h"
#include "handlers/integrate.h"
#include "handlers/mime.h"
#include "handlers/open_in_vm.h"
#include "engine/backend_factory.h"
#include "engine/config.h"

namespace odyssey::engine {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "odyssey: %s\n", msg.c_str());
  return 1;
}

Result<AdminClient> Connect(const CliContext& ctx) { return ConnectOrStart(ctx.connect); }

// Sends a single-reply request; prints the error and returns nullopt on failure.
std::optional<json> Ask(const CliContext& ctx, const json& req) {
  auto c = Connect(ctx);
  if (!c.ok()) {
    Fail(c.error().message);
    return std::nullopt;
  }
  auto r = c->Request(req);
  if (!r.ok()) {
    Fail(r.error().message);
    return std::nullopt;
  }
  if (!r->value("ok", false)) {
    Fail(r->value("error", std::string("odysseyd refused the request")));
    return std::nullopt;
  }
  return *r;
}

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Reads fd to EOF into *out (capped) on a thread.
std::thread Drain(UniqueFd fd, std::string* out) {
  return std::thread([fd = std::move(fd), out]() mutable {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (out->size() < (256u << 20)) out->append(buf, static_cast<size_t>(n));
    }
  });
}

struct Pipe {
  UniqueFd read, write;
  static Result<Pipe> Make() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Error::Errno("pipe2");
    return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  }
};

// A call whose stdout/stderr are captured; stdin_fd is sent as is.
struct Captured {
  CallOutcome outcome;
  std::string out, err;
};
Result<Captured> CallCaptured(AdminClient& client, CallArgs args, int stdin_fd) {
  auto out = Pipe::Make();
  auto err = Pipe::Make();
  if (!out.ok()) return out.error();
  if (!err.ok()) return err.error();
  Captured c;
  std::thread t1 = Drain(std::move(out->read), &c.out);
  std::thread t2 = Drain(std::move(err->read), &c.err);
  args.stdin_fd = stdin_fd;
  args.stdout_fd = out->write.get();
  args.stderr_fd = err->write.get();
  // Our write ends must close once sent, or the drains never see EOF.
  UniqueFd w1 = std::move(out->write), w2 = std::move(err->write);
  c.outcome = CallInDisposable(client, args);
  w1.reset();
  w2.reset();
  t1.join();
  t2.join();
  return c;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string Str(const json& j, const char* key) {
  if (!j.contains(key)) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

}  // namespace

CallOutcome CallInDisposable(AdminClient& client, const CallArgs& args) {
  CallOutcome o;
  json req = {{"op", args.argv.empty() ? "call" : "run"}};
  if (!args.argv.empty()) req["argv"] = args.argv;
  else {
    req["service"] = args.service;
    req["arg"] = args.service_arg;
  }
  if (!args.template_name.empty()) req["template"] = args.template_name;
  if (!args.vm.empty()) req["vm"] = args.vm;
  if (args.timeout_s >= 0) req["timeout_s"] = args.timeout_s;
  if (const char* display = std::getenv("DISPLAY"); args.gui && display && *display) {
    const char* xauth = std::getenv("XAUTHORITY");
    req["gui"] = {{"display", display}, {"xauthority", xauth ? xauth : ""}};
  }
  auto t0 = Clock::now();
  auto s = client.Send(req, {args.stdin_fd, args.stdout_fd, args.stderr_fd});
  if (!s.ok()) {
    o.error = s.error().message;
    return o;
  }
  for (;;) {
    auto r = client.Receive();
    if (!r.ok()) {
      o.error = r.error().message;
      return o;
    }
    std::string event = r->value("event", "");
    if (event == "started") {
      o.name = r->value("name", "");
      o.pool_hit = r->value("pool_hit", false);
      continue;
    }
    if (!r->value("ok", false) && event.empty()) {
      o.error = r->value("error", std::string("odysseyd refused the call"));
      return o;
    }
    if (event == "exit") {
      o.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      o.exit_code = r->value("code", 125);
      o.destroyed = r->value("destroyed", false);
      if (o.name.empty()) o.name = r->value("name", "");
      if (!r->value("ok", false)) o.error = r->value("error", std::string());
      std::string outcome = r->value("outcome", "");
      if (o.error.empty() && outcome == "timeout")
        o.error = "the call timed out; its disposable " + o.name + " was destroyed";
      return o;
    }
  }
}

int CmdRun(const CliContext& ctx, const CallArgs& args) {
  auto c = Connect(ctx);
  if (!c.ok()) return Fail(c.error().message), 125;
  CallOutcome o = CallInDisposable(*c, args);
  if (!o.error.empty()) Fail(o.error);
  return o.exit_code;
}

int CmdCall(const CliContext& ctx, const std::string& service_and_arg,
            const std::string& template_name, const std::string& vm) {
  if (!vm.empty() && !template_name.empty())
    return Fail("odyssey call: --vm and --dispvm exclude each other"), 2;
  CallArgs args;
  args.vm = vm;
  size_t plus = service_and_arg.find('+');
  args.service = service_and_arg.substr(0, plus);
  if (plus != std::string::npos) args.service_arg = service_and_arg.substr(plus + 1);
  if (args.service.empty()) return Fail("odyssey call: no service name (usage: odyssey call "
                                        "[--dispvm[=T]] SERVICE[+ARG])"), 2;
  args.template_name = template_name;
  auto c = Connect(ctx);
  if (!c.ok()) return Fail(c.error().message), 125;
  CallOutcome o = CallInDisposable(*c, args);
  if (!o.error.empty()) {
    Fail(o.error);
    // qrexec's convention: 126 for a refused call.
    if (o.name.empty()) return o.error.rfind("call denied by policy", 0) == 0 ? 126 : 125;
  }
  return o.exit_code;
}

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

int CmdLs(const CliContext& ctx) {
  auto r = Ask(ctx, {{"op", "ls"}});
  if (!r) return 1;
  if (ctx.json) return std::printf("%s\n", (*r)["domains"].dump(2).c_str()), 0;
  std::vector<std::vector<std::string>> rows = {{"NAME", "TEMPLATE", "STATE", "MEMORY", "COMMAND"}};
  for (auto& d : (*r)["domains"])
    rows.push_back({Str(d, "name"), Str(d, "template"), Str(d, "state"),
                    d.contains("memory_pss_bytes") ? Mib(d["memory_pss_bytes"].get<uint64_t>()) : "-",
                    Str(d, "what")});
  PrintTable(rows);
  return 0;
}

int CmdVm(const CliContext& ctx, const std::string& action, const std::string& name,
          const std::string& template_name) {
  if (action == "start") {
    json req = {{"op", "vm_start"}, {"name", name}};
    if (!template_name.empty()) req["template"] = template_name;
    auto r = Ask(ctx, req);
    if (!r) return 1;
    std::printf("domain %s running (template %s, started in %.0f ms); it stays until `odyssey vm "
                "stop %s`\n", name.c_str(), Str(*r, "template").c_str(), r->value("start_ms", 0.0),
                name.c_str());
    return 0;
  }
  if (action == "stop") return Ask(ctx, {{"op", "vm_stop"}, {"name", name}}) ? 0 : 1;
  return Fail("unknown vm action " + action + " (start or stop)");
}

int CmdKill(const CliContext& ctx, const std::string& name) {
  return Ask(ctx, {{"op", "kill"}, {"name", name}}) ? 0 : 1;
}

int CmdPool(const CliContext& ctx, const std::string& template_name, int size, bool wait) {
  json req = {{"op", "pool"}, {"wait", wait}};
  if (!template_name.empty()) req["template"] = template_name;
  if (size >= 0) req["size"] = size;
  auto r = Ask(ctx, req);
  if (!r) return 1;
  if (ctx.json) return std::printf("%s\n", (*r)["pools"].dump(2).c_str()), 0;
  std::vector<std::vector<std::string>> rows = {
      {"TEMPLATE", "TARGET", "READY", "PREPARING", "HITS", "MISSES", "MEMORY(PSS)", "LAST ERROR"}};
  for (auto& p : (*r)["pools"])
    rows.push_back({Str(p, "template"), Str(p, "target"), Str(p, "ready"), Str(p, "preparing"),
                    Str(p, "hits"), Str(p, "misses"), Mib(p["memory_pss_bytes"].get<uint64_t>()),
                    Str(p, "last_error")});
  PrintTable(rows);
  return 0;
}

int CmdTemplate(const CliContext& ctx, const std::string& action, const std::string& name,
                const std::string& root, int pool_size) {
  if (action == "ls") {
    auto r = Ask(ctx, {{"op", "template_ls"}});
    if (!r) return 1;
    if (ctx.json) return std::printf("%s\n", (*r)["templates"].dump(2).c_str()), 0;
    std::vector<std::vector<std::string>> rows = {{"NAME", "KIND", "ACCEL", "ROOT", "POOL", "DEFAULT"}};
    for (auto& t : (*r)["templates"]) {
      std::string accel = t.value("accel", std::string());
      rows.push_back({Str(t, "name"), Str(t, "kind"), accel.empty() ? "-" : accel, Str(t, "root_dir"),
                      Str(t, "pool_size"), t.value("default", false) ? "yes" : ""});
    }
    PrintTable(rows);
    return 0;
  }
  if (action == "add") {
    std::string abs = root.empty() ? "" : std::filesystem::absolute(root).lexically_normal().string();
    json req = {{"op", "template_add"}, {"name", name}, {"root_dir", abs}};
    if (pool_size >= 0) req["pool_size"] = pool_size;
    return Ask(ctx, req) ? 0 : 1;
  }
  if (action == "rm") return Ask(ctx, {{"op", "template_rm"}, {"name", name}}) ? 0 : 1;
  return Fail("unknown template action " + action);
}

// `template build NAME --kind vm`: the guest image (guest/build-image.sh, cached), then the
// daemon verifies it, probes the accelerator and prepares the snapshot and the pool.
int CmdTemplateBuild(const CliContext& ctx, const std::string& name, const std::string& kind,
                     bool rebuild, int pool_size) {
  if (kind != "vm")
    return Fail("template build makes VM templates (--kind vm); add a directory tree with "
                "`odyssey template add " + name + " --root DIR`");
  auto quote = [](const std::string& a) {  // for sh -c: '…' with every ' closed and reopened
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  auto step = [](int n, const std::string& what) { std::fprintf(stderr, "odyssey: [%d/4] %s\n", n, what.c_str()); };
  const std::string agent = DefaultGuestAgentPath(), builder = DefaultImageBuilderPath();
  step(1, "guest image (builder " + builder + ", agent " + agent + ")");
  std::string cmd = "bash " + quote(builder) + " --agent " + quote(agent) +
                    " --services " + quote(DefaultGuestServicesDir()) + " --name " + quote(name) +
                    (rebuild ? " --rebuild" : "");
  FILE* p = ::popen(cmd.c_str(), "r");  // the builder's progress goes straight to stderr
  if (!p) return Fail("cannot run " + builder);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  if (int rc = ::pclose(p); rc != 0) return Fail("building the guest image failed (status " + std::to_string(rc) + ")");
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  std::string image = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  if (image.empty() || image[0] != '/') return Fail("the image builder named no image directory");
  step(2, "checking " + image + " and probing the accelerator (KVM, else TCG)");
  auto ls = Ask(ctx, {{"op", "template_ls"}});
  if (!ls) return 1;
  for (auto& t : (*ls)["templates"])
    if (Str(t, "name") == name && !Ask(ctx, {{"op", "template_rm"}, {"name", name}})) return 1;
  json add = {{"op", "template_add"}, {"name", name}, {"kind", "vm"}, {"root_dir", image}, {"rebuild", rebuild}};
  if (pool_size >= 0) add["pool_size"] = pool_size;
  if (!Ask(ctx, add)) return 1;
  step(3, "snapshot (boot to the agent's HELLO, save) and pool of restored paused clones");
  auto pools = Ask(ctx, {{"op", "pool"}, {"template", name}, {"wait", true}});
  if (!pools) return 1;
  for (auto& pl : (*pools)["pools"])
    if (pl.value("ready", 0) == 0 && !pl.value("last_error", std::string()).empty())
      return Fail("template " + name + ": " + pl.value("last_error", std::string()));
  auto after = Ask(ctx, {{"op", "template_ls"}});
  if (!after) return 1;
  for (auto& t : (*after)["templates"])
    if (Str(t, "name") == name)
      step(4, "template " + name + " ready: kind vm, accelerator " + t.value("accel", std::string()) +
                  ", image " + image);
  return 0;
}

int CmdPolicyCheck(const CliContext& ctx, const std::string& source, const std::string& target,
                   const std::string& service, const std::string& arg) {
  auto r = Ask(ctx, {{"op", "policy_check"}, {"source", source}, {"target", target},
                     {"service", service}, {"argument", arg}});
  if (!r) return 2;
  if (ctx.json) std::printf("%s\n", r->dump(2).c_str());
  else
    std::printf("%s: %s%s from %s to %s (rule %s)\n", Str(*r, "action").c_str(), service.c_str(),
                arg.empty() ? "" : ("+" + arg).c_str(), source.c_str(), target.c_str(),
                Str(*r, "rule").c_str());
  return r->value("allow", false) ? 0 : 1;
}

int CmdSimple(const CliContext& ctx, const std::string& op) {
  json req = {{"op", op}};
  auto r = Ask(ctx, req);
  if (!r) return 1;
  if (ctx.json || op == "stats" || op == "calls") {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  if (op == "ping")
    std::printf("odysseyd %s (pid %s) on backend %s, policy %s, default template %s\n",
                Str(*r, "version").c_str(), Str(*r, "pid").c_str(), Str(*r, "backend").c_str(),
                Str(*r, "policy").c_str(), Str(*r, "default_template").c_str());
  else if (op == "shutdown")
    std::printf("odysseyd is shutting down\n");
  return 0;
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
