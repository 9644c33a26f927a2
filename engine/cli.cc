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
#include "engine/cli_util.h"
#include "engine/config.h"

namespace odyssey::engine {
namespace cli_detail {

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

}  // namespace cli_detail

using namespace cli_detail;

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

}  // namespace odyssey::engine
