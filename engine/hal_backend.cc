#include "engine/hal_backend.h"

#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <thread>
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

// A member's agent that has not said HELLO by then is given up (its domain destroyed). It
// answers within a second on an idle host; TCG under heavy load has taken tens of seconds.
constexpr std::chrono::seconds kHelloTimeout{120};

// Holds a HalKind's serialising mutex, if it has one.
class SerialLock {
 public:
  explicit SerialLock(std::mutex* mu) {
    if (mu) lock_ = std::unique_lock(*mu);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

Status DestroyDomain(hal::Domain& domain, std::mutex* serial) {
  SerialLock lock(serial);
  return domain.Destroy();
}

class HalMember : public Member {
 public:
  HalMember(std::string name, std::string tmpl, hal::DomainPtr domain,
            qrexec::AgentConnectionPtr conn, std::atomic<int>* live, std::mutex* serial)
      : name_(std::move(name)), template_(std::move(tmpl)), domain_(std::move(domain)),
        conn_(std::move(conn)), live_(live), serial_(serial), domid_(domain_->vchan().domid),
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
      auto t0 = std::chrono::steady_clock::now();
      if (auto s = domain_->Resume(); !s.ok()) return s.error().Wrap("resuming " + name_);
      if (spec.timings)
        spec.timings->resume_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      conn = conn_.get();
    }
    auto code = conn->Call(req);
    if (killed_) return 128 + SIGKILL;
    if (!code.ok()) {
      // A domain that died mid-call (QEMU or the sandbox killed) shows as a closed channel;
      // say so plainly.
      hal::DomainState st = domain_->state();
      if (st == hal::DomainState::kCrashed || st == hal::DomainState::kShutOff)
        return code.error().Wrap(name_ + " died during the call (domain " + hal::ToString(st) + ")");
      return code.error().Wrap("calling " + name_);
    }
    return *code;
  }

  void Kill() override {
    killed_ = true;
    std::lock_guard lock(mu_);
    if (conn_) conn_->Close();
    if (domain_ && !destroyed_) (void)DestroyDomain(*domain_, serial_);
  }

  Status Destroy() override {
    std::lock_guard lock(mu_);
    if (destroyed_) return OkStatus();
    if (conn_) conn_->Close();
    Status s = OkStatus();
    if (domain_) s = DestroyDomain(*domain_, serial_);
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
  std::mutex* serial_;
  int64_t domid_;
  VchanAddress vchan_;
  std::atomic<bool> killed_{false};
  bool destroyed_ = false;
};

// AgentConnection::Connect waits for HELLO without a deadline of its own; a domain whose
// agent does not say it within kHelloTimeout is destroyed, which ends the wait.
Result<qrexec::AgentConnectionPtr> ConnectWithDeadline(const qrexec::AgentConnectionOptions& o,
                                                       hal::Domain& domain, std::mutex* serial) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, expired = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kHelloTimeout, [&] { return done; })) {
      expired = true;
      (void)DestroyDomain(domain, serial);
    }
  });
  auto conn = qrexec::AgentConnection::Connect(o);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  if (expired && !conn.ok())
    return Error{"the agent of " + o.domain_name + " did not say HELLO within " +
                     std::to_string(kHelloTimeout.count()) + " s", ETIMEDOUT};
  return conn;
}

