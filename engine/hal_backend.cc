#include "engine/hal_backend.h"

#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <string_view>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <spdlog/spdlog.h>

#include "engine/gui_attach.h"
#include "hal/hypervisor.h"
#include "qrexec/host/agent_connection.h"

namespace odyssey::engine {
namespace {

class HalMember : public Member {
 public:
  HalMember(std::string name, std::string tmpl, hal::DomainPtr domain,
            qrexec::AgentConnectionPtr conn, std::atomic<int>* live)
      : name_(std::move(name)), template_(std::move(tmpl)), domain_(std::move(domain)),
        conn_(std::move(conn)), live_(live), domid_(domain_->vchan().domid),
        vchan_{domain_->vchan().domid, domain_->vchan().socket_dir} {
    ++*live_;
  }
  ~HalMember() override { (void)Destroy(); }
  const std::string& name() const override { return name_; }
  const std::string& template_name() const override { return template_; }
  int64_t handle() const override { return domid_; }
  VchanAddress vchan_address() const override { return vchan_; }

  Result<int> Call(CallSpec spec) override {
    qrexec::CallRequest req;
    if (!spec.service.empty())
      req.cmdline = "DEFAULT:QUBESRPC " + spec.service + "+" + spec.service_arg + " " + spec.source;
    else if (!spec.argv.empty())
      req.cmdline = "DEFAULT:" + ShellQuote(spec.argv);
    else
      return Error{"empty call", EINVAL};
    req.stdin_fd = spec.stdin_fd.get();
    req.stdout_fd = spec.stdout_fd.get();
    req.stderr_fd = spec.stderr_fd.get();
    qrexec::AgentConnection* conn = nullptr;
    {
      std::lock_guard lock(mu_);
      if (killed_ || destroyed_ || !domain_ || !conn_) return 128 + SIGKILL;
      if (auto s = domain_->Resume(); !s.ok()) return s.error().Wrap("resuming " + name_);
      conn = conn_.get();
    }
    auto code = conn->Call(req);
    if (killed_) return 128 + SIGKILL;
    if (!code.ok()) return code.error().Wrap("calling " + name_);
    return *code;
  }

  void Kill() override {
    killed_ = true;
    std::lock_guard lock(mu_);
    if (conn_) conn_->Close();
    if (domain_) (void)domain_->Destroy();
  }

  Status Destroy() override {
    std::lock_guard lock(mu_);
    if (destroyed_) return OkStatus();
    if (conn_) conn_->Close();
    Status s = OkStatus();
    if (domain_) s = domain_->Destroy();
    destroyed_ = true;
    --*live_;
    return s;
  }

  MemberUsage Usage() override {
    MemberUsage u;
    std::lock_guard lock(mu_);
    if (!domain_ || destroyed_) return u;
    auto s = domain_->Stats();
    if (s.ok()) {
      u.memory_bytes = s->memory_bytes;
      u.memory_pss_bytes = s->memory_pss_bytes ? s->memory_pss_bytes : s->memory_bytes;
      u.processes = s->pids;
    }
    return u;
  }

 private:
  std::string name_, template_;
  std::mutex mu_;
  hal::DomainPtr domain_;
  qrexec::AgentConnectionPtr conn_;
  std::atomic<int>* live_;
  int64_t domid_;
  VchanAddress vchan_;
  std::atomic<bool> killed_{false};
  bool destroyed_ = false;
};

class HalBackend : public Backend {
 public:
  HalBackend(hal::HypervisorPtr hv, Config config, std::string agent, std::string services)
      : hv_(std::move(hv)), config_(std::move(config)), agent_(std::move(agent)),
        services_(std::move(services)) {}
  std::string name() const override { return "hal " + hv_->uri(); }

  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) override {
    auto snap = Snapshot(tmpl);
    if (!snap.ok()) return snap.error();
    hal::DomainSpec spec;
    spec.name = name;
    spec.template_name = tmpl.name;
    spec.memory_limit_bytes = config_.memory_limit_bytes;
    auto dom = hv_->CloneFromSnapshot(*snap, spec);
    if (!dom.ok()) return dom.error().Wrap("cloning " + tmpl.name);
    hal::DomainPtr domain = std::move(*dom);
    // HELLO needs a running agent: thaw, connect, freeze again.
    auto fail = [&](const Error& e) -> Result<MemberPtr> {
      (void)domain->Destroy();
      return e.Wrap("preparing " + name);
    };
    if (auto s = domain->Resume(); !s.ok()) return fail(s.error());
    qrexec::AgentConnectionOptions o;
    hal::VchanEndpoint ep = domain->vchan();
    o.domid = ep.domid;
    o.domain_name = name;
    o.socket_dir = ep.socket_dir;
    auto conn = qrexec::AgentConnection::Connect(o);
    if (!conn.ok()) return fail(conn.error());
    if (auto s = domain->Pause(); !s.ok()) {
      (*conn)->Close();
      return fail(s.error());
    }
    return MemberPtr(new HalMember(name, tmpl.name, std::move(domain), std::move(*conn), &live_));
  }