class HalBackend : public Backend {
 public:
  HalBackend(std::unique_ptr<HalKind> kind, uint64_t memory_limit_bytes)
      : kind_(std::move(kind)), memory_limit_bytes_(memory_limit_bytes) {}
  std::string name() const override { return kind_->name(); }

  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) override {
    auto snap = Snapshot(tmpl);
    if (!snap.ok()) return snap.error();
    auto hv = kind_->Hypervisor(false);
    if (!hv.ok()) return hv.error();
    std::mutex* serial = kind_->serial();
    hal::DomainSpec spec;
    spec.name = name;
    spec.template_name = tmpl.name;
    spec.memory_limit_bytes = memory_limit_bytes_;
    Result<hal::DomainPtr> dom = [&] {
      SerialLock lock(serial);
      return (*hv)->CloneFromSnapshot(*snap, spec);
    }();
    if (!dom.ok()) {
      Forget(tmpl.name);  // the next prepare opens (and verifies) the snapshot again
      return dom.error().Wrap("cloning " + tmpl.name);
    }
    hal::DomainPtr domain = std::move(*dom);
    auto fail = [&](const Error& e) -> Result<MemberPtr> {
      (void)DestroyDomain(*domain, serial);
      return e.Wrap("preparing " + name);
    };
    // HELLO needs a running agent: resume, connect, personalize, pause again.
    if (auto s = domain->Resume(); !s.ok()) return fail(s.error());
    qrexec::AgentConnectionOptions o;
    hal::VchanEndpoint ep = domain->vchan();
    o.domid = ep.domid;
    o.domain_name = name;
    o.socket_dir = ep.socket_dir;
    kind_->Tune(&o);
    auto conn = ConnectWithDeadline(o, *domain, serial);
    if (!conn.ok()) return fail(conn.error());
    if (auto s = kind_->Personalize(**conn, name); !s.ok()) {
      (*conn)->Close();
      return fail(s.error());
    }
    if (auto s = domain->Pause(); !s.ok()) {
      (*conn)->Close();
      return fail(s.error());
    }
    return MemberPtr(new HalMember(name, tmpl.name, std::move(domain), std::move(*conn), &live_, serial));
  }

  Result<int> ReapLeftovers() override {
    auto hv = kind_->Hypervisor(true);
    if (!hv.ok()) return hv.error();
    if (!*hv) return 0;
    SerialLock lock(kind_->serial());
    auto l = (*hv)->ListLeftovers();
    if (!l.ok()) return l.error();
    int n = 0;
    for (auto& x : *l) {
      n += x.kind == "domain";
      if (auto s = (*hv)->DestroyLeftover(x); !s.ok())
        spdlog::warn("destroying leftover {} {}: {}", x.kind, x.id, s.error().message);
    }
    return n;
  }

  int CountLive() override { return live_.load(); }

  Result<TemplateFacts> CheckTemplate(const TemplateInfo& tmpl, bool rebuild) override {
    Result<TemplateFacts> facts = kind_->Check(tmpl, rebuild);  // takes serial() itself if need be
    // A template added again may have another root or image: make its snapshot afresh.
    if (facts.ok()) Forget(tmpl.name);
    return facts;
  }

 private:
  Result<hal::SnapshotPtr> Snapshot(const TemplateInfo& tmpl) {
    std::lock_guard lock(snap_mu_);
    auto it = snaps_.find(tmpl.name);
    if (it != snaps_.end() && it->second.first == tmpl.root_dir) return it->second.second;
    auto hv = kind_->Hypervisor(false);
    if (!hv.ok()) return hv.error();
    Result<hal::SnapshotPtr> s = [&] {
      SerialLock serial(kind_->serial());
      return kind_->Snapshot(**hv, tmpl);
    }();
    if (!s.ok()) return s.error().Wrap("preparing template " + tmpl.name);
    snaps_[tmpl.name] = {tmpl.root_dir, *s};
    return *s;
  }

  void Forget(const std::string& tmpl) {
    std::lock_guard lock(snap_mu_);
    snaps_.erase(tmpl);
  }

  std::unique_ptr<HalKind> kind_;
  uint64_t memory_limit_bytes_;
  std::mutex snap_mu_;
  std::map<std::string, std::pair<std::string, hal::SnapshotPtr>> snaps_;  // name -> (root, snap)
  std::atomic<int> live_{0};
};

// Native templates on hal/native (or another HAL URI): a root tree, the qrexec-agent and the
// services bound in, the snapshot a paused zygote.
class NativeKind : public HalKind {
 public:
  NativeKind(hal::HypervisorPtr hv, std::string agent, std::string services)
      : hv_(std::move(hv)), agent_(std::move(agent)), services_(std::move(services)) {}
  std::string name() const override { return "hal " + hv_->uri(); }
  Result<hal::Hypervisor*> Hypervisor(bool) override { return hv_.get(); }

  Result<hal::SnapshotPtr> Snapshot(hal::Hypervisor& hv, const TemplateInfo& tmpl) override {
    hal::TemplateSpec spec;
    spec.name = tmpl.name;
    spec.kind = tmpl.kind;
    spec.root_dir = tmpl.root_dir;
    spec.agent_path = agent_;
    spec.services_dir = services_;
    spec.gui_agent_path = GuiAgentPath();  // GUI disposables run their program under it
    return hv.PrepareSnapshot(spec);
  }

  Result<TemplateFacts> Check(const TemplateInfo& tmpl, bool) override {
    if (tmpl.kind == "native") return TemplateFacts{};
    return Error{"template kind '" + tmpl.kind + "' is not supported by the " + name() + " backend",
                 EINVAL};
  }

 private:
  hal::HypervisorPtr hv_;
  std::string agent_, services_;
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
  // Every existing folder of the service path is shown in the domains, in lookup order.
  std::string services;
  for (const auto& d : config.service_path) {
    struct stat st {};
    if (::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) services += (services.empty() ? "" : ":") + d;
  }
  // The domains' mapped root must traverse the state dir to reach the HAL's subfolders.
  struct stat st {};
  if (::stat(config.state_dir.c_str(), &st) == 0 && (st.st_mode & 0111) != 0111)
    (void)::chmod(config.state_dir.c_str(), (st.st_mode & 07777) | 0111);
  auto hv = hal::Hypervisor::Open(uri, config.state_dir + "/hal");
  if (!hv.ok()) return hv.error().Wrap("opening " + uri);
  spdlog::info("HAL backend {}: agent {}, services {}", uri, agent, services.empty() ? "(none)" : services);
  return MakeHalBackend(std::make_unique<NativeKind>(std::move(*hv), agent, services),
                        config.memory_limit_bytes);
}

BackendPtr MakeHalBackend(std::unique_ptr<HalKind> kind, uint64_t memory_limit_bytes) {
  return BackendPtr(new HalBackend(std::move(kind), memory_limit_bytes));
}

}  // namespace odyssey::engine