  Result<int> ReapLeftovers() override {
    auto l = hv_->ListLeftovers();
    if (!l.ok()) return l.error();
    int n = 0;
    for (auto& x : *l) {
      n += x.kind == "domain";
      if (auto s = hv_->DestroyLeftover(x); !s.ok())
        spdlog::warn("destroying leftover {} {}: {}", x.kind, x.id, s.error().message);
    }
    return n;
  }

  int CountLive() override { return live_.load(); }

 private:
  Result<hal::SnapshotPtr> Snapshot(const TemplateInfo& tmpl) {
    std::lock_guard lock(mu_);
    auto it = snaps_.find(tmpl.name);
    if (it != snaps_.end()) return it->second;
    hal::TemplateSpec spec;
    spec.name = tmpl.name;
    spec.kind = tmpl.kind;
    spec.root_dir = tmpl.root_dir;
    spec.agent_path = agent_;
    spec.services_dir = services_;
    spec.gui_agent_path = GuiAgentPath();  // GUI disposables run their program under it
    auto s = hv_->PrepareSnapshot(spec);
    if (!s.ok()) return s.error().Wrap("preparing template " + tmpl.name);
    snaps_[tmpl.name] = *s;
    return *s;
  }

  hal::HypervisorPtr hv_;
  Config config_;
  std::string agent_, services_;
  std::mutex mu_;
  std::map<std::string, hal::SnapshotPtr> snaps_;
  std::atomic<int> live_{0};
};

}  // namespace

std::string ShellQuote(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty();
    for (char c : a)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string_view("@%+=:,./-_").find(c) != std::string_view::npos))
        plain = false;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) {
      if (c == '\'') out += "'\\''";
      else out += c;
    }
    out += '\'';
  }
  return out;
}

std::string UnsearchableAncestor(const std::string& state_dir, const std::string& private_dir) {
  auto norm = [](const std::string& s) {
    std::string n = std::filesystem::path(s).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
  };
  std::string p = norm(state_dir);
  const std::string priv = private_dir.empty() ? "" : norm(private_dir);
  for (;;) {
    size_t slash = p.rfind('/');
    if (slash == std::string::npos) return "";
    p = slash == 0 ? "/" : p.substr(0, slash);
    if (!priv.empty() && p == priv) return p;  // made 0700 later (the socket's folder)
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) return p;
    if (p == "/") return "";
  }
}

std::string DefaultAgentPath() {
  if (const char* e = std::getenv("ODYSSEY_QREXEC_AGENT"); e && *e) return e;
#ifdef ODYSSEY_QREXEC_AGENT_PATH
  return ODYSSEY_QREXEC_AGENT_PATH;
#else
  return "/usr/lib/odyssey/qrexec-agent";
#endif
}

Result<BackendPtr> MakeHalBackend(const Config& config, const std::string& uri) {
  std::string agent = DefaultAgentPath();
  if (::access(agent.c_str(), X_OK) != 0)
    return Error::Errno("access", agent).Wrap("the HAL backend needs qrexec-agent");
  // The first existing directory of the service path is bound into the domains.
  std::string services;
  for (const auto& d : config.service_path) {
    struct stat st {};
    if (::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      services = d;
      break;
    }
  }
  // The domains' mapped root must traverse the state dir to reach the HAL's subfolders.
  struct stat st {};
  if (::stat(config.state_dir.c_str(), &st) == 0 && (st.st_mode & 0111) != 0111)
    (void)::chmod(config.state_dir.c_str(), (st.st_mode & 07777) | 0111);
  auto hv = hal::Hypervisor::Open(uri, config.state_dir + "/hal");
  if (!hv.ok()) return hv.error().Wrap("opening " + uri);
  spdlog::info("HAL backend {}: agent {}, services {}", uri, agent, services.empty() ? "(none)" : services);
  return BackendPtr(new HalBackend(std::move(*hv), config, agent, services));
}

}  // namespace odyssey::engine
